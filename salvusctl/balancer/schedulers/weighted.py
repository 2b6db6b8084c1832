"""Smooth weighted round robin (nginx's algorithm).

Each pick adds every host's weight to its running score, takes the highest, and subtracts the total
from the winner.  Weights 5:1:1 give a,a,b,a,c,a,a rather than a burst of five a's, and the weight
used is the host's current one (agent percent and slow-start ramp included).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import IScheduler

__all__ = ["SmoothWeighted"]


@implementer(IScheduler)
class SmoothWeighted:
    """Smooth weighted round robin over the hosts' current weights."""

    name = "weighted"

    def __init__(self, clock: Any = None, rng: Any = None):
        self._score: dict[int, float] = {}

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        score = self._score
        total = 0.0
        best = None
        best_score = 0.0
        for h in hosts:
            w = h.currentWeight()
            total += w
            s = score.get(id(h), 0.0) + w
            score[id(h)] = s
            if best is None or s > best_score:
                best, best_score = h, s
        score[id(best)] = best_score - total
        return best

    def hostsChanged(self, hosts):
        self._score = {}

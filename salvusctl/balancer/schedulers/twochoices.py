"""Random with two choices: pick two hosts at random, keep the less loaded.

The power of two choices gives nearly the balance of least-connections without scanning every host
and without the herd effect when many balancers share one view of the pool.
"""

from __future__ import annotations

import random
from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import IScheduler

__all__ = ["TwoChoices"]


@implementer(IScheduler)
class TwoChoices:
    """Two random candidates; the one with fewer open connections per unit of weight wins."""

    name = "random2"

    def __init__(self, clock: Any = None, rng: random.Random | None = None):
        self._rng = rng or random.Random()

    def choose(self, hosts, client_address):
        n = len(hosts)
        if n == 0:
            return None
        if n == 1:
            return hosts[0]
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = hosts[i], hosts[j]
        wa, wb = a.currentWeight() or 1e-9, b.currentWeight() or 1e-9
        return a if a.active / wa <= b.active / wb else b

    def hostsChanged(self, hosts):
        pass

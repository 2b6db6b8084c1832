"""Least connections, with ties spread evenly.

Breaking ties by sorting on C{(count, name)} — as the predecessor did — sends nearly all traffic of
a lightly loaded pool to the host whose name sorts first.  Here ties rotate: among the hosts with the
fewest open connections (relative to weight), a moving cursor picks the next one, so equal hosts
share new connections equally.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import IScheduler

__all__ = ["LeastConns"]


@implementer(IScheduler)
class LeastConns:
    """Fewest open connections per unit of weight; ties rotate."""

    name = "leastconns"

    def __init__(self, clock: Any = None, rng: Any = None):
        self._cursor = 0

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        best = None
        ties: list = []
        for h in hosts:
            w = h.currentWeight()
            score = (h.active + 1) / w if w > 0 else float("inf")
            if best is None or score < best:
                best = score
                ties = [h]
            elif score == best:
                ties.append(h)
        n = self._cursor
        self._cursor = n + 1
        return ties[n % len(ties)]

    def hostsChanged(self, hosts):
        pass

"""Least connections, with ties spread evenly.

Breaking ties by sorting on C{(count, name)} — as the predecessor did — sends nearly all traffic of
a lightly loaded pool to the host whose name sorts first.  Here ties rotate: among the hosts with the
fewest open connections (relative to weight), a moving cursor picks the next one, so equal hosts
share new connections equally.  L{lowest} and L{Turns} are shared with the other schedulers that
pick by a score (least load) or in turn (round robin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import IScheduler

__all__ = ["LeastConns", "Turns", "lowest"]


def lowest(hosts: Sequence[Any], score: Callable[[Any], float | None]) -> list[Any]:
    """The hosts with the lowest C{score(host)}, in their order; a host scored None is passed over."""
    best = None
    ties: list = []
    for h in hosts:
        value = score(h)
        if value is None:
            continue
        if best is None or value < best:
            best, ties = value, [h]
        elif value == best:
            ties.append(h)
    return ties


class Turns:
    """A moving cursor: each call takes the next of the items it is given, so equal candidates
    share new connections equally."""

    def __init__(self) -> None:
        self.count = 0

    def next(self, items: Sequence[Any]) -> Any:
        """The next item in turn, or None when there is none."""
        if not items:
            return None
        n = self.count
        self.count = n + 1
        return items[n % len(items)]


def connsPerWeight(host: Any) -> float:
    """Open connections, one more counted, per unit of the host's current weight."""
    w = host.currentWeight()
    return (host.active + 1) / w if w > 0 else float("inf")


@implementer(IScheduler)
class LeastConns:
    """Fewest open connections per unit of weight; ties rotate."""

    name = "leastconns"

    def __init__(self, clock: Any = None, rng: Any = None):
        self._turns = Turns()

    def choose(self, hosts, client_address):
        return self._turns.next(lowest(hosts, connsPerWeight))

    def hostsChanged(self, hosts):
        pass

"""Least load: the host an L{ILoadSource} reports least loaded (the monitor plugs psutil data in).

Hosts with no figure yet are tried only when no host has one; ties rotate like L{LeastConns}.  The
package also holds L{StaticLoadSource}, a fixed table, for configs and tests.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.balancer.schedulers.leastconns import LeastConns
from salvusctl.interfaces import ILoadSource, IScheduler

__all__ = ["LeastLoad", "StaticLoadSource"]


@implementer(ILoadSource)
class StaticLoadSource:
    """Loads from a table keyed by host name (or C{address:port}); unknown hosts give None."""

    def __init__(self, loads: dict[str, float] | None = None):
        self.loads = dict(loads or {})

    def loadOf(self, host):
        load = self.loads.get(host.name)
        if load is None:
            load = self.loads.get(f"{host.address}:{host.port}")
        return load


@implementer(IScheduler)
class LeastLoad:
    """Lowest C{source.loadOf(host)} (divided by weight); falls back to least connections."""

    name = "leastload"

    def __init__(self, clock: Any = None, rng: Any = None, source: ILoadSource | None = None):
        if source is None:
            raise TypeError("leastload needs a load source (source=...)")
        self.source = source
        self._cursor = 0
        self._fallback = LeastConns()

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        best = None
        ties: list = []
        for h in hosts:
            load = self.source.loadOf(h)
            if load is None:
                continue
            w = h.currentWeight() or 1e-9
            score = float(load) / w
            if best is None or score < best:
                best, ties = score, [h]
            elif score == best:
                ties.append(h)
        if not ties:
            return self._fallback.choose(hosts, client_address)
        n = self._cursor
        self._cursor = n + 1
        return ties[n % len(ties)]

    def hostsChanged(self, hosts):
        pass

"""Least load: the host an L{ILoadSource} reports least loaded (the monitor plugs psutil data in).

Hosts with no figure yet are tried only when no host has one; ties rotate like L{LeastConns}.  The
package also holds L{StaticLoadSource}, a fixed table, for configs and tests.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.balancer.schedulers.leastconns import LeastConns, Turns, lowest
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
        self._turns = Turns()
        self._fallback = LeastConns()

    def _loadPerWeight(self, host: Any) -> float | None:
        load = self.source.loadOf(host)
        return None if load is None else float(load) / (host.currentWeight() or 1e-9)

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        ties = lowest(hosts, self._loadPerWeight)
        if not ties:
            return self._fallback.choose(hosts, client_address)
        return self._turns.next(ties)

    def hostsChanged(self, hosts):
        pass

"""The balancer's least-load scheduler reads instance load from the monitor through this adapter.

A balancer backend is an address and a port; a supervised instance is known by its name, and its
info carries the port it serves.  The adapter matches the two by port (and by address when the
monitor knows which addresses are its own), so the balancer needs no knowledge of deploy names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import ILoadSource

__all__ = ["MonitorLoadSource"]

_LOCAL = frozenset({"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"})


def _addressAndPort(host: Any) -> tuple[str | None, int | None]:
    if isinstance(host, dict):
        return host.get("address"), host.get("port")
    if isinstance(host, tuple | list) and len(host) == 2:
        return host[0], host[1]
    return getattr(host, "address", None), getattr(host, "port", None)


@implementer(ILoadSource)
class MonitorLoadSource:
    """An L{ILoadSource} over a monitor's in-memory latest samples.

    The load is the instance's cpu % (summed over its process tree), lower is better; an instance
    that is not RUNNING or has no sample yet is unknown (None), which the scheduler treats as
    "no information" rather than "idle".

    @param monitor: anything with C{latest()} (an L{IMonitor}).
    @param addresses: the addresses this host's instances listen on; a backend on another address
        is not ours (None).  Loopback and wildcard addresses always match.
    """

    def __init__(self, monitor=None, addresses: Iterable[str] = ()):
        self._monitor = monitor
        self._addresses = frozenset(addresses) | _LOCAL

    def bind(self, monitor, addresses: Iterable[str] = ()) -> None:
        """Attach the monitor later: a C{.tac} makes the source first, hands it to a balanced
        service's C{scheduler_options={"source": ...}} and to C{Monitor(load_source=...)}, and
        the monitor's builder binds it (the balancer is built before the monitor).  Until then
        every load is unknown and the scheduler falls back to least connections."""
        self._monitor = monitor
        self._addresses = frozenset(addresses) | _LOCAL | self._addresses

    @property
    def bound(self) -> bool:
        """True once a monitor feeds this source."""
        return self._monitor is not None

    def loadOf(self, host: Any) -> float | None:
        if self._monitor is None:
            return None
        address, port = _addressAndPort(host)
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
        if address is not None and address not in self._addresses:
            return None
        for entry in self._monitor.latest().values():
            if entry.get("port") == port and entry.get("state") == "RUNNING":
                cpu = entry.get("cpu_percent")
                return None if cpu is None else float(cpu)
        return None

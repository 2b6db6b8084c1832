"""Round robin: each new connection goes to the next host in rotation."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.interfaces import IScheduler

__all__ = ["RoundRobin"]


@implementer(IScheduler)
class RoundRobin:
    """Plain rotation; ignores weights (use C{weighted} for those)."""

    name = "roundrobin"

    def __init__(self, clock: Any = None, rng: Any = None):
        self._next = 0

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        n = self._next
        self._next = n + 1
        return hosts[n % len(hosts)]

    def hostsChanged(self, hosts):
        pass

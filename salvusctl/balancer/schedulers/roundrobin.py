"""Round robin: each new connection goes to the next host in rotation."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from salvusctl.balancer.schedulers.leastconns import Turns
from salvusctl.interfaces import IScheduler

__all__ = ["RoundRobin"]


@implementer(IScheduler)
class RoundRobin:
    """Plain rotation; ignores weights (use C{weighted} for those)."""

    name = "roundrobin"

    def __init__(self, clock: Any = None, rng: Any = None):
        self._turns = Turns()

    def choose(self, hosts, client_address):
        return self._turns.next(hosts)

    def hostsChanged(self, hosts):
        pass

"""A host's balancer hands its listening sockets to the next host started on the same C{var} dir.

The same exchange as the standalone balancer process (L{salvusctl.balancer.handover},
docs/balancer-upgrade.md) over C{<var>/balancer.sock}, with one difference forced by the rest of
the host: a host also has ports that cannot be shared (the admin's), which the new host can bind
only once the old one has let them go.  So the new host takes the sockets and confirms at once,
while it is being built, before it checks its other ports:

1. new -> old C{take}; old -> new the listening sockets and the host states and counters;
2. new -> old C{adopted}: the old host stops accepting and answers C{released};
3. the old host stops (as on SIGTERM): its admin lets its ports go, its balancer drains its open
   connections (up to the declared C{stop_timeout}), then it exits;
4. the new host waits for its other ports to be free, starts, and accepts on the inherited sockets.

No connection is refused in between: both hosts hold the same kernel socket, and the clients that
arrive after step 2 wait in its accept queue (C{somaxconn} deep) until the new host accepts,
about as long as the new host takes to start.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.balancer.handover import HandoverError, IHandoverSource, Takeover, serveHandover, takeOver

__all__ = ["HostHandoverSource", "handoverPath", "takeFromPredecessor", "takeForHost", "serveSuccessors"]

log = Logger()

#: the longest Unix socket path the kernel takes (sun_path holds 108 bytes with the NUL)
_MAX_PATH = 107


def handoverPath(var_dir: str) -> str | None:
    """C{<var>/balancer.sock}, or None when the path is too long for a Unix socket."""
    path = os.path.join(var_dir, "balancer.sock")
    return path if len(path.encode()) <= _MAX_PATH else None


@implementer(IHandoverSource)
class HostHandoverSource:
    """The old side: the balancer's sockets and state for a successor host (C{take} only)."""

    def __init__(self, balancer: Any, onHandedOver: Any = None) -> None:
        self.balancer = balancer
        self.onHandedOver = onHandedOver

    def handoverListeners(self) -> list:
        out = []
        for svc in self.balancer.balanced.values():
            out.extend(svc.handoverSockets())
        return out

    def handoverState(self, kind: str = "take") -> dict:
        if kind != "take":
            raise HandoverError("a host's balancer hands over with 'take' only")
        from salvusctl.balancer.persist import exportState

        state = exportState(self.balancer.balanced, self.balancer.reactor.seconds())
        state["pid"] = os.getpid()
        return state

    def handedOver(self, kind: str) -> None:
        log.info("the balancer's listening sockets were taken by a successor; accepting no more here")
        self.balancer.stopListening()
        self.balancer.stopServingSuccessors()

    def handoverDone(self, kind: str) -> None:
        if self.onHandedOver is not None:
            self.onHandedOver()


def serveSuccessors(reactor: Any, path: str, source: HostHandoverSource) -> Any:
    """Answer a successor's C{take} on C{path}."""
    return serveHandover(reactor, path, source, backlog=8)


def takeFromPredecessor(path: str | None, timeout: float = 10.0) -> Takeover | None:
    """Take the sockets of the host that serves C{path} and confirm at once; None if none does.

    Blocking: called while the new host is built, before its reactor runs.
    """
    if not path:
        return None
    takeover = takeOver(path, "take", timeout=timeout)
    if takeover is None:
        return None
    takeover.confirm()
    log.info("took {n} listening sockets over from the running host (pid {pid})",
             n=len(takeover.listeners), pid=takeover.state.get("pid"))
    return takeover


def takeForHost(host: Any, service: Any) -> bool:
    """Before a host starts: take its balancer's sockets from a host running on the same var dir.

    True when it did (the predecessor is stopping: its other ports are let go soon).  A failed
    exchange is a L{salvusctl.errors.ConfigError}: the predecessor keeps serving.
    """
    from salvusctl.errors import ConfigError

    try:
        balancer = service.getServiceNamed("balancer")
    except KeyError:
        return False
    try:
        takeover = takeFromPredecessor(getattr(balancer, "handover_path", None))
    except (HandoverError, OSError) as e:
        raise ConfigError(f"cannot take the balancer's sockets from the running host: {e}")
    if takeover is None:
        return False
    balancer.takeover = takeover
    return True

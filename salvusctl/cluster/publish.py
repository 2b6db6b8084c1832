"""A worker host's side of balancing across hosts: publish its ready deploy instances.

The publisher follows the supervisor through the same two points a local balanced group uses
(L{salvusctl.balancer.deploys}):

- an instance that becomes I{ready} is published in C{cluster_instances} as C{address:port},
  state C{ready};
- before the supervisor signals a published instance (a stop, a rolling restart) it is published
  as C{drain}, and the stop waits C{drain_delay} seconds, time for the front-ends to stop sending
  it new connections;
- an instance that is no longer ready is withdrawn;
- a changed declaration of a published deploy, applied by a reload, is a rolling restart (the
  supervisor's C{addRolling}), exactly as for a deploy a local balanced group follows: the
  front-ends balancing it have no way to hold their clients while every instance restarts at once.

Each change is followed by a NOTIFY on C{salvus_cluster_hosts}, which front-ends listen to.  At
start the host's rows are replaced whole (what a crash left behind goes); at a clean stop they are
withdrawn with the host's C{left} mark.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

__all__ = ["InstancePublisher"]

log = Logger()

READY = "ready"
DRAIN = "drain"


def _hasPort(deploy: Any) -> bool:
    """The publisher's default: a deploy whose instances have a port is published."""
    return getattr(deploy, "port", None) is not None


def _stateName(state: Any) -> str:
    return str(getattr(state, "name", state))


class InstancePublisher:
    """Keep C{cluster_instances} in step with this host's ready instances.

    @param tables: an L{IClusterStore}.
    @param supervisor: an L{ISupervisor}.
    @param address: the address other hosts reach these instances on.
    @param deploys: the deploys published (None: every deploy whose instances have a port).
    @param changed: called after each write, to wake the front-ends (a NOTIFY).
    """

    def __init__(self, clock: Any, tables: Any, host: str, supervisor: Any, address: str,
                 deploys: list[str] | None = None, drain_delay: float = 1.0,
                 changed: Callable[[], Any] | None = None):
        self.clock = clock
        self.tables = tables
        self.host = host
        self.supervisor = supervisor
        self.address = address
        self.deploys = None if deploys is None else set(deploys)
        self.drain_delay = drain_delay
        self.changed = changed or (lambda: None)
        #: instance name -> (deploy, port, state) as last published.
        self.published: dict[str, tuple[str, int, str]] = {}
        self.running = False
        # what this publisher asked the supervisor to roll: deploy names, or the rule for "every
        # deploy with a port" (one object, so removeRolling undoes exactly that addRolling)
        self._rolling: list[Any] = sorted(self.deploys) if self.deploys is not None else [_hasPort]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Deferred:
        """Subscribe to the supervisor and publish what is ready now (replacing old rows)."""
        self.running = True
        self.supervisor.addObserver(self._observe)
        self.supervisor.addBeforeStop(self._beforeStop)
        if callable(getattr(self.supervisor, "addRolling", None)):
            for key in self._rolling:
                self.supervisor.addRolling(key)
        self.published = {}
        for info in self.supervisor.instanceInfos():
            if self._wanted(info) and self._isReady(info):
                self.published[info["name"]] = (self._deploy(info), int(info["port"]), READY)
        rows = [(name, deploy, self.address, port, state)
                for name, (deploy, port, state) in sorted(self.published.items())]
        d = self.tables.republish(self.host, rows, self.clock.seconds())
        return self._written(d, f"published {len(rows)} instances")

    def stop(self) -> Deferred | None:
        """Unsubscribe; when something is published, publish it all as draining and fire after
        C{drain_delay} (the rows go with the host's C{left} mark, after this)."""
        if not self.running:
            return None
        self.running = False
        self.supervisor.removeObserver(self._observe)
        self.supervisor.removeBeforeStop(self._beforeStop)
        if callable(getattr(self.supervisor, "removeRolling", None)):
            for key in self._rolling:
                self.supervisor.removeRolling(key)
        if not self.published or self.drain_delay <= 0:
            return None
        self.published = {name: (deploy, port, DRAIN) for name, (deploy, port, _) in self.published.items()}
        d = self._written(self.tables.drainAll(self.host, self.clock.seconds()),
                          f"{len(self.published)} instances draining: the host is stopping")
        d.addCallback(lambda _: deferLater(self.clock, self.drain_delay, lambda: None))
        return d

    # -- the supervisor's events -----------------------------------------------------------------

    @staticmethod
    def _deploy(info: dict) -> str:
        return str(info.get("deploy") or str(info["name"]).partition(":")[0])

    def _wanted(self, info: dict) -> bool:
        if not info.get("port"):
            return False
        return self.deploys is None or self._deploy(info) in self.deploys

    @staticmethod
    def _isReady(info: dict) -> bool:
        if "ready" in info:
            return bool(info["ready"])
        return _stateName(info.get("state")) == "RUNNING"  # a supervisor without readiness

    def _observe(self, name: str, old: Any, new: Any, info: dict) -> None:
        if not self.running or not self._wanted(info):
            return
        event = info.get("event")
        if event == "ready" or (event is None and _stateName(new) == "RUNNING"):
            self._publish(name, self._deploy(info), int(info["port"]), READY)
        elif event == "unready" or _stateName(new) != "RUNNING":
            self._withdraw(name)

    def _beforeStop(self, name: str, info: dict) -> Deferred | None:
        entry = self.published.get(name)
        if not self.running or entry is None:
            return None
        deploy, port, _ = entry
        d = self._publish(name, deploy, port, DRAIN)
        if self.drain_delay > 0:
            d.addCallback(lambda _: deferLater(self.clock, self.drain_delay, lambda: None))
        return d

    # -- writes ----------------------------------------------------------------------------------

    def _publish(self, name: str, deploy: str, port: int, state: str) -> Deferred:
        self.published[name] = (deploy, port, state)
        d = self.tables.publish(self.host, name, deploy, self.address, port, state, self.clock.seconds())
        return self._written(d, f"{name} {state} at {self.address}:{port}")

    def _withdraw(self, name: str) -> None:
        if self.published.pop(name, None) is None:
            return
        self._written(self.tables.unpublish(self.host, name), f"{name} withdrawn")

    def _written(self, d: Deferred, what: str) -> Deferred:
        def done(_):
            log.info("cluster: {host}: {what}", host=self.host, what=what)
            self.changed()

        def failed(failure):
            log.warn("cluster: {host}: {what} not written: {why}", host=self.host, what=what,
                     why=failure.getErrorMessage())

        return d.addCallbacks(done, failed)

"""Balanced groups whose hosts are a supervised deploy's instances.

A group declared as C{Group("workers", deploy="worker")} lists no servers: it follows the host's
supervisor through its two public integration points.

- B{join}: when an instance becomes I{ready} (RUNNING and, if its deploy has a liveness probe,
  answering it) it is added to the group as C{deploy_address:port}, named after the instance
  (C{worker:0}).
- B{drain}: before the supervisor signals a RUNNING instance (a stop, a rolling restart) its
  host is set to C{drain} — no new connections — and the stop waits until the host's open
  connections reach 0, or C{drain_timeout} seconds have passed.
- B{leave}: when the instance is no longer ready (it is stopping, exited, or its probe stopped
  answering) its host is removed; connections still open finish.
- B{hold}: a planned stop (one that drained the host) puts the group on hold for C{hold}
  seconds: a client that finds no host then waits in the queue for the first instance back,
  instead of being refused.  So a restart sent as a stop and then a start (supervisorctl's
  C{restart} and C{update}) fails no request either; a crash sets no hold.

So C{restartDeploy(name, batch=1)} of a balanced deploy is a rolling restart that no client sees.
The pool also asks the supervisor (C{addRolling}) to apply a changed declaration of its deploy
(a reload: SIGHUP, C{salvusctl reconcile}, C{supervisorctl update}) the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from salvusctl.balancer import states

__all__ = ["DeployPool"]

log = Logger()

RUNNING = 20  # ProcessState.RUNNING; compared as an int so this module needs no supervisor import


class DeployPool(Service):
    """Keep one balanced group's hosts in step with one deploy's instances.

    @param balancer: the L{BalancerService} (hosts are added through its live API, so named
        addresses are resolved like any other host).
    @param supervisor: an L{ISupervisor} offering C{addObserver} / C{addBeforeStop}
        (L{salvusctl.supervisor.service.SupervisorService}).
    @param poll: seconds between looks at a draining host's open connections.
    @param hold: after a planned stop, how long clients that find no host wait for one to come
        back instead of being refused (default: the service's C{queue_timeout}, else 5 s).
    """

    def __init__(self, reactor: Any, balancer: Any, service: str, group: str, deploy: str,
                 supervisor: Any, address: str = "127.0.0.1", drain_timeout: float = 30.0,
                 poll: float = 0.05, hold: float | None = None):
        self.reactor = reactor
        self.balancer = balancer
        self.service = service
        self.group = group
        self.deploy = deploy
        self.supervisor = supervisor
        self.address = address
        self.drain_timeout = drain_timeout
        self.poll = poll
        self._drains: dict[str, tuple[Deferred, list[Any]]] = {}
        # instances drained for a stop and not gone yet: their leaving is planned, not a crash
        self._planned: set[str] = set()
        if hold is None:
            svc = balancer.balanced.get(service) if hasattr(balancer, "balanced") else None
            hold = (getattr(svc, "timeouts", {}).get("queue") or 5.0) if svc is not None else 5.0
        self.hold = float(hold)

    # -- lifecycle ---------------------------------------------------------------------------------

    def startService(self) -> None:
        """Subscribe to the supervisor and take in the instances that are ready already."""
        Service.startService(self)
        self.supervisor.addObserver(self._observe)
        self.supervisor.addBeforeStop(self._beforeStop)
        # A changed declaration of the deploy is applied one instance at a time, never all at once.
        if callable(getattr(self.supervisor, "addRolling", None)):
            self.supervisor.addRolling(self.deploy)
        for info in self.supervisor.instanceInfos():
            if info.get("deploy") == self.deploy and info.get("ready"):
                self._join(info)

    def stopService(self) -> None:
        """Unsubscribe; a drain still waiting lets its stop go ahead."""
        if not self.running:
            return
        Service.stopService(self)
        self.supervisor.removeObserver(self._observe)
        self.supervisor.removeBeforeStop(self._beforeStop)
        if callable(getattr(self.supervisor, "removeRolling", None)):
            self.supervisor.removeRolling(self.deploy)
        for name in list(self._drains):
            self._finishDrain(name)

    # -- the supervisor's events -------------------------------------------------------------------

    def _observe(self, name: str, old: Any, new: Any, info: dict) -> None:
        if info.get("deploy") != self.deploy:
            return
        event = info.get("event")
        if event == "ready":
            self._join(info)
        elif event == "unready" or (event == "state" and int(new) != RUNNING):
            self._leave(name)

    def _beforeStop(self, name: str, info: dict) -> Deferred | None:
        if info.get("deploy") != self.deploy:
            return None
        host = self._host(name)
        if host is None:
            return None
        self._planned.add(name)
        self._hold()
        host.setAdmin(states.DRAIN)
        log.info("{service}/{group}: draining {name} ({n} open) before it stops",
                 service=self.service, group=self.group, name=name, n=host.active)
        if host.active <= 0 or self.drain_timeout <= 0:
            return None
        deadline = self.reactor.seconds() + self.drain_timeout
        timer: list[Any] = []

        def cancel(_: Deferred) -> None:
            self._drains.pop(name, None)
            if timer and timer[0].active():
                timer[0].cancel()

        d: Deferred = Deferred(cancel)
        self._drains[name] = (d, timer)

        def check() -> None:
            timer.clear()
            if host.active <= 0:
                self._finishDrain(name)
            elif self.reactor.seconds() >= deadline:
                log.warn("{service}/{group}: {name} still has {n} open connections after "
                         "{t}s of draining; stopping it anyway", service=self.service,
                         group=self.group, name=name, n=host.active, t=self.drain_timeout)
                self._finishDrain(name)
            else:
                timer.append(self.reactor.callLater(self.poll, check))

        timer.append(self.reactor.callLater(self.poll, check))
        return d

    def _finishDrain(self, name: str) -> None:
        entry = self._drains.pop(name, None)
        if entry is None:
            return
        d, timer = entry
        if timer and timer[0].active():
            timer[0].cancel()
        if not d.called:
            d.callback(None)

    # -- the pool ----------------------------------------------------------------------------------

    def _host(self, name: str) -> Any:
        svc = self.balancer.balanced.get(self.service)
        group = svc.groups.get(self.group) if svc is not None else None
        return group.hosts.get(name) if group is not None else None

    def _join(self, info: dict) -> None:
        name, port = info["name"], info.get("port")
        if not port:
            log.warn("{service}/{group}: instance {name} has no port; not balanced",
                     service=self.service, group=self.group, name=name)
            return
        host = self._host(name)
        if host is not None:
            if host.port == int(port):
                host.setAdmin(states.UP)
                return
            self.balancer.removeHost(self.service, self.group, name)
        self.balancer.addHost(self.service, self.group, self.address, int(port), name=name)
        svc = self.balancer.balanced.get(self.service)
        if svc is not None:
            svc._serveQueue()  # clients held while the group had no host
        log.info("{service}/{group}: {name} joined at {address}:{port}", service=self.service,
                 group=self.group, name=name, address=self.address, port=port)

    def _hold(self) -> None:
        """A planned stop: should it leave the group with no host, new clients wait up to
        C{hold} seconds for an instance to come back (a restart that is a stop then a start)."""
        svc = self.balancer.balanced.get(self.service)
        if svc is None or self.group not in svc.groups or self.hold <= 0:
            return
        svc.holdGroup(self.group, self.hold)

    def _leave(self, name: str) -> None:
        if name in self._planned:
            self._planned.discard(name)
            self._hold()  # counted from the stop, not from the start of a long drain
        if self._host(name) is None:
            return
        self.balancer.removeHost(self.service, self.group, name)
        log.info("{service}/{group}: {name} left", service=self.service, group=self.group, name=name)

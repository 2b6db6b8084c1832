"""One balanced service at run time: its listeners, its groups, and every dispatch decision.

The per-connection objects (L{salvusctl.balancer.proxy}) call back into L{BalancedService} at the
few moments that need a decision: a client arrived (admit, queue or refuse), a connect failed (mark
the host bad, retry elsewhere), a backend slot was freed (serve the queue).

Listening is a seam: L{BalancedService.factory} is the protocol factory any listening port may
accept with.  C{startService} listens on the declared endpoint strings; a process that inherited
an already-bound socket instead calls L{BalancedService.adoptSocket} (C{reactor.adoptStreamPort})
or hands any L{IListeningPort} it made to L{BalancedService.listenOn}.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger

from salvusctl.balancer import declare, fastpath, listeners, states
from salvusctl.balancer.fdbudget import DescriptorBudget, adoptGuarded, isLocalError
from salvusctl.balancer.health import HealthCheck, HostMonitor
from salvusctl.balancer.listeners import listenerName
from salvusctl.balancer.model import BackendHost, HostGroup
from salvusctl.balancer.proxy import CLOSED, CONNECTING, QUEUED, BackendFactory, Frontend, FrontendFactory
from salvusctl.balancer.refusals import RefusalLog
from salvusctl.balancer.schedulers import makeScheduler
from salvusctl.balancer.wheel import TimeoutWheel

__all__ = ["BalancedService"]

log = Logger()

#: clients that may wait for a group on hold (L{BalancedService.holdGroup}) when the service's
#: own C{queue} is smaller
HOLD_QUEUE = 1024


class BalancedService(Service):
    """Listeners plus groups of backend hosts for one declared service.

    @ivar groups: group name → L{HostGroup}; C{active} names the one taking traffic.
    @ivar ports: the listening ports (from endpoints or adopted).
    """

    def __init__(self, reactor: Any, decl: declare.Balanced, wheel: TimeoutWheel | None = None,
                 rng: Any = None, budget: DescriptorBudget | None = None):
        self.reactor = reactor
        self.decl = decl
        self.name = decl.name
        self.wheel = wheel or TimeoutWheel(reactor)
        # the process's descriptors, shared by every service of a BalancerService
        self._own_budget = budget is None
        self.budget = budget if budget is not None else DescriptorBudget(reactor)
        self.rng = rng
        self.listen = list(decl.listen)
        self.maxconn = decl.maxconn
        self.queue_max = decl.queue
        self.retries = decl.retries
        self.all_down = decl.all_down
        self.setTimeouts(decl.connect_timeout, decl.client_timeout, decl.server_timeout, decl.queue_timeout)
        self.groups: dict[str, HostGroup] = {}
        self.health: dict[str, HealthCheck] = {}
        self.agents: dict[str, Any] = {}
        self.slowstart: dict[str, float] = {}
        self.monitors: dict[int, HostMonitor] = {}
        self.active = decl.activeGroup()
        self.factory = FrontendFactory(self, self.wheel)
        self.ports: list[Any] = []
        self.listeners: list[listeners.Listener] = []
        # listener name -> a socket taken from a predecessor, adopted instead of binding
        self.inherited: dict[str, socket.socket] = {}
        # set autoListen False when the listening sockets come from elsewhere (adoptSocket/listenOn)
        self.autoListen = True
        self.listening: Deferred | None = None
        #: why the last listen failed, in one line (C{tcp:8080:interface=…: address already in use})
        self.listenError: str | None = None
        self.queue: deque[Frontend] = deque()
        self.queued = 0
        self._all_down_logged = False
        self.onHostChange: Any = None
        # service counters (host counters live on the hosts)
        self.open = 0
        self.total = 0
        self.refused = 0
        self.retried = 0
        self.connect_failures = 0
        self.queue_timeouts = 0
        self.idle_timeouts = 0
        #: clients that waited for a host of a group on hold (L{holdGroup}) instead of refused
        self.held = 0
        self._holdCalls: dict[str, Any] = {}
        self.local_errors = 0
        self._local_logged_at: float | None = None
        self.refusals = RefusalLog(reactor, decl.name)
        self.retired = {"total": 0, "bytes_in": 0, "bytes_out": 0}
        for g in decl.groups:
            self.addGroup(g.name, g.scheduler, g.scheduler_options, g.health, g.agent, g.slowstart)
            self.groups[g.name].deploy = g.deploy
            self.groups[g.name].cluster_deploy = g.cluster_deploy
            self.groups[g.name].fixed = {self.addServer(g.name, server).name for server in g.servers}
        self.active_group = self.groups.get(self.active) if self.active else None

    # -- configuration -----------------------------------------------------------------------------

    def setTimeouts(self, connect: float, client: float, server: float, queue: float) -> None:
        """Set the timeouts in seconds (0 disables one); they are kept in wheel ticks."""
        self.timeouts = {"connect": connect, "client": client, "server": server, "queue": queue}
        t = self.wheel.ticks
        self.connect_ticks = t(connect) if connect else 0
        self.client_ticks = t(client) if client else 0
        self.server_ticks = t(server) if server else 0
        self.queue_ticks = t(queue) if queue else 0

    def addGroup(self, name: str, scheduler: str = "roundrobin", scheduler_options: dict | None = None,
                 health: HealthCheck | None = None, agent: Any = None, slowstart: float = 0.0) -> HostGroup:
        """Add an (empty) group; the first group of a service becomes its active one."""
        if name in self.groups:
            raise KeyError(f"service {self.name!r} already has a group {name!r}")
        options = dict(scheduler_options or {})
        group = HostGroup(name, makeScheduler(scheduler, self.reactor, self.rng, **options), options)
        self.groups[name] = group
        self.health[name] = health or HealthCheck()
        self.agents[name] = agent
        self.slowstart[name] = float(slowstart)
        if self.active is None:
            self.active = name
            self.active_group = group
        return group

    def removeGroup(self, name: str) -> None:
        """Remove a group that is not the active one (its open connections finish)."""
        if name == self.active:
            raise ValueError(f"group {name!r} is active; switch to another group first")
        group = self.group(name)
        for host_name in list(group.hosts):
            self.removeHost(name, host_name)
        del self.groups[name]

    def setActiveGroup(self, name: str) -> None:
        """Switch the group that takes new connections; existing ones stay where they are."""
        group = self.group(name)
        self.active = name
        self.active_group = group
        self._all_down_logged = False
        log.info("service {service}: group {group} is now active", service=self.name, group=name)
        self._serveQueue()

    def setScheduler(self, group: str, scheduler: str, options: dict | None = None) -> None:
        """Switch a group's scheduler live."""
        g = self.group(group)
        options = dict(options or {})
        g.setScheduler(makeScheduler(scheduler, self.reactor, self.rng, **options))
        g.scheduler_options = options

    def addServer(self, group: str, server: declare.Server) -> BackendHost:
        """Add a declared server to a group and, if running, start checking it."""
        server.validate()
        address, port = server.hostPort()
        host = BackendHost(
            self.reactor, address, port, server.weight, server.name, server.maxconn, server.tls,
            server.tls_hostname, server.proxy_protocol, server.check_port, server.agent_port,
        )
        host.tls_ca = server.tls_ca
        host.tls_verify = server.tls_verify
        host.slowstart = self.slowstart.get(group, 0.0)
        self.group(group).add(host)
        if self.running:
            self._startMonitor(group, host)
        return host

    def addHost(self, group: str, address: str, port: int, weight: int = 1, name: str | None = None,
                **options: Any) -> BackendHost:
        """Add a host by address and port (the live API's form)."""
        return self.addServer(group, declare.Server(f"{address}:{port}", weight, name, **options))

    def removeHost(self, group: str, name: str) -> BackendHost:
        """Remove a host from a group; its open connections finish."""
        self.host(group, name)
        host = self.groups[group].remove(name)
        monitor = self.monitors.pop(id(host), None)
        if monitor is not None:
            monitor.stop()
        for key in ("total", "bytes_in", "bytes_out"):
            self.retired[key] += getattr(host, key)
        return host

    def group(self, name: str) -> HostGroup:
        """A group by name; raises KeyError naming what is missing."""
        try:
            return self.groups[name]
        except KeyError:
            raise KeyError(f"service {self.name!r} has no group {name!r}")

    def host(self, group: str, name: str) -> BackendHost:
        """A host by group and name; raises KeyError naming what is missing."""
        g = self.group(group)
        try:
            return g.hosts[name]
        except KeyError:
            raise KeyError(f"group {group!r} of service {self.name!r} has no host {name!r}")

    def hosts(self):
        for group_name, group in self.groups.items():
            for host in group.hosts.values():
                yield group_name, host

    # -- listening -------------------------------------------------------------------------------

    def listenOn(self, port: Any) -> Any:
        """Adopt a listening port that already accepts with L{factory} (stopped on stop).

        It pauses while the process is at its descriptor limit (L{DescriptorBudget}).
        """
        self.ports.append(port)
        self.budget.addPort(port)
        return port

    def adoptSocket(self, fd: int, family: int = socket.AF_INET) -> Any:
        """Accept on an inherited, already-bound listening socket (the upgrade hand-over seam)."""
        if isinstance(self.reactor, PosixReactorBase) and family in (socket.AF_INET, socket.AF_INET6):
            return self.listenOn(adoptGuarded(self.reactor, fd, family, self.factory))
        return self.listenOn(self.reactor.adoptStreamPort(fd, family, self.factory))

    def listenEndpoints(self) -> Deferred:
        """Listen on the declared endpoint strings; fires with the ports.

        C{tcp:}/C{tcp6:}/C{ssl:} sockets are bound here (or taken from L{inherited}, by listener
        name) and adopted, so that they can be handed over (L{salvusctl.balancer.listeners}).
        """
        ds = []
        for i, description in enumerate(self.listen):
            name = listenerName(self.name, i)
            d = listeners.listen(self.reactor, name, withBacklog(description), self.factory,
                                 self.inherited.pop(name, None))
            d.addCallback(self._listening)
            ds.append(d)
        return gatherResults(ds, consumeErrors=True)

    def _listening(self, listener: listeners.Listener) -> Any:
        self.listeners.append(listener)
        return self.listenOn(listener.port)

    def closeListeners(self) -> Deferred:
        """Stop accepting on every port and close the sockets this service holds."""
        ports = self.forgetPorts()
        owned, self.listeners = self.listeners, []
        ds = [maybeDeferred(p.stopListening) for p in ports]
        for listener in owned:
            if listener.sock is not None:
                listener.sock.close()
                listener.sock = None
        return DeferredList(ds, consumeErrors=True)

    def handoverSockets(self) -> list[tuple[str, socket.socket]]:
        """(listener name, socket) of every listener a successor can take."""
        return [(x.name, x.sock) for x in self.listeners if x.sock is not None]

    def forgetPorts(self) -> list[Any]:
        """Stop pausing and resuming the ports with the budget; return them (to stop listening)."""
        ports, self.ports = self.ports, []
        for port in ports:
            self.budget.removePort(port)
        return ports

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self._autoListen()

    def _autoListen(self) -> None:
        if self.autoListen and self.listen and self.listening is None:
            self.listening = self.listenEndpoints()
            self.listening.addErrback(self._listenFailed)

    def _listenFailed(self, failure):
        """Record (in L{listenError}) and log in one line why a listener failed: a port taken is
        an operator's error with a plain reason, not a traceback."""
        self.listenError = listenReason(failure, self.listen)
        log.error("service {service}: cannot listen: {why}", service=self.name, why=self.listenError)
        return None

    def startService(self):
        if self._own_budget:
            self.budget.plan(self.maxconn, 2 * sum(1 for _ in self.hosts()))
        self._autoListen()
        Service.startService(self)
        for group_name, host in self.hosts():
            self._startMonitor(group_name, host)

    def stopService(self):
        Service.stopService(self)
        for call in self._holdCalls.values():
            if call.active():
                call.cancel()
        self._holdCalls.clear()
        self.refusals.stop()
        for monitor in self.monitors.values():
            monitor.stop()
        self.monitors.clear()
        if self._own_budget:
            self.budget.stop()
        self.listening = None
        return self.closeListeners()

    def _startMonitor(self, group: str, host: BackendHost) -> None:
        if id(host) in self.monitors:
            return
        monitor = HostMonitor(self.reactor, host, self.health[group], self.agents.get(group),
                              self._hostChanged)
        self.monitors[id(host)] = monitor
        monitor.start()

    def _hostChanged(self, host: BackendHost, what: str) -> None:
        if host.state == states.UP:
            self._all_down_logged = False
            self._serveQueue()
        if self.onHostChange is not None:
            self.onHostChange(self, host, what)

    def retryHost(self, group: str, name: str) -> Deferred:
        """Check a bad host now and readmit it on one good check; fires with True if readmitted."""
        host = self.host(group, name)
        monitor = self.monitors.get(id(host))
        if monitor is None:
            monitor = HostMonitor(self.reactor, host, self.health[group], None, self._hostChanged)
        return monitor.checkOnce(force=True)

    # -- the decisions -----------------------------------------------------------------------------

    def accept(self, front: Frontend) -> None:
        """A client arrived: admit it, queue it, or refuse it."""
        self.total += 1
        self.budget.opened()
        if self.maxconn and self.open >= self.maxconn:
            self._enqueue(front)
            return
        self.open += 1
        front.admitted = True
        self._dispatch(front)

    def _dispatch(self, front: Frontend) -> None:
        group = self.active_group
        if group is None:
            self._refuse(front, "no active group")
            return
        hosts = group.candidates(front.tried)
        if not hosts:
            if group.rotation and (front.tried is None or any(h not in front.tried for h in group.rotation)):
                self._enqueue(front)  # every host is at its limit
                return
            if not group.rotation and group.hold_until > self.reactor.seconds():
                self._hold(front)  # its hosts are being restarted: wait for one to come back
                return
            if not group.rotation and self.all_down == "aggressive":
                hosts = [h for h in group.hosts.values()
                         if h.admin == states.UP and h.agent != states.MAINT and h.ip is not None
                         and (front.tried is None or h not in front.tried)]
                if hosts and not self._all_down_logged:
                    self._all_down_logged = True
                    log.warn("service {service}: every host of group {group} is down; "
                             "aggressive mode puts them all back in rotation",
                             service=self.name, group=group.name)
            if not hosts:
                if not group.rotation:
                    if not self._all_down_logged:
                        self._all_down_logged = True
                        log.error("service {service}: every host of group {group} is down; "
                                  "refusing new clients", service=self.name, group=group.name)
                    self._refuse(front, "all hosts down")
                else:
                    self._refuse(front, "retries exhausted")
                return
        # a plain TCP transport holds the peer as a tuple already; getPeer() would allocate
        t = front.transport
        host = group.scheduler.choose(hosts, getattr(t, "client", None) or t.getPeer())
        if host is None:
            self._refuse(front, "scheduler chose no host")
            return
        self._connect(front, host)

    def _connect(self, front: Frontend, host: BackendHost) -> None:
        host.active += 1
        front.host = host
        front.phase = CONNECTING
        front.since = self.wheel.now()
        factory = BackendFactory(front, host)
        try:
            if host.tls:
                front.connector = self.reactor.connectSSL(host.ip, host.port, factory,
                                                          self._tlsContext(host), timeout=None)
            else:
                front.connector = fastpath.connectTCP(self.reactor, host.ip, host.port, factory)
        except OSError as e:
            # No socket for the backend (EMFILE, ENFILE, ENOBUFS...): the client must not be left
            # connected to nothing, and the host did nothing wrong.
            host.active -= 1
            front.host = None
            if not isLocalError(e):
                raise
            self._localError(front, e)
            return
        front.arm()

    def _tlsContext(self, host: BackendHost) -> Any:
        # Kept on the host itself (one record per host): a table keyed by id(host) outlived
        # removed hosts and handed their context to new hosts that reused the id.
        context = getattr(host, "tls_context", None)
        if context is None:
            from twisted.internet import ssl

            if not getattr(host, "tls_verify", True):
                context = ssl.CertificateOptions(verify=False)
            else:
                trust = None
                if getattr(host, "tls_ca", None):
                    with open(host.tls_ca, "rb") as f:
                        trust = ssl.Certificate.loadPEM(f.read())
                context = ssl.optionsForClientTLS(host.tls_hostname or host.address, trustRoot=trust)
            host.tls_context = context
        return context

    def connectFailed(self, front: Frontend, host: BackendHost, reason: Any) -> None:
        """A connect to C{host} failed or timed out: mark it bad, retry the client elsewhere."""
        host.active -= 1
        if front.phase == CLOSED or front.host is not host or front.phase != CONNECTING:
            self._serveQueue()
            return
        if not front.timed_out and isLocalError(reason):
            front.host = None
            self._localError(front, reason.value)
            self._serveQueue()
            return
        why = "connect timeout" if front.timed_out else f"connect failed: {reason.getErrorMessage()}"
        front.timed_out = False
        host.connect_failures += 1
        self.connect_failures += 1
        if host.markDown(why):
            log.warn("service {service}: host {host} marked down: {why}", service=self.name,
                     host=host.name, why=why)
            self._hostChanged(host, "down")
        if front.tried is None:
            front.tried = [host]
        else:
            front.tried.append(host)
        front.attempts += 1
        front.host = None
        if front.attempts > self.retries:
            self._refuse(front, "retries exhausted")
        else:
            host.retries += 1
            self.retried += 1
            self._dispatch(front)
        self._serveQueue()

    def _localError(self, front: Frontend, error: Any) -> None:
        """This host ran out of descriptors (or buffers): close the client, blame no backend."""
        self.local_errors += 1
        self.budget.localError()
        now = self.reactor.seconds()
        if self._local_logged_at is None or now - self._local_logged_at >= 10.0:
            self._local_logged_at = now
            log.warn("service {service}: no local resource for a backend connection ({why}); the "
                     "client is closed and no host is marked down ({n} such errors so far)",
                     service=self.name, why=_errorText(error), n=self.local_errors)
        self._refuse(front, "local resource error")

    def backendClosed(self, front: Frontend, host: BackendHost) -> None:
        """A backend connection ended: its slot is free."""
        host.active -= 1
        self._serveQueue()

    def frontendClosed(self, front: Frontend, phase: int) -> None:
        """A client connection ended (in any phase)."""
        self.budget.closed()
        if phase == QUEUED:
            self._leftQueue()
        if front.admitted:
            front.admitted = False
            self.open -= 1
            self._serveQueue()

    def queueTimedOut(self, front: Frontend) -> None:
        self.queue_timeouts += 1
        self.refusals.refused("queue_timeout")
        self._close(front)
        self._leftQueue()

    def _leftQueue(self) -> None:
        """A client left the queue other than by being served (it closed, or timed out)."""
        self.queued -= 1
        queue = self.queue
        if len(queue) > 2 * self.queued + 16:
            # Such clients stay in the deque until its head reaches them; when they are most of
            # it, drop them (amortised O(1)), so that a closed client is not kept alive there.
            self.queue = deque(f for f in queue if f.phase == QUEUED)

    def idleTimedOut(self, front: Frontend) -> None:
        self.idle_timeouts += 1

    def _enqueue(self, front: Frontend) -> None:
        if self.queued >= self.queue_max:
            self._refuse(front, "queue full")
            return
        front.phase = QUEUED
        front.since = self.wheel.now()
        self.queue.append(front)
        self.queued += 1
        front.arm()

    def _serveQueue(self) -> None:
        queue = self.queue
        while queue:
            front = queue[0]
            if front.phase != QUEUED:
                queue.popleft()
                continue
            if not front.admitted and self.maxconn and self.open >= self.maxconn:
                return
            group = self.active_group
            if group is not None and group.rotation and not group.candidates(front.tried):
                return
            if group is not None and not group.rotation and group.hold_until > self.reactor.seconds():
                return  # on hold: the first host that joins serves the queue
            queue.popleft()
            self.queued -= 1
            front.phase = CONNECTING  # leaving the queue
            if not front.admitted:
                front.admitted = True
                self.open += 1
            self._dispatch(front)

    def holdGroup(self, group: str, seconds: float) -> None:
        """For the next C{seconds}, a client that finds no host in C{group}'s rotation waits in
        the queue (up to C{queue_timeout}) instead of being refused.

        A deploy's pool calls this before each planned stop of one of its instances: when every
        instance is stopped and then started again (a stop followed by a start, which is what
        supervisorctl's C{restart} and C{update} send), the clients of that gap wait for the
        first instance back rather than fail.  A crash sets no hold: clients are refused at once.
        """
        g = self.group(group)
        until = self.reactor.seconds() + seconds
        if until > g.hold_until:
            g.hold_until = until
            # when the hold ends, whoever still waits is dispatched (refused if still no host)
            call = self._holdCalls.pop(group, None)
            if call is not None and call.active():
                call.cancel()
            self._holdCalls[group] = self.reactor.callLater(seconds, self._holdEnded, group)

    def _holdEnded(self, group: str) -> None:
        self._holdCalls.pop(group, None)
        self._serveQueue()

    def _hold(self, front: Frontend) -> None:
        if self.queued >= max(self.queue_max, HOLD_QUEUE):
            self._refuse(front, "queue full")
            return
        self.held += 1
        front.phase = QUEUED
        front.since = self.wheel.now()
        self.queue.append(front)
        self.queued += 1
        front.arm()

    def _refuse(self, front: Frontend, why: str) -> None:
        self.refused += 1
        self.refusals.refused(_REFUSAL_KINDS.get(why, why))
        self._close(front)

    def _close(self, front: Frontend) -> None:
        front.close()

    # -- data --------------------------------------------------------------------------------------

    def counters(self) -> dict:
        hosts = [h for _, h in self.hosts()]
        return {
            "open": self.open,
            "total": self.total,
            "queue": self.queued,
            "refused": self.refused,
            "retries": self.retried,
            "connect_failures": self.connect_failures,
            "queue_timeouts": self.queue_timeouts,
            "idle_timeouts": self.idle_timeouts,
            "local_errors": self.local_errors,
            "refused_by": dict(self.refusals.counts),
            "bytes_in": self.retired["bytes_in"] + sum(h.bytes_in for h in hosts),
            "bytes_out": self.retired["bytes_out"] + sum(h.bytes_out for h in hosts),
            "health_changes": sum(h.health_changes for h in hosts),
        }

    def info(self) -> dict:
        """Config, state and counters as plain data."""
        return {
            "name": self.name,
            "listen": list(self.listen),
            "addresses": [_portAddress(p) for p in self.ports],
            "active": self.active,
            "maxconn": self.maxconn,
            "queue_max": self.queue_max,
            "retries": self.retries,
            "all_down": self.all_down,
            "timeouts": dict(self.timeouts),
            "counters": self.counters(),
            "groups": {name: g.info() for name, g in self.groups.items()},
        }

    def runningConfig(self) -> dict:
        """The running config in the shape of L{declare.Balanced.asData} (for diffs)."""
        return {
            "name": self.name,
            "listen": list(self.listen),
            "active": self.active,
            "groups": {
                name: {"scheduler": g.scheduler.name, "deploy": g.deploy,
                       "cluster_deploy": g.cluster_deploy,
                       "hosts": {h.name: h.config() for h in g.hosts.values()}}
                for name, g in self.groups.items()
            },
        }


# why a client was refused, as the dispatch says it -> the kind counted and logged
_REFUSAL_KINDS = {
    "queue full": "queue_full",
    "all hosts down": "all_down",
    "retries exhausted": "retries_exhausted",
    "no active group": "no_group",
    "scheduler chose no host": "no_host",
    "local resource error": "local_error",
}


def somaxconn(path: str = "/proc/sys/net/core/somaxconn") -> int:
    """The kernel's cap on a listen backlog (Twisted's default of 50 makes bursts wait >= 1 s)."""
    try:
        with open(path) as f:
            return max(50, int(f.read().strip()))
    except (OSError, ValueError):
        return 4096


def withBacklog(description: str, backlog: int | None = None) -> str:
    """A C{tcp:}/C{ssl:} endpoint string with C{backlog=} set to somaxconn unless it says one."""
    kind = description.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog or somaxconn()}"


def _errorText(error: Any) -> str:
    for attr in ("errno", "osError"):
        number = getattr(error, attr, None)
        if isinstance(number, int) and number in errno.errorcode:
            return f"{errno.errorcode[number]}: {os.strerror(number)}"
    return str(error)


def _portAddress(port: Any) -> str | None:
    try:
        a = port.getHost()
        return f"{a.host}:{a.port}"
    except Exception:
        return None


def listenReason(failure: Any, listen: list[str]) -> str:
    """One line for a failed L{BalancedService.listenEndpoints}: the endpoint and the reason."""
    import errno as _errno

    from twisted.internet.defer import FirstError
    from twisted.internet.error import CannotListenError

    where = ""
    value = failure.value
    if isinstance(value, FirstError):
        if 0 <= value.index < len(listen):
            where = listen[value.index]
        value = value.subFailure.value
    if isinstance(value, CannotListenError):
        error = value.socketError
        code = getattr(error, "errno", None)
        if code == _errno.EADDRINUSE:
            why = "address already in use"
        elif code == _errno.EACCES:
            why = "permission denied"
        else:
            why = getattr(error, "strerror", None) or str(error)
    else:
        why = str(value) or type(value).__name__
    return f"{where}: {why}" if where else why

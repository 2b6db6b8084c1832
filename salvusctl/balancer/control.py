"""The balancer component: every balanced service of a host, and the live operations on them.

L{BalancerService} is the one C{IService} the builder returns.  It owns what the services share —
the timeout wheel, the periodic housekeeping (sticky-cache cleanup, DNS refresh, saving state to
the store), the watched backends files — and implements L{IBalancerControl}, the Python API the
admin exposes over XML-RPC, pages and the CLI.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.balancer import declare, persist, states
from salvusctl.balancer.backends import BackendsFile
from salvusctl.balancer.configdiff import diffServices
from salvusctl.balancer.dns import DNSCache
from salvusctl.balancer.fdbudget import DescriptorBudget, openDescriptors
from salvusctl.balancer.schedulers.sticky import Sticky
from salvusctl.balancer.service import BalancedService
from salvusctl.balancer.shared import SharedStates
from salvusctl.balancer.wheel import TimeoutWheel
from salvusctl.errors import ConfigError
from salvusctl.interfaces import IBalancerControl

__all__ = ["BalancerService", "ListenFailed"]

log = Logger()


def _listenerNames(svc: BalancedService) -> set[str]:
    from salvusctl.balancer.listeners import listenerName

    return {listenerName(svc.name, i) for i in range(len(svc.listen))}


class ListenFailed(Exception):
    """A balanced service added live could not listen on one of its endpoints (and was removed)."""


@implementer(IBalancerControl)
class BalancerService(MultiService):
    """All balanced services of one host.

    @param store: an L{IStore} for host states and counters (None: nothing persists).
    @param store_ready: a Deferred (or a callable returning one at start) that fires when the
        store is started; saved state is restored then.
    @param housekeeping: seconds between sticky cleanups, DNS refreshes and state saves.
    @param share: this front-end's name, to share host states with the other front-ends of the
        store (L{salvusctl.balancer.shared}); None: this balancer keeps them to itself.
    """

    def __init__(self, reactor: Any, declarations: list[declare.Balanced] = (), store: Any = None,
                 store_ready: Any = None, housekeeping: float = 10.0, resolver: Any = None,
                 rng: Any = None, wheel_resolution: float = 0.25, stop_timeout: float | None = None,
                 hard_stop: float | None = None, handover_path: str | None = None,
                 onHandedOver: Any = None, share: str | None = None):
        super().__init__()
        # None: a stop closes nothing itself (library use, tests); a number: stop drains first
        self.stop_timeout = stop_timeout
        self.hard_stop = max(hard_stop or 0.0, stop_timeout or 0.0)
        self.handover_path = handover_path
        self.onHandedOver = onHandedOver
        #: sockets and state taken from a predecessor host (L{salvusctl.balancer.hosthandover})
        self.takeover: Any = None
        self._successors: Any = None
        self._draining: Deferred | None = None
        self.reactor = reactor
        self.store = store
        self.store_ready = store_ready
        self.housekeeping = housekeeping
        self.rng = rng
        self.wheel = TimeoutWheel(reactor, wheel_resolution)
        self.budget = DescriptorBudget(reactor)
        self.resolver = resolver
        self.declared: dict[str, declare.Balanced] = {}
        self.balanced: dict[str, BalancedService] = {}
        self.dns: dict[str, DNSCache] = {}
        self.files: dict[str, BackendsFile] = {}
        self._loop: LoopingCall | None = None
        self._save_call: Any = None
        self._restored = store is None
        self.restoring: Deferred = succeed(None)
        self.shared: SharedStates | None = None
        if store is not None and share:
            self.shared = SharedStates(reactor, store, self.balanced, share)
        for decl in declarations:
            self._add(decl)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _add(self, decl: declare.Balanced) -> BalancedService:
        if decl.name in self.balanced:
            raise ConfigError(f"two balanced services are named {decl.name!r}")
        svc = BalancedService(self.reactor, decl, self.wheel, self.rng, self.budget)
        svc.onHostChange = self._hostChanged
        self.declared[decl.name] = decl
        self.balanced[decl.name] = svc
        self.dns[decl.name] = DNSCache(self.reactor, self.resolver, decl.dns_ttl)
        if decl.backends_file:
            self.files[decl.name] = BackendsFile(self.reactor, svc, decl.backends_file, decl.backends_poll)
        svc.setServiceParent(self)
        return svc

    def _inherit(self) -> None:
        """Give each service the sockets a predecessor handed over, by listener name."""
        takeover, self.takeover = self.takeover, None
        if takeover is None:
            return
        for name, sock in takeover.listeners:
            svc = self.balanced.get(name.split("#", 1)[0])
            if svc is None or name not in _listenerNames(svc):
                log.info("listener {name} is not in this host's config; closing it", name=name)
                sock.close()
                continue
            svc.inherited[name] = sock
        state = takeover.state or {}
        n = persist.applyState(self.balanced, state.get("hosts", []), state.get("groups", []))
        if n:
            log.info("continued the state of {n} balancer hosts from the previous host", n=n)
        # fresher than what the store holds: the previous host saves only every housekeeping period
        self._restored = True
        self.store_ready = None

    def privilegedStartService(self):
        self._inherit()
        super().privilegedStartService()

    def startService(self):
        self._inherit()
        restoring = self.store is not None and not self._restored
        self.sizeBudget()
        super().startService()
        self._serveSuccessors()
        for watcher in self.files.values():
            watcher.start()
        self.refreshDNS()
        self._loop = LoopingCall(self._housekeep)
        self._loop.clock = self.reactor
        self._loop.start(self.housekeeping, now=False)
        if restoring:
            ready = self.store_ready() if callable(self.store_ready) else self.store_ready
            if ready is None:
                ready = succeed(None)
            self.restoring = ready.addCallback(lambda _: self.restore())
            self.restoring.addErrback(lambda f: log.failure("restoring balancer state failed", f))
            if self.shared is not None:
                # what the other front-ends set wins over this one's last save
                self.restoring.addCallback(lambda _: self._startSharing())
        elif self.shared is not None:
            self._startSharing()

    def _startSharing(self) -> Deferred:
        d = self.shared.start()
        d.addErrback(lambda f: log.failure("reading the shared balancer states failed", f))
        return d

    def _serveSuccessors(self) -> None:
        if not self.handover_path or self._successors is not None:
            return
        from salvusctl.balancer.hosthandover import HostHandoverSource, serveSuccessors

        try:
            self._successors = serveSuccessors(self.reactor, self.handover_path,
                                               HostHandoverSource(self, self.onHandedOver))
        except Exception:
            log.failure("cannot serve the balancer hand-over socket {path}", path=self.handover_path)

    def stopServingSuccessors(self) -> None:
        port, self._successors = self._successors, None
        if port is not None:
            port.stopListening()

    def drainConnections(self) -> Deferred:
        """Stop accepting, let open connections finish for C{stop_timeout} seconds, close the
        rest gracefully, abort what remains at C{hard_stop}; fires when none is left."""
        if self._draining is not None:
            return self._draining
        from salvusctl.balancer.handover import Drainer

        self._draining = d = Deferred()
        self.stopListening()
        n = self.openConnections()
        if n:
            log.info("stopping: draining {n} open connections (up to {t:g} s)", n=n,
                     t=self.stop_timeout or 0.0)
        Drainer(self.reactor, self.openConnections, self.closeConnections, lambda: d.callback(None),
                self.stop_timeout or 0.0, self.hard_stop).start()
        return d

    def closeConnections(self, abort: bool = False) -> None:
        """Close every client connection of these services and its backend: gracefully (what is
        buffered is sent first), or abort (the hard stop)."""
        from salvusctl.balancer.proxy import Frontend

        mine = set(map(id, self.balanced.values()))
        for transport in set(self.reactor.getReaders()) | set(self.reactor.getWriters()):
            proto = getattr(transport, "protocol", None)
            proto = getattr(proto, "wrappedProtocol", proto)
            if not isinstance(proto, Frontend) or id(proto.service) not in mine:
                continue
            pair = [proto.transport]
            if proto.peer is not None:
                pair.append(proto.peer.transport)
            for t in pair:
                if abort:
                    t.abortConnection()
                else:
                    t.loseConnection()

    @inlineCallbacks
    def stopService(self):
        self.stopServingSuccessors()
        if self.stop_timeout is not None:
            yield self.drainConnections()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        for watcher in self.files.values():
            watcher.stop()
        if self.shared is not None:
            yield self.shared.stop()
        yield super().stopService()
        self.wheel.stop()
        self.budget.stop()
        if self.store is not None and self._restored:
            try:
                yield self.save()
            except Exception:
                log.failure("saving balancer state at stop failed")

    def stopListening(self) -> Deferred:
        """Stop accepting on every service, keep open connections running (the drain of a hand-over).

        The wheel keeps enforcing idle timeouts; L{openConnections} tells when the last one ended.
        """
        return DeferredList([svc.closeListeners() for svc in self.balanced.values()], consumeErrors=True)

    def sizeBudget(self) -> int:
        """Size the clients' descriptor budget from RLIMIT_NOFILE now (at start), warning when the
        declared maxconn cannot fit; returns the capacity (clients at once)."""
        services = list(self.balanced.values())
        declared = 0 if any(not s.maxconn for s in services) else sum(s.maxconn for s in services)
        checks = 2 * sum(1 for s in services for _ in s.hosts())  # a health and an agent check each
        self.budget.in_use = openDescriptors()
        return self.budget.plan(declared, checks)

    def openConnections(self) -> int:
        """Client connections currently open or queued across all services."""
        return sum(svc.open + svc.queued for svc in self.balanced.values())

    def _housekeep(self) -> None:
        """Periodic jobs; each step logs and survives its own error."""
        for svc in self.balanced.values():
            for group in svc.groups.values():
                if isinstance(group.scheduler, Sticky):
                    try:
                        group.scheduler.cleanup()
                    except Exception:
                        log.failure("sticky cleanup failed")
        try:
            self.refreshDNS()
        except Exception:
            log.failure("DNS refresh failed")
        if self.store is not None and self._restored:
            self.save().addErrback(lambda f: log.failure("saving balancer state failed", f))
        if self.shared is not None and self.shared.listening:
            self.shared.catchUp().addErrback(lambda f: log.warn(
                "cannot read the shared balancer states: {why}", why=f.getErrorMessage()))

    def refreshDNS(self) -> Deferred:
        """Resolve named backends whose cache entry expired (the housekeeping does this)."""
        ds = [self.dns[name].refresh([h for _, h in svc.hosts()]) for name, svc in self.balanced.items()]
        return DeferredList(ds, consumeErrors=True)

    def _dirty(self) -> None:
        """An operator changed something: save soon (once), so it survives even a crash."""
        if self.store is None or not self._restored or not self.running:
            return
        if self._save_call is None or not self._save_call.active():
            def run():
                self._save_call = None
                self.save().addErrback(lambda f: log.failure("saving balancer state failed", f))

            self._save_call = self.reactor.callLater(0.5, run)

    def save(self) -> Deferred:
        """Write host states, weights and counters to the store now."""
        return persist.saveState(self.store, self.balanced, self.reactor.seconds())

    def restore(self) -> Deferred:
        """Read saved states and counters and apply them (once, at start)."""
        d = persist.loadState(self.store)

        def apply(result):
            hosts, groups = result
            n = persist.applyState(self.balanced, hosts, groups)
            self._restored = True
            if n:
                log.info("restored the state of {n} balancer hosts", n=n)
            return n

        def failed(failure):
            self._restored = True
            return failure

        d.addCallbacks(apply, failed)
        return d

    def _hostChanged(self, svc: BalancedService, host: Any, what: str) -> None:
        if what in ("up", "down"):
            self._share(svc.name, host)

    def _share(self, service: str, host: Any) -> None:
        """Tell the other front-ends of the store about C{host}'s state now (see L{SharedStates})."""
        if self.shared is not None and self.running and host.group is not None:
            self.shared.publish(service, host.group.name, host)

    # -- IBalancerControl --------------------------------------------------------------------------

    def _service(self, service: str) -> BalancedService:
        try:
            return self.balanced[service]
        except KeyError:
            raise KeyError(f"no balanced service {service!r}")

    def snapshot(self) -> dict:
        """Every service's config, state and counters as plain data (see docs/admin.md)."""
        return {"services": {name: svc.info() for name, svc in self.balanced.items()},
                "wheel": {"entries": self.wheel.size, "resolution": self.wheel.resolution},
                "descriptors": self.budget.info()}

    def addHost(self, service, group, address, port, weight=1, name=None, **options):
        """Add a backend host to a group (checked before it takes traffic)."""
        svc = self._service(service)
        try:
            host = svc.addHost(group, address, int(port), int(weight), name, **options)
        except ConfigError as e:
            raise ValueError(e.message)
        self.dns[service].refresh([host])
        return host.name

    def removeHost(self, service, group, hostname):
        """Remove a backend host; its open connections finish."""
        self._service(service).removeHost(group, hostname)

    def removeAllHosts(self, service, group):
        """Remove every host of a group; returns how many went."""
        svc = self._service(service)
        names = list(svc.group(group).hosts)
        for name in names:
            svc.removeHost(group, name)
        return len(names)

    def setHostState(self, service, group, hostname, state):
        """Set C{'up'} (admin up), C{'drain'} or C{'maint'}."""
        svc = self._service(service)
        host = svc.host(group, hostname)
        host.setAdmin(state)
        self._dirty()
        self._share(service, host)
        log.info("{service}/{group}/{host}: admin state {state}", service=service, group=group,
                 host=hostname, state=state)
        if host.state == states.UP:
            svc._serveQueue()

    def enable(self, service, group, hostname):
        """Admin up (pydir's C{enable})."""
        self.setHostState(service, group, hostname, states.UP)

    def disable(self, service, group, hostname):
        """Admin down: maintenance (pydir's C{disable})."""
        self.setHostState(service, group, hostname, states.MAINT)

    def drain(self, service, group, hostname):
        """No new connections; the open ones finish."""
        self.setHostState(service, group, hostname, states.DRAIN)

    def setWeight(self, service, group, hostname, weight):
        """Change a host's weight (> 0)."""
        host = self._service(service).host(group, hostname)
        host.setWeight(int(weight))
        self._dirty()
        self._share(service, host)

    def setScheduler(self, service, group, scheduler, options=None):
        """Switch a group's scheduler live."""
        try:
            self._service(service).setScheduler(group, scheduler, options)
            self._dirty()
        except ConfigError as e:
            raise ValueError(e.message)

    def setActiveGroup(self, service, group):
        """Switch the group that takes new connections."""
        self._service(service).setActiveGroup(group)
        self._dirty()

    def addGroup(self, service, group, scheduler="roundrobin", options=None):
        """Add an empty group to a service."""
        try:
            self._service(service).addGroup(group, scheduler, options)
        except ConfigError as e:
            raise ValueError(e.message)

    def removeGroup(self, service, group):
        """Remove a group that is not active."""
        self._service(service).removeGroup(group)

    def retryHost(self, service, group, hostname) -> Deferred:
        """Check a bad host now; readmit it on one good check.  Fires with True if it is up."""
        return self._service(service).retryHost(group, hostname)

    def addBalancedService(self, decl: declare.Balanced) -> Deferred:
        """Add and start a balanced service live; fires when it listens.

        A bad declaration, or a name already taken, is a ValueError and adds nothing.
        """
        declare.checkAdded(decl, self.balanced)
        svc = self._add(decl)
        if self.running:
            self.dns[decl.name].refresh([h for _, h in svc.hosts()])
            if decl.name in self.files:
                self.files[decl.name].start()
        if svc.listening is None:
            return succeed([])
        return self._listenedOrUndone(svc, decl)

    @inlineCallbacks
    def _listenedOrUndone(self, svc: BalancedService, decl: declare.Balanced):
        """A service added live listens on every endpoint, or is taken back: the service logs why
        a listener failed and would keep running without it."""
        ports = yield svc.listening
        if len(svc.ports) < len(decl.listen):
            yield self.removeBalancedService(decl.name)
            why = svc.listenError or f"{decl.listen!r}"
            raise ListenFailed(f"service {decl.name!r} cannot listen on {why}; nothing was added")
        return ports

    def removeBalancedService(self, service) -> Deferred:
        """Stop listening for a service and forget it (open connections finish)."""
        svc = self._service(service)
        del self.balanced[service]
        self.declared.pop(service, None)
        self.dns.pop(service, None)
        watcher = self.files.pop(service, None)
        if watcher is not None:
            watcher.stop()
        return maybeDeferred(svc.disownServiceParent)

    def dumpConfig(self) -> dict:
        """The running configuration as data (same shape as a declaration's C{asData})."""
        return {name: svc.runningConfig() for name, svc in self.balanced.items()}

    def diff(self, declared: list[declare.Balanced] | None = None) -> list[dict]:
        """What differs between the running state and the declared config (pydir's compareconf).

        Each difference is C{{"op": ..., "service": ..., ...}}; ops: add-service, remove-service,
        add-group, remove-group, add-host, remove-host, set-weight, set-scheduler, set-active,
        set-state (a host not in admin state up).
        """
        wanted = declared if declared is not None else list(self.declared.values())
        return diffServices(
            {d.name: d.asData() for d in wanted},
            {name: svc.runningConfig() for name, svc in self.balanced.items()},
            lambda service, group, host: self.balanced[service].groups[group].hosts[host].admin,
            up=states.UP)

    def reconcile(self, declared: list[declare.Balanced] | None = None) -> Deferred:
        """Apply L{diff}: make the running state match the declared config.  Fires with the ops."""
        wanted = {d.name: d for d in (declared if declared is not None else self.declared.values())}
        ops = self.diff(list(wanted.values()))
        ds = []
        for op in ops:
            kind, name = op["op"], op["service"]
            if kind == "add-service":
                ds.append(self.addBalancedService(wanted[name]))
            elif kind == "remove-service":
                ds.append(self.removeBalancedService(name))
        for op in ops:
            kind, name = op["op"], op["service"]
            if kind in ("add-service", "remove-service"):
                continue
            svc = self.balanced[name]
            decl = wanted[name]
            groups = {g.name: g for g in decl.groups}
            if kind == "add-group":
                g = groups[op["group"]]
                svc.addGroup(g.name, g.scheduler, g.scheduler_options, g.health, g.agent, g.slowstart)
                svc.groups[g.name].deploy = g.deploy
                svc.groups[g.name].cluster_deploy = g.cluster_deploy
                svc.groups[g.name].fixed = {svc.addServer(g.name, server).name for server in g.servers}
            elif kind == "set-scheduler":
                g = groups[op["group"]]
                svc.setScheduler(g.name, g.scheduler, g.scheduler_options)
            elif kind == "remove-host":
                svc.removeHost(op["group"], op["host"])
            elif kind == "add-host":
                server = next(s for s in groups[op["group"]].servers if s.key() == op["host"])
                self.dns[name].refresh([svc.addServer(op["group"], server)])
            elif kind == "set-weight":
                svc.host(op["group"], op["host"]).setWeight(op["weight"])
            elif kind == "set-state":
                svc.host(op["group"], op["host"]).setAdmin(states.UP)
        for op in ops:
            if op["op"] == "set-active":
                self.balanced[op["service"]].setActiveGroup(op["group"])
        for op in ops:
            if op["op"] == "remove-group":
                self.balanced[op["service"]].removeGroup(op["group"])
        if declared is not None:
            self.declared = dict(wanted)
        d = DeferredList(ds, consumeErrors=True)
        d.addCallback(lambda _: ops)
        return d


"""The C{salvus.*} XML-RPC namespace: what supervisord lacks.

Balancer verbs (L{IBalancerControl}), rolling restarts of deploys (L{ISupervisor.restartDeploy}),
monitor queries (L{IMonitor}), alerts, store retention and config-vs-running diff / reconcile.
A host without the service answers C{NO_SERVICE} (1002) with a message naming it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.xmlrpc import Fault

import salvusctl
from salvusctl.admin import shapes
from salvusctl.admin.auth import currentUser
from salvusctl.admin.balancerlisten import checkListen
from salvusctl.admin.extensions import IAlertSource, IReconcilable
from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.rpcbase import Namespace, operator, serviceCall
from salvusctl.admin.verbs import Reply

__all__ = ["SalvusNamespace", "HOST_STATES"]

# CLI words -> IBalancerControl.setHostState values
log = Logger()

HOST_STATES = {"up": "up", "drain": "drain", "down": "maint", "maint": "maint"}


def _acted(fn, *args) -> defer.Deferred:
    """A service action (L{serviceCall}) whose verb answers True once it is done."""
    return serviceCall(fn, *args).addCallback(lambda _: True)


def _reread(fn) -> defer.Deferred:
    """Call a reloader method; a bad config file becomes CANT_REREAD with its one-line message."""
    from salvusctl.errors import ConfigError

    def bad(failure):
        failure.trap(ConfigError)
        raise rpcFault(Faults.CANT_REREAD, str(failure.value))

    return defer.maybeDeferred(fn).addErrback(bad)


class _BalancerReconcile:
    """The real balancer's C{diff()} / C{reconcile()} (lists of operations) as L{IReconcilable}."""

    def __init__(self, balancer: Any):
        self.balancer = balancer

    def configDiff(self) -> dict[str, list[str]]:
        return shapes.balancerDiff(self.balancer.diff())

    def reconcile(self) -> defer.Deferred:
        return defer.maybeDeferred(self.balancer.reconcile).addCallback(shapes.balancerDiff)


def _deployNames(supervisor: Any) -> list[str]:
    """Every deploy of the supervisor, in its start order (C{groups()} when it has it)."""
    groups = getattr(supervisor, "groups", None)
    if callable(groups):
        return [d for names in groups().values() for d in names]
    names: list[str] = []
    for info in supervisor.instanceInfos():
        name = str(info.get("deploy") or str(info["name"]).partition(":")[0])
        if name not in names:
            names.append(name)
    return names


def _groupDeploys(supervisor: Any, group: str) -> list[str]:
    """The deploys of a supervisor group (a deploy's C{group=}, its own name by default)."""
    groups = getattr(supervisor, "groups", None)
    if callable(groups):
        return list(groups().get(group, []))
    names: list[str] = []
    for info in supervisor.instanceInfos():
        name = str(info.get("deploy") or str(info["name"]).partition(":")[0])
        if str(info.get("group") or name) == group and name not in names:
            names.append(name)
    return names


def _atLeastOne(batch: int) -> int:
    if batch < 1:
        raise rpcFault(Faults.BAD_ARGUMENTS, f"batch must be at least 1, not {batch}")
    return batch


class SalvusNamespace(Namespace):
    """Salvus's own methods."""

    def __init__(self, state: Any):
        super().__init__(state)
        self._restarting: set[str] = set()

    # -- the host --------------------------------------------------------------------------------

    def xmlrpc_hostInfo(self) -> Reply[dict]:
        """The host's name, version and which services it runs

        @return name, version, services (array of component names)
        """
        return {
            "name": self.state.host_name,
            "version": salvusctl.__version__,
            "services": sorted(k for k, v in self.state.services.items() if v is not None),
        }

    def xmlrpc_whoami(self, request) -> Reply[dict]:
        """The calling user's name and role

        @return name, role
        """
        user = currentUser(request)
        return {"name": user.name, "role": user.role}

    xmlrpc_whoami.takesRequest = True

    # -- balancer --------------------------------------------------------------------------------

    def _balancer(self):
        return self.state.rpcService("balancer")

    def xmlrpc_balancerSnapshot(self) -> Reply[dict]:
        """The balancer's running configuration and counters

        @return services, each with groups, each with hosts and their counters
        """
        return serviceCall(self._balancer().snapshot)

    @operator
    def xmlrpc_balancerAddHost(
        self,
        service: str,
        group: str,
        address: str,
        port: int,
        weight: int = 1,
        name: str = "",
    ) -> Reply[bool]:
        """Add a backend host to a group

        @param service the balanced service
        @param group the group within it
        @param address host address
        @param port host port
        @param weight relative weight
        @param name host name (default address:port)
        @return True unless error
        """
        return _acted(self._balancer().addHost, service, group, address, port, weight, name or None)

    @operator
    def xmlrpc_balancerRemoveHost(self, service: str, group: str, host: str) -> Reply[bool]:
        """Remove a backend host (its open connections finish)

        @param service the balanced service
        @param group the group
        @param host the host's name
        @return True unless error
        """
        return _acted(self._balancer().removeHost, service, group, host)

    @operator
    def xmlrpc_balancerSetState(self, service: str, group: str, host: str, state: str) -> Reply[bool]:
        """Set a host up, drain or down (maint)

        @param service the balanced service
        @param group the group
        @param host the host's name
        @param state up, drain, down or maint
        @return True unless error
        """
        if state not in HOST_STATES:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"bad state {state!r}: use up, drain or down")
        return _acted(self._balancer().setHostState, service, group, host, HOST_STATES[state])

    @operator
    def xmlrpc_balancerSetWeight(self, service: str, group: str, host: str, weight: int) -> Reply[bool]:
        """Change a host's weight

        @param service the balanced service
        @param group the group
        @param host the host's name
        @param weight the new weight
        @return True unless error
        """
        return _acted(self._balancer().setWeight, service, group, host, weight)

    @operator
    def xmlrpc_balancerSetScheduler(self, service: str, group: str, scheduler: str) -> Reply[bool]:
        """Switch a group's scheduler live

        @param service the balanced service
        @param group the group
        @param scheduler the scheduler's name
        @return True unless error
        """
        return _acted(self._balancer().setScheduler, service, group, scheduler)

    def _optional(self, name: str, verb: str):
        """A balancer method beyond L{IBalancerControl}; a clear fault when this balancer lacks it."""
        method = getattr(self._balancer(), name, None)
        if method is None:
            raise rpcFault(Faults.NO_SERVICE, f"this host's balancer cannot {verb}")
        return method

    @operator
    @defer.inlineCallbacks
    def xmlrpc_balancerRemoveAllHosts(self, service: str, group: str) -> Reply[int]:
        """Remove every host of a group (their open connections finish); returns how many

        @param service the balanced service
        @param group the group
        @return hosts removed
        """
        balancer = self._balancer()
        snapshot = yield serviceCall(balancer.snapshot)
        names = [
            h.get("name")
            for s, g, h in shapes.balancerHosts(snapshot)
            if s.get("name") == service and g.get("name") == group
        ]
        if names or any(
            s.get("name") == service and g.get("name") == group
            for s in shapes.balancerServices(snapshot)
            for g in shapes.balancerGroups(s)
        ):
            for name in names:
                yield serviceCall(balancer.removeHost, service, group, name)
            return len(names)
        raise rpcFault(Faults.BAD_NAME, f"{service}/{group}")

    @operator
    def xmlrpc_balancerRetryHost(self, service: str, group: str, host: str) -> Reply[bool]:
        """Retry a host marked down by its checks now, instead of at its next check

        @param service the balanced service
        @param group the group
        @param host the host's name
        @return True unless error
        """
        return _acted(self._optional("retryHost", "retry a host"), service, group, host)

    @operator
    def xmlrpc_balancerAddService(self, service: str, listen: list) -> Reply[bool]:
        """Add a balanced service listening on endpoint strings, each with an explicit interface

        Nothing is registered when an endpoint is refused or cannot listen.

        @param service the new service's name
        @param listen endpoint strings, e.g. ['tcp:8080:interface=127.0.0.1']
        @return True unless error
        """
        try:
            listen = checkListen(listen)
        except ValueError as e:
            raise rpcFault(Faults.BAD_ARGUMENTS, str(e))
        from salvusctl.balancer.control import ListenFailed
        from salvusctl.balancer.declare import Balanced, Group

        method = self._optional("addBalancedService", "add a service")
        # A service added live starts with one empty round-robin group, "default": add hosts to
        # it with balancerAddHost(service, "default", …).
        declaration = Balanced(service, listen=list(listen), groups=[Group("default")])

        def cannotListen(failure):
            failure.trap(ListenFailed)
            raise rpcFault(Faults.FAILED, str(failure.value))

        return serviceCall(method, declaration).addCallbacks(lambda _: True, cannotListen)

    @operator
    def xmlrpc_balancerRemoveService(self, service: str) -> Reply[bool]:
        """Remove a balanced service (stops listening; open connections finish)

        @param service the service
        @return True unless error
        """
        method = self._optional("removeBalancedService", "remove a service")
        return _acted(method, service)

    @operator
    def xmlrpc_balancerAddGroup(self, service: str, group: str, scheduler: str = "roundrobin") -> Reply[bool]:
        """Add a group of hosts to a service

        @param service the service
        @param group the new group's name
        @param scheduler the group's scheduler
        @return True unless error
        """
        return _acted(self._optional("addGroup", "add a group"), service, group, scheduler)

    @operator
    def xmlrpc_balancerRemoveGroup(self, service: str, group: str) -> Reply[bool]:
        """Remove a group and its hosts from a service

        @param service the service
        @param group the group
        @return True unless error
        """
        return _acted(self._optional("removeGroup", "remove a group"), service, group)

    # -- rolling restarts ------------------------------------------------------------------------

    def _supervisor(self):
        return self.state.rpcService("supervisor")

    def rollingRestart(self, deploys: list[str], batch: int) -> defer.Deferred:
        """Restart C{deploys} one after another, each C{batch} instances at a time.

        The supervisor's before-stop hooks drain each instance in the balancer before it is
        signalled and the balancer takes it back once it is ready, so clients of a balanced deploy
        see no failed request.  A deploy already being restarted is refused (FAILED): two rolling
        restarts interleaved could stop every instance at once.  A batch that fails to come back
        stops the restart there, with the other instances still serving.
        """
        sup = self._supervisor()
        busy = [d for d in deploys if d in self._restarting]
        if busy:
            raise rpcFault(Faults.FAILED, f"{', '.join(busy)}: a restart is already in progress")
        self._restarting.update(deploys)

        def stopped(failure, name: str):
            if failure.check(Fault):
                return failure
            while failure.check(defer.FirstError):
                failure = failure.value.subFailure
            why = failure.getErrorMessage()
            log.warn("rolling restart of {name} stopped: {why}", name=name, why=why)
            raise rpcFault(Faults.ABNORMAL_TERMINATION, f"restart of {name} stopped: {why}")

        @defer.inlineCallbacks
        def run():
            done = []
            for name in deploys:
                try:
                    yield serviceCall(sup.restartDeploy, name, batch).addErrback(stopped, name)
                finally:
                    self._restarting.discard(name)
                done.append(name)
            return done

        def release(result):
            self._restarting.difference_update(deploys)
            return result

        return run().addBoth(release)

    @operator
    def xmlrpc_restartDeploy(self, name: str, batch: int = 1) -> Reply[list]:
        """Rolling restart of a deploy: C{batch} instances at a time, each batch ready before the
        next is drained and stopped

        @param name the deploy (not an instance: use supervisor.stopProcess/startProcess)
        @param batch instances restarted at once (at least 1)
        @return the deploys restarted
        """
        batch = _atLeastOne(batch)
        if name not in _deployNames(self._supervisor()):
            raise rpcFault(Faults.BAD_NAME, f"no deploy {name!r}")
        return self.rollingRestart([name], batch)

    @operator
    def xmlrpc_restartGroup(self, group: str, batch: int = 1) -> Reply[list]:
        """Rolling restart of every deploy of a group, one deploy after another

        @param group the group (a deploy's group, its own name when it declares none)
        @param batch instances restarted at once (at least 1)
        @return the deploys restarted, in order
        """
        batch = _atLeastOne(batch)
        deploys = _groupDeploys(self._supervisor(), group)
        if not deploys:
            raise rpcFault(Faults.BAD_NAME, f"no group {group!r}")
        return self.rollingRestart(deploys, batch)

    @operator
    def xmlrpc_restartAll(self, batch: int = 1) -> Reply[list]:
        """Rolling restart of every deploy, one deploy after another in start order

        @param batch instances restarted at once (at least 1)
        @return the deploys restarted, in order
        """
        batch = _atLeastOne(batch)
        return self.rollingRestart(_deployNames(self._supervisor()), batch)

    # -- monitor ---------------------------------------------------------------------------------

    def _monitor(self):
        return self.state.rpcService("monitor")

    def xmlrpc_monitorLatest(self) -> Reply[dict]:
        """The latest sample of every instance

        @return instance name -> sample struct
        """
        return serviceCall(self._monitor().latest)

    def xmlrpc_monitorHistory(self, name: str, since: float, until: float = 0) -> Reply[list]:
        """One instance's samples between two times (epoch seconds; negative since = seconds ago)

        @param name the instance
        @param since start time
        @param until end time (0 for now)
        @return samples, oldest first
        """
        if since < 0:
            since = self.state.clock.seconds() + since
        return serviceCall(self._monitor().history, name, since, until or None)

    def xmlrpc_monitorLeastLoaded(self, deploy: str) -> Reply[str]:
        """The least-loaded running instance of a deploy ('' when none)

        @param deploy the deploy
        @return an instance name
        """
        d = serviceCall(self._monitor().leastLoaded, deploy)
        return d.addCallback(lambda n: n or "")

    # -- alerts ----------------------------------------------------------------------------------

    def xmlrpc_alerts(self, include_cleared: bool = False) -> Reply[list]:
        """Active alerts (and cleared ones when asked), newest first

        @param include_cleared include alerts that have recovered
        @return alert structs
        """
        source = self.state.rpcService("alerts")
        if not IAlertSource.providedBy(source):
            raise rpcFault(Faults.NO_SERVICE, "this host's alerts service cannot list alerts")
        return serviceCall(source.alerts, bool(include_cleared))

    def xmlrpc_alertNotifications(self, include_delivered: bool = False) -> Reply[list]:
        """E-mail and webhook notices of this host not delivered yet (and delivered ones when
        asked), newest first, with their state: queued, retrying, expired or delivered

        @param include_delivered include the delivered notices still kept
        @return notice structs: id, action, title, state, attempts, created_at, next_at,
            expires_at, delivered_at, expired_at (0 when not), last_error ('' when none)
        """
        source = self.state.rpcService("alerts")
        if not hasattr(source, "notifications"):
            raise rpcFault(Faults.NO_SERVICE, "this host's alerts service queues no notifications")

        def plain(notices):
            return [{k: (("" if k == "last_error" else 0.0) if v is None else v) for k, v in n.items()}
                    for n in notices]

        return serviceCall(source.notifications, bool(include_delivered)).addCallback(plain)

    # -- store retention -------------------------------------------------------------------------

    def _store(self):
        if self.state.store is None:
            raise rpcFault(Faults.NO_SERVICE, "this host has no store")
        return self.state.store

    def xmlrpc_storeInfo(self) -> Reply[dict]:
        """The store's URL, dialect, and how many status samples it keeps since when

        @return url, dialect, samples, oldest, newest
        """
        store = self._store()
        d = store.runQuery("SELECT COUNT(*), MIN(timestamp), MAX(timestamp) FROM status")

        def shape(rows):
            count, oldest, newest = rows[0] if rows else (0, None, None)
            return {
                "url": store.url,
                "dialect": store.sql.name,
                "samples": int(count or 0),
                "oldest": float(oldest or 0),
                "newest": float(newest or 0),
            }

        return d.addCallback(shape)

    @operator
    def xmlrpc_storePrune(self, older_than: float) -> Reply[int]:
        """Delete status samples older than a number of seconds; returns how many remain

        @param older_than age in seconds (at least 60)
        @return samples left
        """
        age = older_than
        if age < 60:
            raise rpcFault(Faults.BAD_ARGUMENTS, "older_than must be at least 60 seconds")
        store = self._store()
        cutoff = self.state.clock.seconds() - age
        d = store.runOperation("DELETE FROM status WHERE timestamp < ?", (cutoff,))
        d.addCallback(lambda _: store.runQuery("SELECT COUNT(*) FROM status"))
        return d.addCallback(lambda rows: int(rows[0][0]))

    # -- config vs running -----------------------------------------------------------------------

    def _reconcilables(self) -> list[tuple[str, Any]]:
        out = []
        for name in ("supervisor", "balancer"):
            service = self.state.services.get(name)
            if IReconcilable.providedBy(service):
                out.append((name, service))
            elif name == "balancer" and callable(getattr(service, "diff", None)) and callable(
                getattr(service, "reconcile", None)
            ):
                out.append((name, _BalancerReconcile(service)))
        return out

    def xmlrpc_diff(self) -> Reply[dict]:
        """What differs between the config file (read again now, in a child process; cached while
        the file is unchanged) and what runs, per component

        @return component -> {added, changed, removed[, restart]}
        """
        reloader = self.state.reloader()
        if reloader is not None:
            return _reread(reloader.reread)
        return self._servicesDiff()

    @defer.inlineCallbacks
    def _servicesDiff(self):
        out: dict[str, Any] = {}
        for name, service in self._reconcilables():
            out[name] = yield serviceCall(service.configDiff)
        return out

    @operator
    def xmlrpc_reconcile(self) -> Reply[dict]:
        """Read the config file again and make what runs match it; returns the differences found,
        per component (those marked restart need a host restart and were left alone)

        @return component -> {added, changed, removed[, restart]}
        """
        reloader = self.state.reloader()
        if reloader is not None:
            return _reread(reloader.reconcile)
        return self._servicesReconcile()

    @defer.inlineCallbacks
    def _servicesReconcile(self):
        out: dict[str, Any] = {}
        for name, service in self._reconcilables():
            out[name] = yield serviceCall(service.reconcile)
        return out

"""The monitor's declaration (C{Monitor(...)} in a C{.tac}) and its builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.logger import Logger

from salvusctl.errors import ConfigError
from salvusctl.interfaces import ISupervisor
from salvusctl.monitor.retention import DEFAULT_RETENTION, TIME_COLUMNS, RetentionPolicy
from salvusctl.monitor.service import MonitorService

__all__ = ["Monitor", "buildMonitor", "bindLoadSources"]

log = Logger()


@dataclass
class Monitor:
    """Sample every supervised instance and the host into the store.

    @ivar interval: seconds between samples (default 5).
    @ivar disk_interval: seconds between deploy-directory size walks.
    @ivar buffer_rows: rows kept while the store is unreachable (oldest dropped beyond).
    @ivar deploy_dirs: {deploy: directory} whose size is sampled (besides each instance's
        C{directory}).
    @ivar memcached: a client endpoint string (C{tcp:127.0.0.1:11211}) to publish the latest
        status to, or None.
    @ivar retention: {table: RetentionPolicy or {"max_age": s, "max_rows": n}} overriding the
        defaults; C{retention_interval} seconds between runs.
    @ivar address: the address this host's instances are reached on (stored in services rows and
        used to match balancer backends).
    @ivar load_source: a L{MonitorLoadSource} also given to a balanced service's least-load
        scheduler (C{scheduler_options={"source": src}}); the builder binds it to this monitor.
    @ivar deploys: the deploys whose instances are sampled (None: every deploy).
    @ivar mounts: sample the usage of the host's mounts (a host metric).
    @ivar synchronous_commit: on PostgreSQL, wait for each tick's commit to be flushed to the
        server's disk.  Off by default: a server crash may then lose the last fraction of a
        second of samples already acknowledged, and every tick's commit is much cheaper.

    A reload applies every field live except C{address}, C{memcached}, C{memcached_expire} and
    whether there is a C{load_source} (see L{salvusctl.monitor.reload}).
    """

    component: ClassVar[str] = "monitor"
    interval: float = 5.0
    disk_interval: float = 60.0
    buffer_rows: int = 100_000
    deploy_dirs: dict[str, str] = field(default_factory=dict)
    memcached: str | None = None
    memcached_expire: int = 60
    retention: dict[str, Any] = field(default_factory=dict)
    retention_interval: float = 3600.0
    address: str | None = None
    load_source: Any = None
    deploys: list[str] | None = None
    mounts: bool = True
    synchronous_commit: bool = False

    def validate(self, host) -> None:
        for name in ("interval", "disk_interval", "retention_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"Monitor({name}=…) must be a positive number of seconds, not {value!r}")
        rows = self.buffer_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ConfigError(f"Monitor(buffer_rows=…) must be a positive integer, not {self.buffer_rows!r}")
        if not isinstance(self.deploy_dirs, dict):
            raise ConfigError("Monitor(deploy_dirs=…) must be a dict {deploy: directory}")
        if self.memcached is not None:
            from salvusctl.endpoints import parseEndpoint

            if not isinstance(self.memcached, str) or ":" not in self.memcached:
                raise ConfigError(
                    "Monitor(memcached=…) must be an endpoint like 'tcp:127.0.0.1:11211',"
                    f" not {self.memcached!r}"
                )
            parseEndpoint(self.memcached)
        if self.deploys is not None and (
            isinstance(self.deploys, str) or not all(isinstance(d, str) and d for d in self.deploys)
        ):
            raise ConfigError(f"Monitor(deploys=…) must be a list of deploy names, not {self.deploys!r}")
        for flag in ("mounts", "synchronous_commit"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"Monitor({flag}=…) must be True or False, not {getattr(self, flag)!r}")
        if self.load_source is not None and not hasattr(self.load_source, "bind"):
            raise ConfigError("Monitor(load_source=…) must be a MonitorLoadSource()")
        self.policies()

    def policies(self) -> dict[str, RetentionPolicy]:
        """The retention policies: the defaults, overridden per table by C{retention}."""
        out = dict(DEFAULT_RETENTION)
        for table, policy in (self.retention or {}).items():
            if table not in TIME_COLUMNS:
                raise ConfigError(
                    f"Monitor(retention=…): unknown table {table!r}; one of {sorted(TIME_COLUMNS)}"
                )
            try:
                if isinstance(policy, dict):
                    policy = RetentionPolicy(**policy)
                elif policy is not None and not isinstance(policy, RetentionPolicy):
                    raise ValueError(f"give a dict or RetentionPolicy, not {policy!r}")
            except (TypeError, ValueError) as e:
                raise ConfigError(f"Monitor(retention={{{table!r}: …}}): {e}")
            if policy is None:
                out.pop(table, None)
            else:
                out[table] = policy
        return out


def findSupervisor(service) -> Any:
    """The L{ISupervisor} behind the supervisor component's service (itself or an attribute)."""
    if service is None:
        return None
    if ISupervisor.providedBy(service):
        return service
    for attr in ("supervisor", "_supervisor"):
        candidate = getattr(service, attr, None)
        if candidate is not None and ISupervisor.providedBy(candidate):
            return candidate
    return None


def wireLogHook(service, supervisor, monitor: MonitorService) -> bool:
    """Give the supervisor the monitor's per-line store hook (C{setStoreHook}); True if it took it.

    The supervisor's builder cannot know the monitor (it is built first): the hook is plugged in
    here, and the supervisor hands it to every instance log, made already or later.
    """
    for holder in (supervisor, service):
        method = getattr(holder, "setStoreHook", None) if holder is not None else None
        if method is not None:
            method(monitor.storeLogLine)
            return True
    return False


def buildMonitor(context, declarations: list[Monitor]) -> MonitorService:
    """One monitor per host: wire it to the supervisor (states, log hook) and the balancer."""
    if len(declarations) > 1:
        raise ConfigError("a host has one Monitor(...); merge the declarations")
    decl = declarations[0] if declarations else Monitor()
    reactor = context.reactor
    publisher = None
    if decl.memcached:
        from twisted.internet.endpoints import clientFromString

        from salvusctl.monitor.memcache import MemcachePublisher

        publisher = MemcachePublisher(
            reactor, clientFromString(reactor, decl.memcached), expire=decl.memcached_expire
        )
    supervisor = findSupervisor(context.services.get("supervisor"))
    monitor = MonitorService(
        reactor,
        context.store,
        supervisor,
        host_name=context.host.name,
        interval=decl.interval,
        disk_interval=decl.disk_interval,
        buffer_rows=decl.buffer_rows,
        deploy_dirs=decl.deploy_dirs,
        publisher=publisher,
        retention=decl.policies(),
        retention_interval=decl.retention_interval,
        address=decl.address,
        deploys=decl.deploys,
        mounts=decl.mounts,
        synchronous_commit=decl.synchronous_commit,
    )
    wireLogHook(context.services.get("supervisor"), supervisor, monitor)
    # The balancer's least-load groups: give their load sources this host's instance loads.
    addresses = [decl.address] if decl.address else []
    if decl.load_source is not None:
        decl.load_source.bind(monitor, addresses)
    bindLoadSources(context.services.get("balancer"), monitor, addresses)
    return monitor


def bindLoadSources(balancer: Any, monitor: Any, addresses: list[str]) -> int:
    """Bind every unbound L{MonitorLoadSource} the balancer's least-load groups were given.

    The balancer is built before the monitor, so a C{.tac} hands a least-load group an unbound
    C{MonitorLoadSource()}; binding it here means C{scheduler_options={"source":
    MonitorLoadSource()}} alone wires the group to this host's samples (passing the same source to
    C{Monitor(load_source=…)} is no longer needed).  Returns how many sources were bound.
    """
    from salvusctl.monitor.loadsource import MonitorLoadSource

    bound = 0
    for service in getattr(balancer, "balanced", {}).values():
        for group in getattr(service, "groups", {}).values():
            source = getattr(getattr(group, "scheduler", None), "source", None)
            if isinstance(source, MonitorLoadSource) and not source.bound:
                source.bind(monitor, addresses)
                bound += 1
    return bound

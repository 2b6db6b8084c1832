"""The monitor's builder (its declaration, C{Monitor}, lives in L{salvusctl.monitor.declare})."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from salvusctl.errors import ConfigError
from salvusctl.interfaces import supervisorOf
from salvusctl.monitor.declare import Monitor
from salvusctl.monitor.service import MonitorService

__all__ = ["Monitor", "buildMonitor", "wireMonitor", "bindLoadSources"]

log = Logger()


#: Kept for callers of the monitor's old helper; L{supervisorOf} is the one lookup.
findSupervisor = supervisorOf


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


def buildMonitor(context: Any, declarations: list[Monitor], supervisor: Any = None) -> MonitorService:
    """One monitor per host, observing the states of the C{supervisor} service; L{wireMonitor}
    plugs it in."""
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
    monitor = MonitorService(
        reactor,
        context.store,
        supervisorOf(supervisor),
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
    if decl.load_source is not None:
        decl.load_source.bind(monitor, [decl.address] if decl.address else [])
    return monitor


def wireMonitor(context, monitor: MonitorService) -> None:
    """The host's wiring phase for the monitor: the supervisor's per-line log hook, and this
    host's instance loads for the balancer's least-load groups."""
    service = context.services.get("supervisor")
    wireLogHook(service, supervisorOf(service), monitor)
    address = getattr(monitor, "address", None)
    bindLoadSources(context.services.get("balancer"), monitor, [address] if address else [])


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

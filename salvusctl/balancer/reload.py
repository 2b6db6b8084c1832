"""Reloading the balancer: the services, groups and hosts a config adds, changes and removes.

The balancer's row in L{salvusctl.host.components} names this module; the host's generic
reloader (L{salvusctl.host.reload}) calls L{entries} and L{applyEntries} as it does every component's.
L{entries} reports C{BalancerService.diff(declared)} as names; L{applyEntries} runs
C{BalancerService.reconcile}, which touches only what differs, then wires what the reload added as
the builders wire it at start: a least-load group's C{MonitorLoadSource} is bound to the running
monitor, and a group that takes its hosts from a deploy gets its L{DeployPool}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet import defer
from twisted.logger import Logger

from salvusctl.admin.shapes import balancerDiff
from salvusctl.host.components import component, peers

__all__ = ["entries", "applyEntries"]

log = Logger()


def entries(context: Any, running: list[Any], declared: list[Any]) -> dict[str, dict[str, Any]]:
    """C{{"balancer": {added, changed, removed}}} by C{service[/group[/host]]} name, or none; a
    host that runs no balancer needs a restart to start one."""
    balancer = context.services.get("balancer")
    if balancer is not None and callable(getattr(balancer, "diff", None)):
        changes = balancerDiff(balancer.diff(declared))
        return {"balancer": changes} if any(changes.values()) else {}
    if declared:
        names = [str(getattr(d, "name", None) or "balancer") for d in declared]
        return {"balancer": {"added": names, "changed": [], "removed": [], "restart": True}}
    return {}


@defer.inlineCallbacks
def applyEntries(context: Any, declared: list[Any], live: dict[str, dict[str, Any]]):
    """Reconcile the running balancer with C{declared} and follow its deploys (the host's wiring
    phase, run after the reload, binds the load sources of the groups it added)."""
    balancer = context.services["balancer"]
    yield balancer.reconcile(declared)
    yield _followDeploys(context, balancer, peers(context, component("balancer"))["supervisor"], declared)


def _followDeploys(context: Any, balancer: Any, supervisor: Any, declared: list[Any]) -> defer.Deferred:
    """Keep one L{DeployPool} per group that takes its hosts from a deploy, as the balancer's
    builder makes them: a group the reload added (or re-pointed) gets one, and the pool of a
    group that is gone stops following its deploy."""
    from salvusctl.balancer.deploys import DeployPool

    if not IServiceCollection.providedBy(balancer):
        return defer.succeed(None)  # not the real balancer: it has no pools to keep
    pools = {(c.service, c.group): c for c in list(balancer) if isinstance(c, DeployPool)}
    wanted = {(d.name, g.name): g for d in declared for g in d.groups if g.deploy is not None}
    stops = []
    for key, pool in pools.items():
        group = wanted.get(key)
        if group is None or (pool.deploy, pool.address) != (group.deploy, group.deploy_address):
            stops.append(defer.maybeDeferred(pool.disownServiceParent))
    for key, group in wanted.items():
        pool = pools.get(key)
        if pool is not None and (pool.deploy, pool.address) == (group.deploy, group.deploy_address):
            continue
        if supervisor is None:
            log.warn("reload: {service}/{group} follows deploy {deploy} but this host runs no "
                     "supervisor", service=key[0], group=key[1], deploy=group.deploy)
            continue
        DeployPool(context.reactor, balancer, key[0], key[1], group.deploy, supervisor,
                   address=group.deploy_address, drain_timeout=group.drain_timeout
                   ).setServiceParent(balancer)
    return defer.gatherResults(stops)


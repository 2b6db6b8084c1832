"""The balancer's builder: every C{Balanced} declaration of a host → one L{BalancerService}."""

from __future__ import annotations

from typing import Any

from salvusctl.balancer import persist
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced

__all__ = ["buildBalancer"]


def buildBalancer(context: Any, declarations: list[Balanced],
                  supervisor: Any = None) -> BalancerService | None:
    """Build the balancer of a host; None when the host balances nothing.  Its groups that take
    their hosts from a deploy follow the C{supervisor} service; saved host states are restored
    once the store has started.

    The host's balancer drains at stop (each declaration's C{stop_timeout}, the longest wins) and
    hands its listening sockets to a successor host over C{<var>/balancer.sock}
    (L{salvusctl.balancer.hosthandover}).

    Registers the balancer's migrations with the store (before it starts).  The store service is
    an earlier child of the host, so by the time the balancer starts its C{ready} Deferred exists;
    saved host states are restored when it fires.
    """
    if not declarations:
        return None
    store = getattr(context, "store", None)
    ready = None
    if store is not None:
        store.addMigrations("balancer", persist.MIGRATIONS)
        ready = lambda: _settled(context.storeReady())  # noqa: E731
    resolver = None
    if any(d.dns == "names" for d in declarations):
        from salvusctl.balancer.dns import namesResolver

        resolver = namesResolver(context.reactor)
    from salvusctl.balancer.hosthandover import handoverPath

    reactor = context.reactor
    var_dir = getattr(context, "var_dir", None)

    def handedOver():
        # a successor host took the sockets: this host stops (and its balancer drains)
        if getattr(reactor, "running", False):
            reactor.stop()

    balancer = BalancerService(reactor, list(declarations), store=store, store_ready=ready,
                               resolver=resolver,
                               stop_timeout=max(d.stop_timeout for d in declarations),
                               hard_stop=max(d.hard_stop for d in declarations),
                               handover_path=handoverPath(var_dir) if var_dir else None,
                               onHandedOver=handedOver,
                               share=_frontEndName(context) if store is not None else None)
    _followDeploys(context, balancer, supervisor, declarations)
    return balancer


def _followDeploys(context: Any, balancer: BalancerService, supervisor: Any,
                   declarations: list[Balanced]) -> None:
    """One L{DeployPool} child per group that takes its hosts from a deploy."""
    from salvusctl.balancer.deploys import DeployPool
    from salvusctl.errors import ConfigError

    for decl in declarations:
        for group in decl.groups:
            if group.deploy is None:
                continue
            if supervisor is None:
                raise ConfigError(f"service {decl.name!r} group {group.name!r}: deploy "
                                  f"{group.deploy!r} needs the host's supervisor")
            pool = DeployPool(context.reactor, balancer, decl.name, group.name, group.deploy,
                              supervisor, address=group.deploy_address,
                              drain_timeout=group.drain_timeout)
            pool.setServiceParent(balancer)


def _settled(ready: Any):
    """A Deferred that fires (with None) once C{ready} has fired either way, leaving it untouched."""
    from twisted.internet.defer import Deferred, succeed

    if ready is None:
        return succeed(None)
    d: Deferred = Deferred()

    def fire(result):
        d.callback(None)
        return result

    ready.addBoth(fire)
    return d


def _frontEndName(context: Any) -> str | None:
    """This host's name, by which the other front-ends of the store know its state changes."""
    host = getattr(context, "host", None)
    return getattr(host, "name", None) or "salvus"

"""A front-end host's side of balancing across hosts: groups that follow a deploy cluster-wide.

A balanced group declared as C{Group("workers", cluster_deploy="worker")} lists no servers: its
hosts are the instances of deploy C{worker} that the cluster's hosts publish (see
L{salvusctl.cluster.publish}), named C{instance@host} (C{worker:0@worker1}).  On every
C{salvus_cluster_hosts} notification, membership change and heartbeat the feed reads the published
instances once and brings each such group in step:

- an instance published C{ready} by a host that is up joins the group;
- one published C{drain} is set to drain (no new connections; open ones finish), and back up if
  it is published ready again;
- one withdrawn, or whose host is down or left, is removed (its open connections finish).

The groups are read from the balancer's I{declared} services each time, so a group added or
re-pointed by a reload is followed from the next refresh on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

from salvusctl.cluster.domain import poolMembers
from salvusctl.store.errors import StoreError

__all__ = ["ClusterPool", "clusterGroups"]

log = Logger()


def clusterGroups(balancer: Any) -> list[tuple[str, str, str]]:
    """C{(service, group, deploy)} for every declared group that follows a deploy cluster-wide."""
    out = []
    for decl in getattr(balancer, "declared", {}).values():
        for group in decl.groups:
            deploy = getattr(group, "cluster_deploy", None)
            if deploy:
                out.append((decl.name, group.name, deploy))
    return out


class ClusterPool:
    """Keep the balancer's cluster-wide groups in step with the published instances.

    @param tables: an L{IClusterStore}.
    @param balancer: the host's L{BalancerService} (hosts change through its live API).
    @param membership: the L{Membership} whose view says which hosts are up.
    """

    def __init__(self, tables: Any, balancer: Any, membership: Any):
        self.tables = tables
        self.balancer = balancer
        self.membership = membership
        self.running = False
        #: (service, group) -> the member names this feed added (operators' own hosts are left alone).
        self.managed: dict[tuple[str, str], set[str]] = {}
        self._drained: set[tuple[str, str, str]] = set()
        self._busy: Deferred | None = None
        self._again = False

    def start(self) -> None:
        self.running = True
        self.membership.addObserver(self._membershipChanged)

    def stop(self) -> None:
        self.running = False
        self.membership.removeObserver(self._membershipChanged)

    def _membershipChanged(self, name: str, old: Any, new: str, peer: Any) -> None:
        self.refresh()

    def refresh(self) -> Deferred:
        """Read the published instances and sync every cluster-wide group; never fails."""
        if not self.running or not clusterGroups(self.balancer):
            return succeed(None)
        if self._busy is not None:
            self._again = True
            return succeed(None)
        d = self._run()

        def failed(failure):
            if failure.check(StoreError):
                log.warn("cluster: balancer feed not refreshed: {why}", why=failure.getErrorMessage())
            else:
                log.failure("cluster: balancer feed failed", failure)

        def done(_):
            self._busy = None

        d.addErrback(failed).addBoth(done)
        if not d.called:
            self._busy = d
        return d

    @inlineCallbacks
    def _run(self):
        while self.running:
            self._again = False
            rows = yield self.tables.instances()
            peers = {name: peer.state for name, peer in self.membership.peers.items()}
            for service, group, deploy in clusterGroups(self.balancer):
                self.sync(service, group, poolMembers([tuple(r) for r in rows], peers, deploy))
            if not self._again:
                return

    def sync(self, service: str, group: str, wanted: dict[str, tuple[str, int, str]]) -> None:
        """Make the group's cluster members exactly C{wanted} (name -> (address, port, state))."""
        from salvusctl.balancer import states

        svc = self.balancer.balanced.get(service)
        hostGroup = svc.groups.get(group) if svc is not None else None
        if hostGroup is None:
            return
        key = (service, group)
        managed = self.managed.setdefault(key, set())
        for name in sorted(managed - set(wanted)):
            managed.discard(name)
            self._drained.discard((service, group, name))
            if name in hostGroup.hosts:
                self.balancer.removeHost(service, group, name)
                log.info("cluster: {service}/{group}: {name} left", service=service, group=group, name=name)
        for name, (address, port, state) in sorted(wanted.items()):
            host = hostGroup.hosts.get(name)
            if host is not None and name not in managed:
                continue  # an operator's host of the same name: not ours to change
            if host is not None and (host.address, host.port) != (address, port):
                self.balancer.removeHost(service, group, name)
                host = None
            if host is None:
                self.balancer.addHost(service, group, address, port, name=name)
                managed.add(name)
                log.info("cluster: {service}/{group}: {name} joined at {address}:{port}",
                         service=service, group=group, name=name, address=address, port=port)
                host = hostGroup.hosts.get(name)
            mark = (service, group, name)
            if state == "drain" and host.admin == states.UP:
                self.balancer.setHostState(service, group, name, states.DRAIN)
                self._drained.add(mark)
            elif state == "ready" and mark in self._drained:
                self._drained.discard(mark)
                if host.admin == states.DRAIN:
                    self.balancer.setHostState(service, group, name, states.UP)

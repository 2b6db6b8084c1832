"""The cluster's builder: a host's C{Cluster(...)} declaration → one L{ClusterService}."""

from __future__ import annotations

from typing import Any

from salvusctl.cluster.declare import Cluster
from salvusctl.cluster.service import ClusterService
from salvusctl.errors import ConfigError
from salvusctl.interfaces import supervisorOf

__all__ = ["buildCluster"]


def buildCluster(context: Any, declarations: list[Cluster], supervisor: Any = None,
                 balancer: Any = None) -> ClusterService | None:
    """Build this host's cluster member over the services built before it: its C{supervisor} (whose
    instances it publishes) and its C{balancer} (it joins once the store has started).

    The balancer's C{cluster_deploy} groups are fed from here: the balancer is built first and
    knows nothing of the cluster, as the monitor binds least-load sources into it.
    """
    if not declarations:
        return None
    if len(declarations) > 1:
        raise ConfigError("a host has one Cluster(...); merge the declarations")
    decl = declarations[0]
    supervisor = supervisorOf(supervisor)
    from salvusctl.balancer.build import _settled

    ready = lambda: _settled(context.storeReady())  # noqa: E731
    clients_socket, identify = _clientsSocket(decl.hostName(context.host), supervisor)
    return ClusterService(
        context.reactor,
        context.store,
        decl.hostName(context.host),
        address=decl.address,
        admin_url=decl.adminURL(context.host),
        heartbeat=decl.heartbeat,
        missed=decl.missed,
        supervisor=supervisor,
        balancer=balancer if hasattr(balancer, "balanced") else None,
        publish=decl.publish,
        drain_delay=decl.drain_delay,
        retention=decl.retention,
        max_messages=decl.max_messages,
        prune_interval=decl.prune_interval,
        store_ready=ready,
        handlers=decl.handlers,
        clients_socket=clients_socket,
        identify=identify,
    )


def _clientsSocket(name: str, supervisor: Any) -> tuple[str, Any]:
    """The clients socket's abstract name, and how a connecting pid is told to be an instance.

    Named after the supervisor's token (its run directory), so two hosts in one network namespace
    have two sockets; the supervisor puts it in each instance's environment from now on.
    """
    import hashlib

    from salvusctl.cluster.clientbuild import supervisorIdentify

    token = getattr(supervisor, "token", None) or hashlib.sha1(name.encode()).hexdigest()[:12]
    socket_name = f"salvus-clients-{token}"
    identify = None
    if supervisor is not None and hasattr(supervisor, "_instanceOfPid"):
        supervisor.clientsSocket = "@" + socket_name
        identify = supervisorIdentify(supervisor)
    return socket_name, identify

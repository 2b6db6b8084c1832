"""The C{salvus.cluster.*} XML-RPC namespace: the hosts of this host's cluster and the messages
between them.

Reading (C{hosts}, C{info}, C{messages}) is for viewers; sending a message — which may restart a
deploy on another host — and pinging need the operator role.  A host without C{Cluster(...)}
answers C{NO_SERVICE}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.rpcbase import Namespace, operator, serviceCall
from salvusctl.admin.verbs import Reply

__all__ = ["ClusterNamespace"]


def _call(fn, *args) -> defer.Deferred:
    """A cluster call under the admin's convention (L{serviceCall}): an unknown host is BAD_NAME,
    a bad message BAD_ARGUMENTS, no pong or a cancelled wait FAILED."""
    from salvusctl.cluster.clients import ClientNotConnected, NoClientsSocket
    from salvusctl.cluster.domain import BadMessage
    from salvusctl.cluster.handlers import NoPong

    d = serviceCall(fn, *args, errors={ClientNotConnected: Faults.REFUSED, BadMessage: Faults.BAD_ARGUMENTS,
                                       NoPong: Faults.FAILED, ValueError: Faults.BAD_ARGUMENTS,
                                       NoClientsSocket: Faults.NO_SERVICE})

    def cancelled(failure):
        failure.trap(defer.CancelledError)
        raise rpcFault(Faults.FAILED, "cancelled: the client went away")

    return d.addErrback(cancelled)


class ClusterNamespace(Namespace):
    """C{salvus.cluster.hosts|info|send|ping|messages|deliver|clients}."""

    def _cluster(self) -> Any:
        return self.state.rpcService("cluster")

    def xmlrpc_hosts(self) -> Reply[list]:
        """Every host of the cluster (this one included) with its state: up, down or left

        @return structs: name, address, admin_url, started, last_seen, age, heartbeat,
            missed, version, state
        """
        return _call(self._cluster().hosts)

    def xmlrpc_info(self) -> Reply[dict]:
        """This host's cluster settings: its name, address, whether the store is shared

        @return name, address, shared, store, heartbeat, missed, handlers, acked, failed
        """
        return self._cluster().info()

    @operator
    def xmlrpc_send(
        self, host: str, kind: str, body: dict | list | str | int | float | bool | None = None
    ) -> Reply[int]:
        """Queue a message for a host ('*': every host); returns its id

        @param host a host of the cluster, or '*'
        @param kind e.g. ping, deploy.restart, deploy.start, deploy.stop
        @param body the message's data (any JSON value), e.g. {'deploy': 'web'}
        @return the message's id
        """
        return _call(self._cluster().send, host, kind, body)

    @operator
    def xmlrpc_ping(self, host: str, timeout: float = 10) -> Reply[float]:
        """Send ping to a host and wait for its pong; returns the round trip in seconds

        @param host a host of the cluster
        @param timeout seconds to wait for the pong
        @return round-trip seconds
        """
        if not 0 < timeout <= 300:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"timeout must be within (0, 300] seconds, not {timeout:g}")
        return _call(self._cluster().ping, host, timeout)

    @operator
    def xmlrpc_deliver(
        self, client: str, body: dict | list | str | int | float | bool | None = None
    ) -> Reply[dict]:
        """Send a message to a client wherever in the cluster it is connected

        @param client the client id an instance registered on its clients socket
        @param body the message (any JSON value)
        @return client, host, instance, serial, id, path (local, link or mailbox)
        """
        return _call(self._cluster().deliver, client, body)

    def xmlrpc_clients(self, host: str = "", limit: int = 1000) -> Reply[list]:
        """The clients connected now, with the host and instance holding each

        @param host only the clients of this host ('' for all)
        @param limit at most this many (1..10000)
        @return structs: client, host, instance, serial, state, since, why
        """
        if not 1 <= limit <= 10000:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"limit must be 1..10000, not {limit}")
        return _call(self._cluster().connectedClients, host or None, limit)

    def xmlrpc_messages(self, host: str = "", kind: str = "", limit: int = 50) -> Reply[list]:
        """The newest messages of the cluster with each receiver's delivery state, newest first

        @param host only messages from, to or broadcast to this host ('' for all)
        @param kind only this kind ('' for all)
        @param limit at most this many messages (1..1000)
        @return structs: id, uid, sender, recipient, kind, body, created, reply_to,
            deliveries (host, state, delivered, done, result)
        """
        if not 1 <= limit <= 1000:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"limit must be 1..1000, not {limit}")
        return _call(self._cluster().messages, host or None, kind or None, limit)

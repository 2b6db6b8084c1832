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
from salvusctl.admin.rpcbase import Namespace, expectInt, expectNumber, expectStr, operator

__all__ = ["ClusterNamespace"]


def _faults(d: defer.Deferred) -> defer.Deferred:
    """The cluster's errors as one-line faults: unknown host BAD_NAME, bad message BAD_ARGUMENTS,
    no pong FAILED."""
    from salvusctl.cluster.domain import BadMessage
    from salvusctl.cluster.handlers import NoPong

    def failed(failure):
        if failure.check(KeyError):
            raise rpcFault(Faults.BAD_NAME, str(failure.value.args[0]) if failure.value.args else "")
        if failure.check(BadMessage):
            raise rpcFault(Faults.BAD_ARGUMENTS, str(failure.value))
        if failure.check(NoPong):
            raise rpcFault(Faults.FAILED, str(failure.value))
        if failure.check(defer.CancelledError):
            raise rpcFault(Faults.FAILED, "cancelled: the client went away")
        return failure

    return d.addErrback(failed)


class ClusterNamespace(Namespace):
    """C{salvus.cluster.hosts|info|send|ping|messages}."""

    def _cluster(self) -> Any:
        return self.state.rpcService("cluster")

    def xmlrpc_hosts(self):
        """Every host of the cluster (this one included) with its state: up, down or left

        @return array result structs: name, address, admin_url, started, last_seen, age, heartbeat,
            missed, version, state
        """
        return _faults(defer.maybeDeferred(self._cluster().hosts))

    def xmlrpc_info(self):
        """This host's cluster settings: its name, address, whether the store is shared

        @return struct result name, address, shared, store, heartbeat, missed, handlers, acked, failed
        """
        return self._cluster().info()

    @operator
    def xmlrpc_send(self, host, kind, body=None):
        """Queue a message for a host ('*': every host); returns its id

        @param string host a host of the cluster, or '*'
        @param string kind e.g. ping, deploy.restart, deploy.start, deploy.stop
        @param struct body the message's data (JSON-shaped), e.g. {'deploy': 'web'}
        @return int result the message's id
        """
        host, kind = expectStr(host, "host"), expectStr(kind, "kind")
        return _faults(defer.maybeDeferred(self._cluster().send, host, kind, body))

    @operator
    def xmlrpc_ping(self, host, timeout=10):
        """Send ping to a host and wait for its pong; returns the round trip in seconds

        @param string host a host of the cluster
        @param double timeout seconds to wait for the pong
        @return double result round-trip seconds
        """
        host = expectStr(host, "host")
        timeout = expectNumber(timeout, "timeout")
        if not 0 < timeout <= 300:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"timeout must be within (0, 300] seconds, not {timeout:g}")
        return _faults(defer.maybeDeferred(self._cluster().ping, host, timeout))

    def xmlrpc_messages(self, host="", kind="", limit=50):
        """The newest messages of the cluster with each receiver's delivery state, newest first

        @param string host only messages from, to or broadcast to this host ('' for all)
        @param string kind only this kind ('' for all)
        @param int limit at most this many messages (1..1000)
        @return array result structs: id, uid, sender, recipient, kind, body, created, reply_to,
            deliveries (host, state, delivered, done, result)
        """
        host, kind, limit = expectStr(host, "host"), expectStr(kind, "kind"), expectInt(limit, "limit")
        if not 1 <= limit <= 1000:
            raise rpcFault(Faults.BAD_ARGUMENTS, f"limit must be 1..1000, not {limit}")
        return _faults(defer.maybeDeferred(self._cluster().messages, host or None, kind or None, limit))

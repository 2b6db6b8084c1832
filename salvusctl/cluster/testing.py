"""A fake cluster member, for the admin's tests and for users' own tests of code that uses one.

L{FakeCluster} provides L{ICluster} as the real L{salvusctl.cluster.service.ClusterService} does
and passes the same contract suite (C{tests/cluster/test_contract.py}): the same host and message
dicts, the same refusals (an unknown host is a C{KeyError}, a bad kind or body a
L{BadMessage}), and messages handled by the receiver's handlers, acked with the handler's result
as JSON or failed with the reason.  Members made with L{FakeCluster.join} share one cluster: a
message is handled at once, on the receiver, where the real one waits for the store's wake-up.
Its state is in plain attributes (C{log}, C{handlers}, C{members}); times come from its clock.

It does not model the store: every member is up, C{ping} answers at once (with 0.0 seconds on a
clock that did not move) and records no ping or pong message, and there is no clients socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

import salvusctl
from salvusctl.cluster.domain import BadMessage, Message, checkKind, decodeBody, encodeBody
from salvusctl.cluster.messaging import ACKED, BROADCAST, FAILED
from salvusctl.interfaces import ICluster

__all__ = ["FakeCluster", "BUILTIN_KINDS"]

#: The kinds every member handles without being told (the real member's built-ins).
BUILTIN_KINDS = ("deploy.restart", "deploy.start", "deploy.stop", "ping", "pong")


@implementer(ICluster)
class FakeCluster:
    """One member of an in-memory cluster; L{join} adds the others."""

    def __init__(self, host_name: str = "test", clock: Any = None, address: str = "127.0.0.1",
                 heartbeat: float = 5.0, missed: int = 3, shared: bool = True):
        self.host_name = host_name
        self.clock = clock if clock is not None else Clock()
        self.address = address
        self.heartbeat = float(heartbeat)
        self.missed = int(missed)
        self.shared = shared
        self.started = self.clock.seconds()
        #: name -> member, shared by every member of one cluster
        self.members: dict[str, FakeCluster] = {host_name: self}
        #: every message sent in the cluster, oldest first, as L{messages} answers them
        self.log: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable] = {kind: _builtin(kind) for kind in BUILTIN_KINDS}
        self.counts = {ACKED: 0, FAILED: 0}

    def join(self, name: str, **options: Any) -> FakeCluster:
        """A new member C{name} of this member's cluster (same clock, members and log)."""
        other = FakeCluster(name, clock=self.clock, **options)
        other.members = self.members
        other.log = self.log
        self.members[name] = other
        return other

    # -- ICluster --------------------------------------------------------------------------------

    def hosts(self) -> Deferred:
        return succeed(self.lastView())

    def lastView(self) -> list[dict[str, Any]]:
        now = self.clock.seconds()
        return [{
            "name": name, "address": member.address, "admin_url": "", "started": member.started,
            "last_seen": now, "age": 0.0, "heartbeat": member.heartbeat, "missed": member.missed,
            "version": salvusctl.__version__, "state": "up", "view_age": 0.0, "stale": False,
            "stale_reason": "",
        } for name, member in sorted(self.members.items())]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.host_name, "address": self.address, "shared": self.shared,
            "store": "", "heartbeat": self.heartbeat, "missed": self.missed,
            "handlers": sorted(self.handlers), "acked": self.counts[ACKED],
            "failed": self.counts[FAILED], "published": [],
        }

    def send(self, recipient: str, kind: str, body: Any = None) -> Deferred:
        try:
            checkKind(kind)
            text = encodeBody(body)
        except BadMessage:
            return fail()
        if recipient != BROADCAST and recipient not in self.members:
            known = ", ".join(sorted(self.members))
            return fail(KeyError(f"no host {recipient!r} in the cluster (hosts: {known})"))
        message = {
            "id": len(self.log) + 1, "uid": f"fake{len(self.log) + 1:020d}", "sender": self.host_name,
            "recipient": recipient, "kind": kind, "body": text, "created": self.clock.seconds(),
            "reply_to": "", "deliveries": [],
        }
        self.log.append(message)
        receivers = sorted(self.members) if recipient == BROADCAST else [recipient]
        for name in receivers:
            self.members[name]._receive(message)
        return succeed(message["id"])

    def ping(self, host: str, timeout: float = 10.0) -> Deferred:
        if host not in self.members:
            return fail(KeyError(f"no host {host!r} in the cluster"))
        return succeed(0.0)

    def messages(self, host: str | None = None, kind: str | None = None, limit: int = 50) -> Deferred:
        chosen = [m for m in reversed(self.log)
                  if (not host or host in (m["sender"], m["recipient"]) or m["recipient"] == BROADCAST)
                  and (not kind or m["kind"] == kind)]
        return succeed([dict(m, deliveries=sorted((dict(d) for d in m["deliveries"]),
                                                   key=lambda d: d["host"]))
                        for m in chosen[:int(limit)]])

    def addHandler(self, kind: str, handler: Callable) -> None:
        self.handlers[kind] = handler

    def deliver(self, client: str, body: Any = None) -> Deferred:
        from salvusctl.cluster.clients import NoClientsSocket

        return fail(NoClientsSocket(f"{self.host_name} has no clients socket"))

    def connectedClients(self, host: str | None = None, limit: int = 1000) -> Deferred:
        return succeed([])

    # -- receiving -------------------------------------------------------------------------------

    def _receive(self, row: dict[str, Any]) -> None:
        """Handle one message here and record its delivery, as the real mailbox marks it."""
        delivery = {"host": self.host_name, "state": FAILED, "delivered": self.clock.seconds(),
                    "done": 0.0, "result": ""}
        row["deliveries"].append(delivery)
        handler = self.handlers.get(row["kind"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            self._finish(delivery, FAILED,
                         f"no handler for kind {row['kind']!r} on {self.host_name} (known: {known})")
            return
        message = Message(id=row["id"], uid=row["uid"], sender=row["sender"], recipient=row["recipient"],
                          kind=row["kind"], body=decodeBody(row["body"]), created=row["created"],
                          reply_to=row["reply_to"] or None)
        d = maybeDeferred(handler, message)
        d.addCallbacks(lambda result: self._finish(delivery, ACKED, _resultText(result)),
                       lambda failure: self._finish(delivery, FAILED, failure.getErrorMessage()))

    def _finish(self, delivery: dict[str, Any], state: str, result: str) -> None:
        delivery.update(state=state, result=result, done=self.clock.seconds())
        self.counts[state] += 1


def _resultText(result: Any) -> str:
    try:
        return json.dumps(result, sort_keys=True, default=str)
    except ValueError:
        return json.dumps(str(result))


def _builtin(kind: str) -> Callable:
    """A stand-in for a built-in kind: acked with what the real one answers when it succeeds."""
    def handle(message: Message) -> Any:
        if kind.startswith("deploy."):
            return {kind.split(".", 1)[1]: (message.body or {}).get("deploy")}
        return {kind: None}

    return handle

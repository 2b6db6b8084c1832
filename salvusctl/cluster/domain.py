"""The cluster's rules as plain functions of their inputs (C{now} included): no clock, no store.

Whether a peer is up, what a message looks like once read back, what a balancer group should hold
given the published instances — each is decided here, so its tests need neither a reactor nor a
database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "UP",
    "DOWN",
    "LEFT",
    "Peer",
    "Message",
    "BadMessage",
    "peerState",
    "checkKind",
    "encodeBody",
    "decodeBody",
    "poolMembers",
    "memberName",
    "deliveriesText",
]

UP = "up"  # heartbeating
DOWN = "down"  # missed too many heartbeats (crashed, cut off, or its store is unreachable)
LEFT = "left"  # stopped cleanly

_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

#: The largest message body accepted, as JSON text.
MAX_BODY = 64 * 1024


class BadMessage(ValueError):
    """A message that cannot be sent or handled (bad kind, body not JSON, too large)."""


def peerState(state: str, last_seen: float, heartbeat: float, missed: int, now: float,
              watching_since: float | None = None) -> str:
    """A member's state as seen at C{now}.

    A host that left cleanly is C{left}; one whose last heartbeat is older than C{missed} of its
    own heartbeat intervals is C{down}; otherwise C{up}.  Each host is judged by its own interval,
    so hosts with different settings share a cluster.

    C{now} and C{last_seen} are both the database's clock (C{last_seen} is written with the
    database's C{now()}), so host clocks need not agree.  C{watching_since} is when the reader
    could last begin to watch — the database server's start, or the end of the reader's own
    outage: a host has C{missed} intervals from then to be heard from, since nobody could write
    a heartbeat before it.  So a database outage longer than C{missed x heartbeat} marks no host
    down by itself.
    """
    if state == LEFT:
        return LEFT
    heard = float(last_seen)
    if watching_since is not None:
        heard = max(heard, float(watching_since))
    if now - heard > float(heartbeat) * int(missed):
        return DOWN
    return UP


@dataclass(frozen=True)
class Peer:
    """One member as read from C{cluster_hosts}, with its state computed at C{seen_at}."""

    name: str
    address: str | None
    admin_url: str | None
    started: float | None
    last_seen: float
    heartbeat: float
    missed: int
    version: str | None
    stored_state: str
    state: str
    seen_at: float

    @classmethod
    def fromRow(cls, row: tuple, now: float, watching_since: float | None = None) -> Peer:
        name, address, admin_url, started, last_seen, heartbeat, missed, version, state = row
        return cls(
            name=name,
            address=address,
            admin_url=admin_url,
            started=float(started) if started is not None else None,
            last_seen=float(last_seen),
            heartbeat=float(heartbeat),
            missed=int(missed),
            version=version,
            stored_state=state,
            state=peerState(state, last_seen, heartbeat, missed, now, watching_since),
            seen_at=now,
        )

    def asData(self) -> dict[str, Any]:
        """Plain data for XML-RPC and pages."""
        return {
            "name": self.name,
            "address": self.address or "",
            "admin_url": self.admin_url or "",
            "started": self.started or 0.0,
            "last_seen": self.last_seen,
            "age": max(0.0, self.seen_at - self.last_seen),
            "heartbeat": self.heartbeat,
            "missed": self.missed,
            "version": self.version or "",
            "state": self.state,
        }


@dataclass(frozen=True)
class Message:
    """A message as its handler receives it.

    @ivar body: the decoded JSON body (any JSON value).
    @ivar reply_to: the C{uid} of the message this one answers, or None.
    """

    id: int
    uid: str
    sender: str
    recipient: str
    kind: str
    body: Any
    created: float
    reply_to: str | None = None


def checkKind(kind: Any) -> str:
    """A message kind: lower-case letters, digits, C{_ . -}, starting with a letter."""
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise BadMessage(
            f"bad message kind {kind!r}: lower-case letters, digits, '_', '.', '-' (at most 63),"
            " starting with a letter"
        )
    return kind


def encodeBody(body: Any) -> str:
    """The JSON text stored for a body; L{BadMessage} when it is not JSON data or too large."""
    try:
        text = json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadMessage(f"message body is not JSON data: {e}")
    if len(text) > MAX_BODY:
        raise BadMessage(f"message body is {len(text)} bytes of JSON; at most {MAX_BODY}")
    return text


def decodeBody(text: Any) -> Any:
    """A stored body back to data; L{BadMessage} naming the fault when it is not JSON."""
    if not isinstance(text, str):
        raise BadMessage(f"message body is not text: {type(text).__name__}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise BadMessage(f"message body is not valid JSON ({e}): {text[:60]!r}")


def deliveriesText(message: dict[str, Any]) -> str:
    """A listed message's deliveries as one line, C{"w1: acked, w2: failed (why)"}, or
    C{"waiting"} before any receiver has it: what the C{/cluster} page and C{salvusctl cluster
    messages} both show."""
    return ", ".join(
        f"{d.get('host')}: {d.get('state')}" + (f" ({d.get('result')})" if d.get("result") else "")
        for d in message.get("deliveries", [])
    ) or "waiting"


def memberName(host: str, instance: str) -> str:
    """The balancer host name of a host's instance: C{worker:0@worker1}.

    No C{/}: C{salvusctl balancer drain SERVICE/GROUP/HOST} splits on it."""
    return f"{instance}@{host}"


def poolMembers(rows: list[tuple], peers: dict[str, str], deploy: str) -> dict[str, tuple[str, int, str]]:
    """The balancer hosts a group following C{deploy} across the cluster should hold.

    @param rows: C{(host, instance, deploy, address, port, state)} rows of C{cluster_instances}.
    @param peers: host name -> its state (L{peerState}); instances of hosts that are not C{up}
        are left out (a host that crashed still has rows, and a down host takes no traffic).
    @return: member name -> C{(address, port, state)} with state C{'ready'} or C{'drain'}.
    """
    out: dict[str, tuple[str, int, str]] = {}
    for host, instance, row_deploy, address, port, state in rows:
        if row_deploy != deploy or peers.get(host) != UP:
            continue
        out[memberName(host, instance)] = (str(address), int(port), str(state))
    return out

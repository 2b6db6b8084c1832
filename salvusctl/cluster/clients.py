"""The registry of connected clients: which host and instance holds each client, and since when.

One row per client id in C{cluster_clients}, on the store every host shares.  A client that
connects gets the next I{serial} of its row: the serial names one connection, so a message
addressed to an earlier connection of the same client is recognised at the receiver and never
handed to the new one (nor twice to the same one).  A row is never deleted when its client goes:
it is marked C{gone} with the reason, and the serial goes on from there — a message to a client
that is not connected is refused with that reason ("disconnected from web:0@worker1", "its host
worker1 is down").

Rows are marked gone by their instance (C{disconnect}), by the hub when an instance's socket
closes (the instance stopped or died), at a host's start (what a crash left), at its clean stop,
and by every host when membership sees a peer down or left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from salvusctl.store.migrations import Migration

__all__ = ["ClientRegistry", "ClientEntry", "ClientNotConnected", "CONNECTED", "GONE", "MIGRATIONS",
           "checkClientId", "NoClientsSocket"]

CONNECTED = "connected"
GONE = "gone"

_TABLE = """
CREATE TABLE cluster_clients (
    client TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    instance TEXT NOT NULL,
    serial BIGINT NOT NULL,
    state TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    why TEXT
);
CREATE INDEX cluster_clients_host ON cluster_clients (host, instance, state);
"""

_LINKS = """
CREATE TABLE cluster_links (
    host TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    token TEXT NOT NULL,
    certificate TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
"""

MIGRATIONS = [
    Migration(1, "connected clients: client id -> host, instance, serial", _TABLE),
    # salvusctl.cluster.links
    Migration(2, "direct links: each host's address, port, token and certificate", _LINKS),
]

_COLUMNS = ("client", "host", "instance", "serial", "state", "since", "why")

#: A client id is what an application calls its client (a session, a user, a browser tab).
MAX_CLIENT_ID = 200


class NoClientsSocket(Exception):
    """This host's cluster member was made without a clients hub."""


class ClientNotConnected(ValueError):
    """A message for a client that no instance holds now; the text says why."""


def checkClientId(client: Any) -> str:
    """C{client} if it is a usable client id; C{ValueError} with the reason otherwise."""
    if not isinstance(client, str) or not client:
        raise ValueError(f"a client id is a non-empty string, not {client!r}")
    if len(client) > MAX_CLIENT_ID:
        raise ValueError(f"a client id has at most {MAX_CLIENT_ID} characters, not {len(client)}")
    if any(ord(c) < 32 for c in client):
        raise ValueError(f"a client id has no control characters: {client!r}")
    return client


@dataclass(frozen=True)
class ClientEntry:
    """One row of the registry."""

    client: str
    host: str
    instance: str
    serial: int
    state: str
    since: float
    why: str

    @property
    def where(self) -> str:
        return f"{self.instance}@{self.host}"

    def refusal(self) -> str:
        """Why a message to this client cannot be delivered now (its row says it is gone)."""
        return f"client {self.client!r} is not connected: {self.why or 'disconnected from ' + self.where}"

    def asDict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in _COLUMNS}


def _entry(row: tuple) -> ClientEntry:
    client, host, instance, serial, state, since, why = row
    return ClientEntry(client, host, instance, int(serial), state, float(since), why or "")


class ClientRegistry:
    """The C{cluster_clients} table on one store (registers its migrations when made).

    @param store: an L{IStore}, not yet started when C{migrate} is true.
    """

    def __init__(self, store: Any, migrate: bool = True):
        self.store = store
        if migrate:
            store.addMigrations("cluster_clients", MIGRATIONS)

    def connect(self, client: str, host: str, instance: str, now: float) -> Deferred:
        """Record that C{instance}@C{host} holds C{client} now; fires with the connection's
        serial (one more than the client's last, whichever host had it)."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute(
                "INSERT INTO cluster_clients (client, host, instance, serial, state, since, why)"
                " VALUES (?, ?, ?, 1, 'connected', ?, NULL) ON CONFLICT (client) DO UPDATE SET"
                " host = excluded.host, instance = excluded.instance,"
                " serial = cluster_clients.serial + 1, state = 'connected', since = excluded.since,"
                " why = NULL",
                (client, host, instance, now),
            )
            yield cursor.execute("SELECT serial FROM cluster_clients WHERE client = ?", (client,))
            return int(cursor.fetchone()[0])

        return self.store.runInteraction(run)

    def disconnect(self, client: str, serial: int, now: float, why: str) -> Deferred:
        """Mark one connection of C{client} gone — only if it is still the current one (a client
        that already moved elsewhere keeps its new row)."""
        return self.store.runOperation(
            "UPDATE cluster_clients SET state = 'gone', since = ?, why = ?"
            " WHERE client = ? AND serial = ? AND state = 'connected'",
            (now, why, client, int(serial)),
        )

    def dropInstance(self, host: str, instance: str, now: float, why: str) -> Deferred:
        """Mark every client of one instance gone (its socket closed: it stopped or died)."""
        return self.store.runOperation(
            "UPDATE cluster_clients SET state = 'gone', since = ?, why = ?"
            " WHERE host = ? AND instance = ? AND state = 'connected'",
            (now, why, host, instance),
        )

    def dropHost(self, host: str, now: float, why: str) -> Deferred:
        """Mark every client of one host gone (it is down, left, or starting again)."""
        return self.store.runOperation(
            "UPDATE cluster_clients SET state = 'gone', since = ?, why = ?"
            " WHERE host = ? AND state = 'connected'",
            (now, why, host),
        )

    def countConnected(self, host: str) -> Deferred:
        """How many clients the registry holds as connected at C{host}."""
        d = self.store.runQuery(
            "SELECT COUNT(*) FROM cluster_clients WHERE host = ? AND state = 'connected'", (host,))
        return d.addCallback(lambda rows: int(rows[0][0]))

    def restore(self, host: str, held: list[tuple[str, str, int]], now: float) -> Deferred:
        """Mark C{(client, instance, serial)} connected again at C{host} where the row is that
        connection's and gone (the others took this host for down while it still held them); a
        client that connected elsewhere since keeps its new row."""
        return self.store.runInteraction(lambda cursor: cursor.executemany(
            "UPDATE cluster_clients SET state = 'connected', since = ?, why = NULL"
            " WHERE client = ? AND host = ? AND instance = ? AND serial = ? AND state = 'gone'",
            [(now, client, host, instance, int(serial)) for client, instance, serial in held],
        ))

    def lookup(self, client: str) -> Deferred:
        """The row of C{client} as a L{ClientEntry}, or None when it never connected."""
        d = self.store.runQuery(f"SELECT {', '.join(_COLUMNS)} FROM cluster_clients WHERE client = ?",
                                (client,))
        return d.addCallback(lambda rows: _entry(tuple(rows[0])) if rows else None)

    def clients(self, host: str | None = None, connected: bool = True, limit: int = 1000) -> Deferred:
        """Rows (of C{host} when given; only connected ones by default), by client id."""
        where, args = [], []
        if host:
            where.append("host = ?")
            args.append(host)
        if connected:
            where.append("state = 'connected'")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        d = self.store.runQuery(
            f"SELECT {', '.join(_COLUMNS)} FROM cluster_clients{clause} ORDER BY client LIMIT ?",
            tuple(args) + (int(limit),),
        )
        return d.addCallback(lambda rows: [_entry(tuple(r)) for r in rows])

    def prune(self, before: float) -> Deferred:
        """Forget clients gone since before C{before} (their serials start again at 1)."""
        return self.store.runOperation(
            "DELETE FROM cluster_clients WHERE state = 'gone' AND since < ?", (before,)
        )

"""L{IClusterStore} on any L{IStore}: the cluster's SQL, written once for SQLite and PostgreSQL.

Everything goes through the store's primitives, so what the store promises holds here too:
writes made while PostgreSQL is unreachable are queued (bounded) and replayed in order, reads fail
at once with C{StoreUnavailable}.  Two details make replays harmless:

  - a message carries a C{uid} chosen by its sender, unique in the table: a send replayed after a
    lost acknowledgement inserts nothing the second time;
  - a delivery is claimed with the receiver's I{claimer} token (one per running service): a claim
    replayed after a lost acknowledgement finds its own token and still counts as its own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from zope.interface import implementer

from salvusctl.cluster.schema import BROADCAST, MIGRATIONS
from salvusctl.interfaces import IClusterStore

__all__ = ["ClusterTables", "HOST_COLUMNS", "MESSAGE_COLUMNS"]

HOST_COLUMNS = (
    "name", "address", "admin_url", "started", "last_seen", "heartbeat", "missed", "version", "state",
)
MESSAGE_COLUMNS = ("id", "uid", "sender", "recipient", "kind", "body", "created", "reply_to")

# C{last_seen} is the database's clock when the row is written (C{store.sql.dbClock}), never the
# stamp of when the beat was made: a beat queued through an outage and replayed afterwards says
# when the database saw it, so every reader compares it with that same clock.  Where the store has
# no clock of its own (SQLite: one host, no queue) the database's clock is the host's, as the
# injected reactor tells it.

_UPSERT_HOST = (
    "INSERT INTO cluster_hosts (name, address, admin_url, started, last_seen, heartbeat, missed,"
    " version, state, since_message) VALUES (?, ?, ?, ?, {now}, ?, ?, ?, 'up',"
    " (SELECT COALESCE(MAX(id), 0) FROM cluster_messages))"
    " ON CONFLICT (name) DO UPDATE SET address = excluded.address, admin_url = excluded.admin_url,"
    " started = excluded.started, last_seen = excluded.last_seen, heartbeat = excluded.heartbeat,"
    " missed = excluded.missed, version = excluded.version, state = 'up'"
)

_PENDING = (
    "SELECT {cols} FROM cluster_messages m"
    " WHERE (m.recipient = ? OR (m.recipient = ? AND m.id > COALESCE("
    "   (SELECT since_message FROM cluster_hosts WHERE name = ?), 0)))"
    " AND NOT EXISTS (SELECT 1 FROM cluster_deliveries d WHERE d.message_id = m.id AND d.host = ?)"
    " ORDER BY m.id LIMIT ?"
).format(cols=", ".join("m." + c for c in MESSAGE_COLUMNS))


@implementer(IClusterStore)
class ClusterTables:
    """The cluster's tables on one store (registers their migrations when made).

    @param store: an L{IStore}, not yet started.
    """

    def __init__(self, store: Any, migrate: bool = True):
        self.store = store
        if migrate:
            store.addMigrations("cluster", MIGRATIONS)

    # -- membership ------------------------------------------------------------------------------

    def beat(self, name: str, address: str | None, admin_url: str | None, started: float, now: float,
             heartbeat: float, missed: int, version: str) -> Deferred:
        """Insert or refresh this host's row (state C{up}, C{last_seen} now).

        On PostgreSQL C{last_seen} is the database's C{now()} when the write commits, not C{now}
        (which may be long past when a queued beat is replayed after an outage).

        A host's first row records the newest message id as C{since_message}: broadcasts sent
        before it ever joined are not for it; those sent while it was down are.
        """
        clock = self.store.sql.dbClock
        if clock is not None:
            sql = _UPSERT_HOST.format(now=clock)
            args: tuple = (name, address, admin_url, started, heartbeat, missed, version)
        else:
            sql = _UPSERT_HOST.format(now="?")
            args = (name, address, admin_url, started, now, heartbeat, missed, version)
        return self.store.runOperation(sql, args)

    def leave(self, name: str, now: float) -> Deferred:
        """Mark a host C{left} and withdraw the instances it published (one transaction)."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute("DELETE FROM cluster_instances WHERE host = ?", (name,))
            yield cursor.execute(
                "UPDATE cluster_hosts SET state = 'left', last_seen = ? WHERE name = ?", (now, name)
            )

        return self.store.runInteraction(run)

    def hosts(self) -> Deferred:
        """Every member row, by name: tuples in L{HOST_COLUMNS} order."""
        return self.store.runQuery(f"SELECT {', '.join(HOST_COLUMNS)} FROM cluster_hosts ORDER BY name")

    def view(self) -> Deferred:
        """Every member row and the database's clock, read in one statement.

        Fires with C{(rows, now, started)}: C{rows} as L{hosts}, C{now} the database's clock as the
        rows were read and C{started} when the database server last started (both None on SQLite,
        whose clock is the host's).  Liveness is judged on the database's clock alone, so host
        clocks need not agree and a replayed beat is judged by when it was written.
        """
        dialect = self.store.sql
        if dialect.dbClock is None or dialect.serverStarted is None:
            return self.hosts().addCallback(lambda rows: (rows, None, None))
        cols = ", ".join("h." + c for c in HOST_COLUMNS)
        d = self.store.runQuery(
            f"SELECT {dialect.dbClock}, {dialect.serverStarted},"
            f" {cols} FROM (SELECT 1) AS one LEFT JOIN cluster_hosts h ON TRUE ORDER BY h.name"
        )

        def split(rows):
            now, started = float(rows[0][0]), float(rows[0][1])
            return [tuple(r[2:]) for r in rows if r[2] is not None], now, started

        return d.addCallback(split)

    def forgetHosts(self, before: float) -> Deferred:
        """Drop hosts not seen since C{before} (gone for good), and what they published."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute(
                "DELETE FROM cluster_instances WHERE host IN"
                " (SELECT name FROM cluster_hosts WHERE last_seen < ?)", (before,)
            )
            yield cursor.execute("DELETE FROM cluster_hosts WHERE last_seen < ?", (before,))
            return cursor.rowcount

        return self.store.runInteraction(run)

    # -- messages --------------------------------------------------------------------------------

    def send(self, uid: str, sender: str, recipient: str, kind: str, body: str, now: float,
             reply_to: str | None = None) -> Deferred:
        """Queue one message; fires with its id (the same id when a replay inserted nothing)."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute(
                "INSERT INTO cluster_messages (uid, sender, recipient, kind, body, created, reply_to)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING",
                (uid, sender, recipient, kind, body, now, reply_to),
            )
            yield cursor.execute("SELECT id FROM cluster_messages WHERE uid = ?", (uid,))
            return int(cursor.fetchone()[0])

        return self.store.runInteraction(run)

    def pending(self, host: str, limit: int = 100) -> Deferred:
        """Messages for C{host} (direct, and broadcasts since it first joined) that it has not
        received yet, oldest first: tuples in L{MESSAGE_COLUMNS} order."""
        return self.store.runQuery(_PENDING, (host, BROADCAST, host, host, limit))

    def claim(self, message_id: int, host: str, claimer: str, now: float) -> Deferred:
        """Record that C{host} received a message; fires True when this claimer holds it and has
        not finished it, False when it was received already (by an earlier run of the host)."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute(
                "INSERT INTO cluster_deliveries (message_id, host, state, claimer, delivered)"
                " VALUES (?, ?, 'delivered', ?, ?) ON CONFLICT (message_id, host) DO NOTHING",
                (message_id, host, claimer, now),
            )
            yield cursor.execute(
                "SELECT claimer, state FROM cluster_deliveries WHERE message_id = ? AND host = ?",
                (message_id, host),
            )
            row = cursor.fetchone()
            return bool(row) and row[0] == claimer and row[1] == "delivered"

        return self.store.runInteraction(run)

    def finish(self, message_id: int, host: str, state: str, result: str | None, now: float) -> Deferred:
        """Record a handler's outcome: C{acked} with its result, or C{failed} with the reason."""
        return self.store.runOperation(
            "UPDATE cluster_deliveries SET state = ?, done = ?, result = ? WHERE message_id = ? AND host = ?",
            (state, now, result, message_id, host),
        )

    def messages(self, host: str | None = None, kind: str | None = None, limit: int = 50) -> Deferred:
        """The newest messages (to, from or broadcast to C{host} when given), newest first, each
        with its deliveries: a list of dicts."""
        where, args = [], []
        if host:
            where.append("(sender = ? OR recipient = ? OR recipient = ?)")
            args += [host, host, BROADCAST]
        if kind:
            where.append("kind = ?")
            args.append(kind)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        sql = (
            "SELECT {cols}, d.host, d.state, d.delivered, d.done, d.result FROM cluster_messages m"
            " LEFT JOIN cluster_deliveries d ON d.message_id = m.id"
            " WHERE m.id IN (SELECT id FROM cluster_messages{clause} ORDER BY id DESC LIMIT ?)"
            " ORDER BY m.id DESC, d.host"
        ).format(cols=", ".join("m." + c for c in MESSAGE_COLUMNS), clause=clause)
        d = self.store.runQuery(sql, tuple(args) + (int(limit),))
        return d.addCallback(_messageDicts)

    def prune(self, before: float, keep: int) -> Deferred:
        """Delete messages created before C{before}, and all but the newest C{keep}; fires with
        how many messages were deleted."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute(
                "SELECT id FROM cluster_messages ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)
            )
            row = cursor.fetchone()
            floor = int(row[0]) if row else 0
            condition = "created < ? OR id <= ?"
            yield cursor.execute(
                f"DELETE FROM cluster_deliveries WHERE message_id IN"
                f" (SELECT id FROM cluster_messages WHERE {condition})", (before, floor)
            )
            yield cursor.execute(f"DELETE FROM cluster_messages WHERE {condition}", (before, floor))
            return cursor.rowcount

        return self.store.runInteraction(run)

    # -- published instances ---------------------------------------------------------------------

    def publish(self, host: str, instance: str, deploy: str, address: str, port: int, state: str,
                now: float) -> Deferred:
        """Insert or update one published instance (C{ready} or C{drain})."""
        return self.store.runOperation(
            "INSERT INTO cluster_instances (host, instance, deploy, address, port, state, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, instance) DO UPDATE SET"
            " deploy = excluded.deploy, address = excluded.address, port = excluded.port,"
            " state = excluded.state, updated = excluded.updated",
            (host, instance, deploy, address, int(port), state, now),
        )

    def drainAll(self, host: str, now: float) -> Deferred:
        """Publish every instance of C{host} as draining (a clean stop of the whole host)."""
        return self.store.runOperation(
            "UPDATE cluster_instances SET state = 'drain', updated = ? WHERE host = ?", (now, host)
        )

    def unpublish(self, host: str, instance: str) -> Deferred:
        """Withdraw one published instance."""
        return self.store.runOperation(
            "DELETE FROM cluster_instances WHERE host = ? AND instance = ?", (host, instance)
        )

    def republish(self, host: str, rows: list[tuple[str, str, str, int, str]], now: float) -> Deferred:
        """Replace everything C{host} publishes with C{rows} of C{(instance, deploy, address, port,
        state)} in one transaction (at start: what a crash left behind goes)."""

        @inlineCallbacks
        def run(cursor):
            yield cursor.execute("DELETE FROM cluster_instances WHERE host = ?", (host,))
            if rows:
                yield cursor.executemany(
                    "INSERT INTO cluster_instances (host, instance, deploy, address, port, state, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(host, i, d, a, int(p), s, now) for i, d, a, p, s in rows],
                )

        return self.store.runInteraction(run)

    def instances(self, deploy: str | None = None) -> Deferred:
        """Published instances: C{(host, instance, deploy, address, port, state)} tuples."""
        sql = "SELECT host, instance, deploy, address, port, state FROM cluster_instances"
        args: tuple = ()
        if deploy is not None:
            sql += " WHERE deploy = ?"
            args = (deploy,)
        return self.store.runQuery(sql + " ORDER BY host, instance", args)


def _messageDicts(rows: list[tuple]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    byId: dict[int, dict[str, Any]] = {}
    n = len(MESSAGE_COLUMNS)
    for row in rows:
        mid = int(row[0])
        message = byId.get(mid)
        if message is None:
            message = dict(zip(MESSAGE_COLUMNS, row[:n], strict=True))
            message["id"] = mid
            message["reply_to"] = message["reply_to"] or ""
            message["deliveries"] = []
            byId[mid] = message
            out.append(message)
        host, state, delivered, done, result = row[n:]
        if host is not None:
            message["deliveries"].append({
                "host": host, "state": state, "delivered": float(delivered or 0),
                "done": float(done or 0), "result": result or "",
            })
    return out

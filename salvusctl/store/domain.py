"""The foundation tables' queries, written once on top of any L{IStore}'s primitives."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from salvusctl.store.errors import StoreError
from salvusctl.store.migrations import Migration

__all__ = ["DomainQueries", "STATUS_COLUMNS"]

STATUS_COLUMNS = (
    "service_id",
    "timestamp",
    "load",
    "percent_mem",
    "percent_cpu",
    "cputime",
    "walltime",
    "virtual_size",
    "resident_size",
)

_INSERT_STATUS = "INSERT INTO status ({}) VALUES ({})".format(
    ", ".join(STATUS_COLUMNS), ", ".join("?" for _ in STATUS_COLUMNS)
)


def _statusDicts(rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(STATUS_COLUMNS, row, strict=False)) for row in rows]


class DomainQueries:
    """Mixed into each store: C{services} and C{status} in the same SQL for both dialects.

    Relies on C{runQuery}, C{runOperation}, C{runInteraction}, C{_reactor}, C{_migrations} and
    C{running} of the concrete store.
    Interactions are generators that C{yield} each C{cursor.execute}: on PostgreSQL that waits for
    the statement, on SQLite (whose cursor returns itself) it costs nothing, so one function
    serves both.  C{INSERT … RETURNING} gives new ids on both (SQLite 3.35+).
    """

    def _now(self) -> float:
        return self._reactor.seconds()

    def addMigrations(self, component: str, steps: list[Migration]) -> None:
        """Queue C{steps} for C{component}; they run when the store starts, so only before that."""
        if self.running:
            raise StoreError("addMigrations must be called before the store starts")
        self._migrations.setdefault(component, []).extend(steps)

    def recordServiceStart(
        self,
        type: str,
        site: str | None,
        address: str | None,
        port: int | None,
        user: str | None,
        pid: int | None,
        monitor_pid: int | None,
        host: str | None = None,
    ) -> Deferred:
        """Insert a C{services} row with C{running} true; fires with its id."""

        @inlineCallbacks
        def insert(cursor):
            yield cursor.execute(
                'INSERT INTO services (type, site, address, port, running, "user", pid,'
                " monitor_pid, host, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (type, site, address, port, True, user, pid, monitor_pid, host, self._now()),
            )
            return cursor.fetchone()[0]

        return self.runInteraction(insert)

    def recordServiceExit(self, service_id: int) -> Deferred:
        """Mark a C{services} row stopped (the row stays: history refers to it)."""
        return self.runOperation(
            "UPDATE services SET running = ?, stopped_at = ? WHERE id = ?",
            (False, self._now(), service_id),
        )

    def writeStatus(self, rows: list[dict[str, Any]]) -> Deferred:
        """Append many C{status} rows in one transaction; fires with how many."""
        values = [tuple(row.get(c) for c in STATUS_COLUMNS) for row in rows]
        if not values:
            return succeed(0)

        @inlineCallbacks
        def insert(cursor):
            yield cursor.executemany(_INSERT_STATUS, values)
            return len(values)

        return self.runInteraction(insert)

    def latestStatus(self) -> Deferred:
        """The newest C{status} row of every running service, by service id."""
        d = self.runQuery(
            "SELECT {} FROM services sv JOIN status st ON st.service_id = sv.id"
            " AND st.timestamp = (SELECT MAX(s2.timestamp) FROM status s2"
            " WHERE s2.service_id = sv.id) WHERE sv.running ORDER BY sv.id".format(
                ", ".join("st." + c for c in STATUS_COLUMNS)
            )
        )
        return d.addCallback(_statusDicts)

    def statusHistory(self, service_id: int, since: float, until: float | None = None) -> Deferred:
        """Status rows of one service with C{since <= timestamp <= until}, oldest first."""
        sql = "SELECT {} FROM status WHERE service_id = ? AND timestamp >= ?".format(
            ", ".join(STATUS_COLUMNS)
        )
        args: tuple = (service_id, since)
        if until is not None:
            sql += " AND timestamp <= ?"
            args += (until,)
        d = self.runQuery(sql + " ORDER BY timestamp", args)
        return d.addCallback(_statusDicts)

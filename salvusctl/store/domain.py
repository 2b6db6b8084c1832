"""The foundation tables' queries, written once on top of any L{IStore}'s primitives."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

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

    Relies on C{runQuery}, C{runInteraction} and C{_now} of the concrete store.
    """

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
        def insert(cursor):
            cursor.execute(
                'INSERT INTO services (type, site, address, port, running, "user", pid,'
                " monitor_pid, host, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (type, site, address, port, True, user, pid, monitor_pid, host, self._now()),
            )
            return cursor.fetchone()[0]

        return self.runInteraction(insert)

    def recordServiceExit(self, service_id: int) -> Deferred:
        return self.runOperation(
            "UPDATE services SET running = ?, stopped_at = ? WHERE id = ?",
            (False, self._now(), service_id),
        )

    def writeStatus(self, rows: list[dict[str, Any]]) -> Deferred:
        values = [tuple(row.get(c) for c in STATUS_COLUMNS) for row in rows]

        def insert(cursor):
            cursor.executemany(_INSERT_STATUS, values)
            return len(values)

        return self.runInteraction(insert)

    def latestStatus(self) -> Deferred:
        d = self.runQuery(
            "SELECT {} FROM services sv JOIN status st ON st.service_id = sv.id"
            " AND st.timestamp = (SELECT MAX(s2.timestamp) FROM status s2"
            " WHERE s2.service_id = sv.id) WHERE sv.running ORDER BY sv.id".format(
                ", ".join("st." + c for c in STATUS_COLUMNS)
            )
        )
        return d.addCallback(_statusDicts)

    def statusHistory(self, service_id: int, since: float, until: float | None = None) -> Deferred:
        if until is None:
            until = float("inf") if self.dialect == "sqlite" else 1e18
        d = self.runQuery(
            "SELECT {} FROM status WHERE service_id = ? AND timestamp >= ? AND timestamp <= ?"
            " ORDER BY timestamp".format(", ".join(STATUS_COLUMNS)),
            (service_id, since, until),
        )
        return d.addCallback(_statusDicts)

"""C{cap_table}-style retention: keep each table within an age and a row count.

Run inside one store transaction
(C{store.runInteraction(applyRetention, store.sql, policies, now, batch)}), by the monitor soon
after it starts, then periodically, and on demand (C{MonitorService.runRetention}).  On a
store with partitions (PostgreSQL) the partitioned C{logs} table loses whole day partitions past
the age limit (no row-by-row delete, no bloat); a row-count cap still deletes the oldest rows.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from twisted.internet.defer import inlineCallbacks

from salvusctl.monitor.schema import DAY, LOG_PARTITION_PREFIX
from salvusctl.store.dialects import SQLDialect, dialectNamed

__all__ = ["RetentionPolicy", "DEFAULT_RETENTION", "applyRetention", "TIME_COLUMNS"]

# The time column each table is capped by.
TIME_COLUMNS = {
    "status": "timestamp",
    "process_status": "timestamp",
    "host_status": "timestamp",
    "disk_status": "timestamp",
    "logs": "received_at",
    "alerts": "fired_at",
    "services": "stopped_at",
}


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep rows younger than C{max_age} seconds and at most C{max_rows} rows (None: no limit)."""

    max_age: float | None = None
    max_rows: int | None = None

    def __post_init__(self):
        if self.max_age is not None and not self.max_age > 0:
            raise ValueError(f"retention max_age must be > 0 seconds, not {self.max_age!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"retention max_rows must be a positive integer, not {self.max_rows!r}")


DEFAULT_RETENTION = {
    "status": RetentionPolicy(max_age=14 * DAY, max_rows=20_000_000),
    "process_status": RetentionPolicy(max_age=3 * DAY, max_rows=20_000_000),
    "host_status": RetentionPolicy(max_age=30 * DAY),
    "disk_status": RetentionPolicy(max_age=30 * DAY),
    "logs": RetentionPolicy(max_age=14 * DAY),
    "alerts": RetentionPolicy(max_age=180 * DAY),
    "services": RetentionPolicy(max_age=30 * DAY),
}


@inlineCallbacks
def _dropLogPartitions(cursor, cutoff: float):
    yield cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ?",
        ("logs",),
    )
    dropped = 0
    for (relname,) in cursor.fetchall():
        suffix = relname[len(LOG_PARTITION_PREFIX):]
        if not relname.startswith(LOG_PARTITION_PREFIX) or not suffix.isdigit():
            continue
        start = calendar.timegm(time.strptime(suffix, "%Y%m%d"))
        if start + DAY <= cutoff:
            yield cursor.execute(f"DROP TABLE {relname}")
            dropped += 1
    return dropped


def _older(sql: SQLDialect, table: str, column: str, batch: int | None) -> str:
    """A DELETE of C{table}'s rows with C{column < ?}, at most C{batch} of them (the oldest
    first, so a backlog goes in age order) when C{batch} is set: its C{?} are the cutoff, then
    the batch."""
    if batch is None:
        return f"DELETE FROM {table} WHERE {column} < ?"
    # The status tables have no key of their own: the row's physical address is one.
    key = sql.rowKey
    return (f"DELETE FROM {table} WHERE ({key}) IN"
            f" (SELECT {key} FROM {table} WHERE {column} < ? ORDER BY {column} LIMIT ?)")


@inlineCallbacks
def applyRetention(cursor, sql: SQLDialect | str, policies: dict[str, RetentionPolicy], now: float,
                   batch: int | None = None):
    """Apply every policy; returns {table: rows deleted (or partitions dropped for PG logs)}.

    @param sql: the store's L{SQLDialect} (C{store.sql}), or its name.
    @param batch: at most this many rows deleted per table and rule in this run (None: all), so
        that one run after a long stop holds the store's lock for a bounded time; a table whose
        count reached C{batch} has more left for the next run.
    """
    sql = dialectNamed(sql)
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"retention batch must be a positive integer, not {batch!r}")
    limit = () if batch is None else (batch,)
    removed: dict[str, int] = {}
    # Services last, so that the status rows removed first free the lives they belonged to.
    ordered = sorted(policies.items(), key=lambda item: item[0] == "services")
    for table, policy in ordered:
        column = TIME_COLUMNS.get(table)
        if column is None:
            raise ValueError(f"no retention for unknown table {table!r}: one of {sorted(TIME_COLUMNS)}")
        count = 0
        if table == "services":
            # Only lives that ended long ago and whose samples are gone already.
            if policy.max_age is not None:
                bounded = "" if batch is None else " AND id IN (SELECT id FROM services" \
                    " WHERE running = ? AND stopped_at < ? ORDER BY stopped_at LIMIT ?)"
                yield cursor.execute(
                    "DELETE FROM services WHERE running = ? AND stopped_at < ? AND NOT EXISTS"
                    " (SELECT 1 FROM status WHERE status.service_id = services.id)" + bounded,
                    (False, now - policy.max_age)
                    + (() if batch is None else (False, now - policy.max_age, batch)),
                )
                count += max(cursor.rowcount or 0, 0)
            removed[table] = count
            continue
        if policy.max_age is not None:
            cutoff = now - policy.max_age
            if table == "logs" and sql.partitions:
                count += yield _dropLogPartitions(cursor, cutoff)
            yield cursor.execute(_older(sql, table, column, batch), (cutoff, *limit))
            count += max(cursor.rowcount or 0, 0)
        if policy.max_rows is not None:
            yield cursor.execute(
                f"SELECT {column} FROM {table} ORDER BY {column} DESC LIMIT 1 OFFSET ?",
                (policy.max_rows - 1,),
            )
            row = cursor.fetchone()
            if row is not None:
                yield cursor.execute(_older(sql, table, column, batch), (row[0], *limit))
                count += max(cursor.rowcount or 0, 0)
        removed[table] = count
    return removed

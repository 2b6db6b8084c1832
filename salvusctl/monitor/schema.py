"""The monitor's tables, as store migrations written from the store's SQL capabilities.

The foundation owns C{services} and C{status}; the monitor adds the columns it samples beyond the
foundation's set (threads, fds, process state, process count), and its own tables: per-process
samples, host samples, disk samples, alerts, and deploy log lines.  On a store with partitions
(PostgreSQL) the log table is partitioned by day (declarative range partitioning on the line's
receive time) so that retention drops whole partitions instead of deleting rows.
"""

from __future__ import annotations

from salvusctl.store.dialects import SQLDialect
from salvusctl.store.migrations import Migration

__all__ = ["MONITOR_MIGRATIONS", "LOG_PARTITION_PREFIX", "DAY"]

DAY = 86400.0
LOG_PARTITION_PREFIX = "logs_p"

_STATUS_EXTRA = """
ALTER TABLE status ADD COLUMN threads INTEGER;
ALTER TABLE status ADD COLUMN fds INTEGER;
ALTER TABLE status ADD COLUMN state TEXT;
ALTER TABLE status ADD COLUMN nprocs INTEGER;
CREATE INDEX services_site ON services (site, id);
CREATE INDEX status_time ON status (timestamp);
"""

_TABLES = """
CREATE TABLE process_status (
    service_id {bigint} NOT NULL,
    timestamp DOUBLE PRECISION NOT NULL,
    pid INTEGER NOT NULL,
    ppid INTEGER,
    name TEXT,
    percent_cpu DOUBLE PRECISION,
    percent_mem DOUBLE PRECISION,
    cputime DOUBLE PRECISION,
    walltime DOUBLE PRECISION,
    virtual_size BIGINT,
    resident_size BIGINT,
    threads INTEGER,
    fds INTEGER,
    state TEXT
);
CREATE INDEX process_status_service_time ON process_status (service_id, timestamp);
CREATE INDEX process_status_time ON process_status (timestamp);
CREATE TABLE host_status (
    host TEXT NOT NULL,
    timestamp DOUBLE PRECISION NOT NULL,
    load1 DOUBLE PRECISION,
    load5 DOUBLE PRECISION,
    load15 DOUBLE PRECISION,
    percent_cpu DOUBLE PRECISION,
    mem_total BIGINT,
    mem_free BIGINT,
    mem_available BIGINT,
    swap_total BIGINT,
    swap_used BIGINT
);
CREATE INDEX host_status_host_time ON host_status (host, timestamp);
CREATE INDEX host_status_time ON host_status (timestamp);
CREATE TABLE disk_status (
    host TEXT NOT NULL,
    timestamp DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT,
    total BIGINT,
    used BIGINT,
    free BIGINT,
    percent DOUBLE PRECISION
);
CREATE INDEX disk_status_host_time ON disk_status (host, timestamp);
CREATE INDEX disk_status_time ON disk_status (timestamp);
CREATE TABLE alerts (
    id {serial} PRIMARY KEY,
    host TEXT,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    fired_at DOUBLE PRECISION NOT NULL,
    cleared_at DOUBLE PRECISION
);
CREATE INDEX alerts_open ON alerts (rule, subject, cleared_at);
CREATE INDEX alerts_time ON alerts (fired_at);
"""

# On a store with partitions the parent table only: day partitions are created on demand by the
# writer (see logs.py).
_LOGS = """
CREATE TABLE logs (
    host TEXT,
    deploy TEXT NOT NULL,
    instance TEXT NOT NULL,
    stream TEXT NOT NULL,
    level TEXT NOT NULL,
    text TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
){partition};
CREATE INDEX logs_deploy_time ON logs (deploy, received_at);
CREATE INDEX logs_time ON logs (received_at);
"""


def _logs(sql: SQLDialect) -> str:
    return _LOGS.format(partition=" PARTITION BY RANGE (received_at)" if sql.partitions else "")


# (table, its key per tick, the index the key replaces or None)
TICK_KEYS = (
    ("status", ("service_id", "timestamp"), None),
    ("process_status", ("service_id", "timestamp", "pid"), "process_status_service_time"),
    ("host_status", ("host", "timestamp"), "host_status_host_time"),
    ("disk_status", ("host", "timestamp", "kind", "name"), "disk_status_host_time"),
)

_HISTORY_COLUMNS = ("load, percent_mem, percent_cpu, cputime, walltime, virtual_size, resident_size,"
                    " threads, fds, state, nprocs")


def _tickKeys(sql: SQLDialect) -> str:
    statements = []
    row = sql.rowId
    for table, key, replaced in TICK_KEYS:
        columns = ", ".join(key)
        if sql.deleteUsing:
            # A self-join that keeps the lowest address per key (ctid has no MIN on PostgreSQL 15).
            same = " AND ".join(f"a.{c} = b.{c}" for c in key)
            statements.append(f"DELETE FROM {table} a USING {table} b WHERE {same} AND a.{row} > b.{row};")
        else:
            statements.append(
                f"DELETE FROM {table} WHERE {row} NOT IN (SELECT MIN({row}) FROM {table} GROUP BY {columns});"
            )
        if table == "status" and sql.coveringIndexes:
            # The covering history index becomes the unique one: no extra index to maintain.
            statements.append(
                f"CREATE UNIQUE INDEX status_tick ON status ({columns}) INCLUDE ({_HISTORY_COLUMNS});"
            )
            statements.append("DROP INDEX status_history;")
        else:
            statements.append(f"CREATE UNIQUE INDEX {table}_tick ON {table} ({columns});")
            if replaced:
                statements.append(f"DROP INDEX {replaced};")
    return "\n".join(statements) + "\n"


# The alerts' notification outbox (salvusctl/alerts/outbox.py).  Here because the alerts need a
# monitor, and its migrations are registered before the store starts even when a reload adds the
# first alert rule to a running host.
_OUTBOX = """
CREATE TABLE alert_notifications (
    id {serial} PRIMARY KEY,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    title TEXT NOT NULL,
    alert TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    next_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION,
    expired_at DOUBLE PRECISION,
    last_error TEXT
);
CREATE INDEX alert_notifications_host ON alert_notifications (host, delivered_at, id);
"""

_STATUS_HISTORY = """
CREATE INDEX status_history ON status (service_id, timestamp) INCLUDE (load, percent_mem,
    percent_cpu, cputime, walltime, virtual_size, resident_size, threads, fds, state, nprocs)
"""

MONITOR_MIGRATIONS = [
    Migration(1, "status columns sampled by the monitor", _STATUS_EXTRA),
    Migration(
        2,
        "process, host, disk samples and alerts",
        lambda sql: _TABLES.format(bigint=sql.bigint, serial=sql.serial),
    ),
    Migration(3, "deploy log lines", _logs),
    # "One instance's last hour" and "latest of every instance" as index-only scans: at a million
    # rows the samples of one instance sit on as many heap pages as rows, and reading those was
    # most of the query's time.  SQLite keeps its rows by rowid and has no INCLUDE: nothing to do.
    Migration(
        4,
        "covering index for status history and latest",
        lambda sql: _STATUS_HISTORY if sql.coveringIndexes else "",
    ),
    # A tick's rows are written again when the commit's acknowledgement is lost (the store
    # replays the write): a unique key per row of a tick lets that second write insert nothing.
    # Duplicates already stored are removed first, keeping the first copy.
    Migration(5, "one row per tick: unique sample keys", _tickKeys),
    Migration(6, "alert notification outbox", lambda sql: _OUTBOX.format(serial=sql.serial)),
]

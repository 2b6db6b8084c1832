"""The monitor's stored-data queries, in SQL both dialects run.

"Latest status of all running instances" and "one instance's last hour" must stay fast at millions
of status rows: both walk the C{(service_id, timestamp)} index, one probe per running service
(PostgreSQL through C{LATERAL … LIMIT 1}, SQLite through its MAX-by-index optimisation), never a scan
of C{status}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from salvusctl.store.domain import STATUS_COLUMNS

__all__ = ["runningWithStatus", "history", "lifetime", "hostHistory", "SAMPLE_COLUMNS", "SAMPLE_KEYS",
           "KEY_OF_COLUMN"]

# The foundation's status columns, then the ones the monitor's own migration adds.
SAMPLE_COLUMNS = STATUS_COLUMNS + ("threads", "fds", "state", "nprocs")

# The monitor answers in one vocabulary, the keys of its samples (what C{latest()} gives:
# C{cpu_percent}, C{rss} …), whether a sample comes from memory or from the store.  The tables
# keep their column names; rows are renamed here, on their way out of the store.
KEY_OF_COLUMN = {
    "percent_cpu": "cpu_percent",
    "percent_mem": "mem_percent",
    "resident_size": "rss",
    "virtual_size": "vms",
    "state": "status",  # the process's own status ("sleeping"), as in a latest sample
}
SAMPLE_KEYS = tuple(KEY_OF_COLUMN.get(c, c) for c in SAMPLE_COLUMNS)
_SERVICE_COLUMNS = ("id", "type", "site", "address", "port", "pid", "host", "started_at",
                    "stopped_at", "running")
_FOREVER = 1e18


def _st(prefix: str) -> str:
    return ", ".join(f"{prefix}.{c}" for c in SAMPLE_COLUMNS)


def runningWithStatus(store) -> Deferred:
    """Every running service (its C{services} row) with its newest stored sample under C{sample}
    (None before its first sample)."""
    svc = ", ".join(f"sv.{c}" for c in _SERVICE_COLUMNS[:-1])
    if store.sql.lateralJoins:
        sql = (
            f"SELECT {svc}, {_st('st')} FROM services sv LEFT JOIN LATERAL"
            f" (SELECT * FROM status s WHERE s.service_id = sv.id ORDER BY s.timestamp DESC LIMIT 1)"
            " st ON TRUE WHERE sv.running ORDER BY sv.id"
        )
    else:
        sql = (
            f"SELECT {svc}, {_st('st')} FROM services sv LEFT JOIN status st"
            " ON st.service_id = sv.id AND st.timestamp ="
            " (SELECT MAX(s2.timestamp) FROM status s2 WHERE s2.service_id = sv.id)"
            " WHERE sv.running ORDER BY sv.id"
        )

    def shape(rows):
        out = []
        seen = set()
        n = len(_SERVICE_COLUMNS) - 1
        for row in rows:
            if row[0] in seen:  # two samples with one timestamp: keep one
                continue
            seen.add(row[0])
            item: dict[str, Any] = dict(zip(_SERVICE_COLUMNS[:-1], row[:n], strict=True))
            item["sample"] = None if row[n] is None else dict(zip(SAMPLE_KEYS, row[n:], strict=True))
            out.append(item)
        return out

    return store.runQuery(sql).addCallback(shape)


def _samples(rows) -> list[dict[str, Any]]:
    return [dict(zip(SAMPLE_KEYS, row, strict=True)) for row in rows]


_LIVES = (
    "SELECT id FROM services WHERE site = ? AND host = ? AND (started_at IS NULL OR"
    " started_at <= ?) AND (stopped_at IS NULL OR stopped_at >= ?) ORDER BY id"
)


def history(store, host: str, name: str, since: float, until: float | None = None) -> Deferred:
    """Samples of the instance C{name} on C{host} (every life overlapping the range), oldest first.

    The lives (services rows) overlapping the range are found first and their samples read by
    C{service_id} on the C{(service_id, timestamp)} index, whatever the planner's statistics say.

    On PostgreSQL the statistics of a live C{status} table are always behind its newest rows —
    exactly the last hour a history asks for.  Given C{timestamp >= ?} the planner then believes
    that hour nearly empty and walks the index on C{timestamp} alone, filtering out every other
    instance's rows (≈ 30 ms, 143,280 rows removed, at 200 instances interleaved as a monitor
    writes them).  So the lives are read first (one small query) and each one's range is written
    as C{service_id = life AND (service_id, timestamp) BETWEEN (life, since) AND (life, until)}:
    a row comparison only an index that starts with C{(service_id, timestamp)} can answer, with
    the life a constant (no join for the planner to get wrong).  ≈ 1–5 ms; the plan is checked in
    C{tests/monitor/test_pg.py}.  SQLite gets one query with C{IN (subquery)}.
    """
    end = _FOREVER if until is None else until
    if store.sql.sampledStatistics:
        return _pgHistory(store, host, name, since, end)
    # Ordered by the bare column, SQLite walks the index on timestamp alone (every instance's
    # hour, ≈ 25 ms at a million rows); the unary + makes it probe the (service_id, timestamp)
    # index and sort this instance's rows (≈ 2 ms).
    sql = (
        "SELECT {} FROM status WHERE service_id IN ({}) AND timestamp >= ? AND timestamp <= ?"
        " ORDER BY +timestamp".format(", ".join(SAMPLE_COLUMNS), _LIVES.replace(" ORDER BY id", ""))
    )
    d = store.runQuery(sql, (name, host, end, since, since, end))
    return d.addCallback(_samples)


def historySQL(lives: int) -> str:
    """The PostgreSQL samples query for C{lives} lives; its parameters, per life: id, id, since,
    id, until."""
    one = (
        "SELECT {} FROM status WHERE service_id = ? AND (service_id, timestamp) >= (?, ?)"
        " AND (service_id, timestamp) <= (?, ?)".format(", ".join(SAMPLE_COLUMNS))
    )
    if lives == 1:
        return one + " ORDER BY timestamp"
    return " UNION ALL ".join(f"({one})" for _ in range(lives)) + " ORDER BY timestamp"


@inlineCallbacks
def _pgHistory(store, host: str, name: str, since: float, end: float):
    rows = yield store.runQuery(_LIVES, (name, host, end, since))
    ids = [row[0] for row in rows]
    if not ids:
        return []
    args: list[Any] = []
    for life in ids:
        args += [life, life, since, life, end]
    samples = yield store.runQuery(historySQL(len(ids)), tuple(args))
    return _samples(samples)


@inlineCallbacks
def lifetime(store, host: str, name: str, since: float | None = None, until: float | None = None):
    """One instance's lifetime: {name, lives: [services rows], events: [...], samples: [...]}.

    Events are C{start} and C{exit} in time order, so "how often did it restart and when" is one
    read.
    """
    rows = yield store.runQuery(
        "SELECT {} FROM services WHERE site = ? AND host = ? ORDER BY id".format(
            ", ".join(_SERVICE_COLUMNS)
        ),
        (name, host),
    )
    lives = [dict(zip(_SERVICE_COLUMNS, row, strict=True)) for row in rows]
    for life in lives:
        life["running"] = bool(life["running"])
    events = []
    for life in lives:
        events.append({"event": "start", "time": life["started_at"], "pid": life["pid"],
                       "service_id": life["id"]})
        if life["stopped_at"] is not None:
            events.append({"event": "exit", "time": life["stopped_at"], "pid": life["pid"],
                           "service_id": life["id"]})
    events.sort(key=lambda e: (e["time"] or 0, e["service_id"], e["event"] != "start"))
    samples = yield history(store, host, name, 0.0 if since is None else since, until)
    return {"name": name, "host": host, "lives": lives, "events": events, "samples": samples}


_HOST_COLUMNS = ("host", "timestamp", "load1", "load5", "load15", "percent_cpu", "mem_total",
                 "mem_free", "mem_available", "swap_total", "swap_used")
_HOST_KEYS = tuple(KEY_OF_COLUMN.get(c, c) for c in _HOST_COLUMNS)  # as latestHost() names them


def hostHistory(store, host: str, since: float, until: float | None = None) -> Deferred:
    """Host samples of C{host} between two times, oldest first."""
    d = store.runQuery(
        "SELECT {} FROM host_status WHERE host = ? AND timestamp >= ? AND timestamp <= ?"
        " ORDER BY timestamp".format(", ".join(_HOST_COLUMNS)),
        (host, since, _FOREVER if until is None else until),
    )
    return d.addCallback(lambda rows: [dict(zip(_HOST_KEYS, r, strict=True)) for r in rows])

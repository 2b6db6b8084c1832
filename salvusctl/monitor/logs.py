"""Deploy log lines in the store: the supervisor's per-line hook, day partitions, search.

On PostgreSQL the C{logs} table is partitioned by day on the line's receive time; a partition is
created (under an advisory lock, so hosts sharing one database do not race) the first time a line of
that day is written, and retention drops whole partitions.  SQLite keeps one plain table.
"""

from __future__ import annotations

import time

from twisted.internet.defer import Deferred, inlineCallbacks

from salvusctl.monitor.schema import DAY, LOG_PARTITION_PREFIX
from salvusctl.monitor.sqlbatch import insertMany

__all__ = ["LogWriter", "partitionName", "LOG_COLUMNS"]

LOG_COLUMNS = ("host", "deploy", "instance", "stream", "level", "text", "received_at",
               "recorded_at")
_INSERT_PREFIX = "INSERT INTO logs ({})".format(", ".join(LOG_COLUMNS))
# Any fixed number: all hosts take the same lock before creating a partition.
_PARTITION_LOCK = 0x5A17_0001
MAX_TEXT = 8192


def partitionName(day: int) -> str:
    """The partition holding day number C{day} (days since the epoch, UTC): C{logs_p20261123}."""
    return LOG_PARTITION_PREFIX + time.strftime("%Y%m%d", time.gmtime(day * DAY))


def _likeEscape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class LogWriter:
    """Turns hook calls into rows and writes and searches them.

    @param store: the L{IStore}.
    @param host: this host's name, stored with each line (one database can serve a fleet).
    """

    def __init__(self, store, host: str, reactor):
        self._store = store
        self._host = host
        self._reactor = reactor
        self._days: set[int] = set()

    def row(self, name: str, stream: str, level: str, text: str, received: float) -> tuple:
        """One buffered row; C{recorded_at} is filled in when it is written."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"log line needs an instance name, not {name!r}")
        deploy = name.split(":", 1)[0]
        text = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        return (self._host, deploy, name, stream or "stdout", (level or "info").lower(),
                text[:MAX_TEXT], float(received))

    def forgetPartitions(self) -> None:
        """Retention may have dropped partitions: check again before the next insert."""
        self._days.clear()

    @inlineCallbacks
    def insert(self, cursor, rows: list[tuple], now: float):
        """Write rows inside the caller's transaction (the monitor's per-tick flush)."""
        if self._store.sql.partitions:
            days = {int(r[6] // DAY) for r in rows} - self._days
            if days:
                yield cursor.execute("SELECT pg_advisory_xact_lock(?)", (_PARTITION_LOCK,))
                for day in sorted(days):
                    yield cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {partitionName(day)} PARTITION OF logs"
                        f" FOR VALUES FROM ({day * DAY:.1f}) TO ({(day + 1) * DAY:.1f})"
                    )
                # Remembered optimistically; a rolled-back transaction re-creates next time.
                self._days |= days
        yield insertMany(cursor, self._store.sql, _INSERT_PREFIX, [(*r, now) for r in rows])

    def search(
        self,
        deploy: str | None = None,
        instance: str | None = None,
        level: str | list[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        host: str | None = None,
        limit: int = 200,
    ) -> Deferred:
        """Lines matching every given criterion, newest first, at most C{limit}.

        @param level: one level or a list of levels (C{"error"}, C{["warn", "error"]}).
        @param text: a case-insensitive substring (no wildcards: C{%} and C{_} match themselves).
        """
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        where, args = [], []

        def given(clause: str, value: object) -> None:
            if value is not None:
                where.append(clause)
                args.append(value)

        given("deploy = ?", deploy)
        given("instance = ?", instance)
        given("host = ?", host)
        if level is not None:
            levels = [level] if isinstance(level, str) else list(level)
            where.append("level IN ({})".format(", ".join("?" for _ in levels)))
            args.extend(lv.lower() for lv in levels)
        given("received_at >= ?", since)
        given("received_at <= ?", until)
        if text:
            where.append("LOWER(text) LIKE ? ESCAPE '\\'")
            args.append("%" + _likeEscape(text.lower()) + "%")
        sql = "SELECT {} FROM logs{} ORDER BY received_at DESC LIMIT {}".format(
            ", ".join(LOG_COLUMNS), (" WHERE " + " AND ".join(where)) if where else "", int(limit)
        )
        d = self._store.runQuery(sql, tuple(args))
        return d.addCallback(lambda rows: [dict(zip(LOG_COLUMNS, r, strict=True)) for r in rows])


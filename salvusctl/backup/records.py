"""Backup runs, restores and verifications as rows in the host's store (SQLite or PostgreSQL).

The store is the history an operator queries; the backup directory's own manifests are what a
restore trusts, so a fresh host with an empty store can still restore (see L{layout}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from salvusctl.store.migrations import Migration

__all__ = ["BACKUP_MIGRATIONS", "RUN_COLUMNS", "Records", "OK", "FAILED", "INTERRUPTED", "RUNNING"]

RUNNING = "running"
OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"

_TABLES = """
CREATE TABLE backup_runs (
    id {pk},
    run_id TEXT NOT NULL UNIQUE,
    backup TEXT NOT NULL,
    host TEXT,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    outcome TEXT NOT NULL,
    base_run TEXT,
    bytes_transferred BIGINT,
    snapshot_size BIGINT,
    dump_size BIGINT,
    manifest TEXT,
    log TEXT,
    deleted_at DOUBLE PRECISION
);
CREATE INDEX backup_runs_backup_started ON backup_runs (backup, started);
CREATE TABLE backup_restores (
    id {pk},
    run_id TEXT NOT NULL,
    backup TEXT NOT NULL,
    kind TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    outcome TEXT NOT NULL,
    report TEXT,
    log TEXT
);
"""

BACKUP_MIGRATIONS = [
    Migration(
        1,
        "backup runs and restores",
        lambda sql: _TABLES.format(pk=sql.serialKey),
    )
]

RUN_COLUMNS = (
    "run_id",
    "backup",
    "host",
    "started",
    "ended",
    "outcome",
    "base_run",
    "bytes_transferred",
    "snapshot_size",
    "dump_size",
    "manifest",
    "log",
    "deleted_at",
)

_RESTORE_COLUMNS = (
    "id", "run_id", "backup", "kind", "dry_run", "started", "ended", "outcome", "report", "log"
)


def _runDict(row: tuple) -> dict[str, Any]:
    run = dict(zip(RUN_COLUMNS, row, strict=True))
    run["manifest"] = json.loads(run["manifest"]) if run["manifest"] else None
    return run


class Records:
    """The backup tables' queries on any L{IStore} (C{?} placeholders on both dialects)."""

    def __init__(self, store):
        self.store = store

    def startRun(self, run_id: str, backup: str, host: str, started: float, base_run: str | None) -> Deferred:
        return self.store.runOperation(
            "INSERT INTO backup_runs (run_id, backup, host, started, outcome, base_run)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, backup, host, started, RUNNING, base_run),
        )

    def finishRun(
        self,
        run_id: str,
        ended: float,
        outcome: str,
        bytes_transferred: int,
        snapshot_size: int,
        dump_size: int,
        manifest: dict | None,
        log: str,
    ) -> Deferred:
        return self.store.runOperation(
            "UPDATE backup_runs SET ended = ?, outcome = ?, bytes_transferred = ?, snapshot_size = ?,"
            " dump_size = ?, manifest = ?, log = ? WHERE run_id = ?",
            (
                ended,
                outcome,
                bytes_transferred,
                snapshot_size,
                dump_size,
                json.dumps(manifest) if manifest is not None else None,
                log,
                run_id,
            ),
        )

    def markStale(self, backup: str, host: str, now: float) -> Deferred:
        """Runs this host left C{running} when it died are C{interrupted}: never a base.

        Only this host's rows: in a fleet's shared store another host may be mid-run.
        """
        return self.store.runOperation(
            "UPDATE backup_runs SET outcome = ?, ended = ? WHERE backup = ? AND host = ? AND outcome = ?",
            (INTERRUPTED, now, backup, host, RUNNING),
        )

    def markDeleted(self, run_id: str, now: float) -> Deferred:
        return self.store.runOperation(
            "UPDATE backup_runs SET deleted_at = ? WHERE run_id = ?", (now, run_id)
        )

    def runs(self, backup: str | None = None, include_deleted: bool = False) -> Deferred:
        """Fires with run dicts, oldest first."""
        where, args = [], []
        if backup is not None:
            where.append("backup = ?")
            args.append(backup)
        if not include_deleted:
            where.append("deleted_at IS NULL")
        sql = "SELECT {} FROM backup_runs{} ORDER BY started, id".format(
            ", ".join(RUN_COLUMNS), (" WHERE " + " AND ".join(where)) if where else ""
        )
        return self.store.runQuery(sql, tuple(args)).addCallback(lambda rows: [_runDict(r) for r in rows])

    def run(self, run_id: str) -> Deferred:
        """Fires with one run dict, or None."""
        d = self.store.runQuery(
            "SELECT {} FROM backup_runs WHERE run_id = ?".format(", ".join(RUN_COLUMNS)), (run_id,)
        )
        return d.addCallback(lambda rows: _runDict(rows[0]) if rows else None)

    def lastGood(self, backup: str) -> Deferred:
        """Fires with the newest C{ok}, not deleted run of a backup set, or None."""
        d = self.store.runQuery(
            "SELECT {} FROM backup_runs WHERE backup = ? AND outcome = ? AND deleted_at IS NULL"
            " ORDER BY started DESC, id DESC LIMIT 1".format(", ".join(RUN_COLUMNS)),
            (backup, OK),
        )
        return d.addCallback(lambda rows: _runDict(rows[0]) if rows else None)

    def recordRestore(
        self,
        run_id: str,
        backup: str,
        kind: str,
        dry_run: bool,
        started: float,
        ended: float,
        outcome: str,
        report: dict,
        log: str,
    ) -> Deferred:
        return self.store.runOperation(
            "INSERT INTO backup_restores (run_id, backup, kind, dry_run, started, ended, outcome,"
            " report, log) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, backup, kind, dry_run, started, ended, outcome, json.dumps(report), log),
        )

    def restores(self) -> Deferred:
        d = self.store.runQuery(
            "SELECT {} FROM backup_restores ORDER BY started, id".format(", ".join(_RESTORE_COLUMNS))
        )

        def convert(rows):
            out = []
            for row in rows:
                item = dict(zip(_RESTORE_COLUMNS, row, strict=True))
                item["dry_run"] = bool(item["dry_run"])
                item["report"] = json.loads(item["report"]) if item["report"] else None
                out.append(item)
            return out

        return d.addCallback(convert)

"""The backup service: scheduled runs of every declared backup set, and the verbs the admin exposes
(run, status, list, verify, restore)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.logger import Logger

from salvusctl.backup.declaration import Backup
from salvusctl.backup.job import AlreadyRunning, BackupJob
from salvusctl.backup.layout import scanRuns
from salvusctl.backup.records import Records
from salvusctl.backup.restore import RestoreError, Restorer
from salvusctl.backup.schedule import Scheduler

__all__ = ["BackupService", "UnknownBackup"]

log = Logger()


class UnknownBackup(KeyError):
    """No declared backup set has that name (or owns that run id)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown backup"


class BackupService(Service):
    """Runs the declared backup sets on their schedules and restores / verifies their runs.

    @param supervisor: an L{ISupervisor}, or a callable returning one (looked up when a restore
        needs it), or None.
    @param ready: returns a Deferred that fires when the store is started (the host's store
        service); stale C{running} rows are marked C{interrupted} once it has.
    """

    name = "backup"

    def __init__(
        self,
        reactor,
        store,
        declarations: list[Backup],
        host_name: str,
        work_dir: str,
        supervisor: Any = None,
        ready: Callable[[], Deferred | None] | None = None,
        python: str = sys.executable,
    ):
        self.reactor = reactor
        self.records = Records(store)
        self._supervisor = supervisor
        self._ready = ready
        self.jobs: dict[str, BackupJob] = {}
        self.restorers: dict[str, Restorer] = {}
        self.schedulers: dict[str, Scheduler] = {}
        for declaration in declarations:
            job = BackupJob(reactor, declaration, self.records, host_name, work_dir, python)
            self.jobs[declaration.name] = job
            self.restorers[declaration.name] = Restorer(reactor, job, None)
            if declaration.schedule is not None:
                self.schedulers[declaration.name] = Scheduler(
                    reactor, declaration.schedule, lambda job=job: self._scheduled(job))
        self.started: Deferred | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def supervisor(self):
        supervisor = self._supervisor
        if callable(supervisor) and not hasattr(supervisor, "stopDeploy"):
            supervisor = supervisor()
        return supervisor

    def startService(self) -> None:
        super().startService()
        ready = self._ready() if self._ready is not None else None
        d = ready if isinstance(ready, Deferred) else succeed(None)
        d.addCallback(lambda _: self._markStale())
        d.addErrback(lambda f: log.failure("backup: reading the run history failed", f))
        # Schedules start even if the history could not be read: backups matter more.
        d.addCallback(lambda _: self._startSchedules())
        self.started = d

    def _startSchedules(self) -> None:
        if self.running:
            for scheduler in self.schedulers.values():
                scheduler.start()

    @inlineCallbacks
    def _markStale(self):
        now = self.reactor.seconds()
        for name, job in self.jobs.items():
            yield self.records.markStale(name, job.host_name, now)
            runs = yield self.records.runs(name)
            if runs and job.last is None:
                last = runs[-1]
                job.last = {k: last[k] for k in ("run_id", "backup", "outcome", "started", "ended",
                                                 "base_run", "bytes_transferred", "snapshot_size",
                                                 "dump_size")}

    def stopService(self) -> Deferred:
        super().stopService()
        for scheduler in self.schedulers.values():
            scheduler.stop()
        waits = [d for d in (job.interrupt() for job in self.jobs.values()) if d is not None]
        return DeferredList(waits) if waits else succeed(None)

    def _scheduled(self, job: BackupJob):
        if job.current is not None or self.restorers[job.name].busy:
            log.info("backup {name}: busy, skipping this slot", name=job.name)
            return None
        return job.run()

    # -- lookups ---------------------------------------------------------------------------------

    def job(self, name: str | None = None) -> BackupJob:
        if name is None:
            if len(self.jobs) != 1:
                raise UnknownBackup("several backup sets: name one of " + ", ".join(sorted(self.jobs)))
            return next(iter(self.jobs.values()))
        if name not in self.jobs:
            raise UnknownBackup(f"no backup set named {name!r}")
        return self.jobs[name]

    def jobForRun(self, run_id: str) -> BackupJob:
        """The set a run id belongs to (run ids are C{NAME-YYYYmmddTHHMMSSZ})."""
        owners = [n for n in self.jobs if run_id.startswith(n + "-")]
        if not owners:
            raise UnknownBackup(f"run {run_id!r} belongs to no backup set on this host")
        return self.jobs[max(owners, key=len)]

    def restorer(self, name: str) -> Restorer:
        restorer = self.restorers[name]
        restorer.supervisor = self.supervisor()
        return restorer

    # -- the verbs -------------------------------------------------------------------------------

    def run(self, name: str | None = None) -> Deferred:
        """Start a backup now; fires with its summary once it has finished."""
        job = self.job(name)
        if self.restorers[job.name].busy:
            return _fail(AlreadyRunning(f"backup {job.name}: a restore or verify is running"))
        try:
            return job.run()
        except AlreadyRunning as e:
            return _fail(e)

    def status(self) -> list[dict[str, Any]]:
        """Each set's state: running (run id, phase, percent, bytes) or idle, last run, next due."""
        out = []
        for name, job in self.jobs.items():
            status = job.status()
            scheduler = self.schedulers.get(name)
            status["schedule"] = scheduler.schedule.describe() if scheduler else "on demand"
            status["next_due"] = scheduler.due if scheduler else None
            out.append(status)
        return out

    @inlineCallbacks
    def listRuns(self, name: str | None = None):
        """Fires with run dicts, oldest first: the store's rows, plus good runs found only in the
        backup directory (a fresh host, another host's runs)."""
        jobs = [self.job(name)] if name is not None else list(self.jobs.values())
        out = []
        for job in jobs:
            rows = yield self.records.runs(job.name)
            known = {r["run_id"] for r in rows}
            view = yield job.localView()
            good, _ = scanRuns(view, job.name)
            good_ids = {m["run_id"] for m in good}
            for row in rows:
                row.pop("manifest", None)
                row.pop("log", None)
                row["in_directory"] = row["run_id"] in good_ids
                out.append(row)
            for manifest in good:
                if manifest["run_id"] not in known:
                    out.append({
                        "run_id": manifest["run_id"], "backup": job.name, "host": manifest.get("host"),
                        "started": manifest["started"], "ended": manifest["ended"], "outcome": "ok",
                        "base_run": manifest.get("base_run"),
                        "bytes_transferred": manifest.get("bytes_transferred"),
                        "snapshot_size": manifest.get("snapshot_size"),
                        "dump_size": manifest.get("dump_size"), "deleted_at": None,
                        "in_directory": True,
                    })
        out.sort(key=lambda r: (r["started"], r["run_id"]))
        return out

    def runLog(self, run_id: str) -> Deferred:
        """Fires with a run's log text."""
        def extract(row):
            if row is None:
                raise UnknownBackup(f"no run {run_id!r} in the store")
            return row["log"] or ""
        return self.records.run(run_id).addCallback(extract)

    def verify(self, run_id: str | None = None, name: str | None = None) -> Deferred:
        """Restore a run into scratch space and check row counts and checksums; fires with a report."""
        job = self.jobForRun(run_id) if run_id else self.job(name)
        return self.restorer(job.name).verify(run_id)

    def restore(self, run_id: str | None = None, dry_run: bool = False, name: str | None = None) -> Deferred:
        """Restore a run (default: the newest good one); fires with the report (steps, outcome)."""
        job = self.jobForRun(run_id) if run_id else self.job(name)
        if job.current is not None and not dry_run:
            return _fail(RestoreError(f"backup {job.name} is running ({job.current.run_id}); retry later"))
        return self.restorer(job.name).restore(run_id, dry_run)


def _fail(exception: Exception) -> Deferred:
    from twisted.internet.defer import fail

    return fail(exception)

"""The backup service: scheduled runs of every declared backup set, and the verbs the admin exposes
(run, status, list, verify, restore)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.backup.declare import Backup
from salvusctl.backup.job import AlreadyRunning, BackupJob
from salvusctl.backup.layout import scanRuns
from salvusctl.backup.records import Records
from salvusctl.backup.restore import RestoreError, Restorer
from salvusctl.backup.schedule import Scheduler
from salvusctl.interfaces import IBackup

__all__ = ["BackupService", "UnknownBackup", "sameBackup"]

log = Logger()


class UnknownBackup(KeyError):
    """No declared backup set has that name (or owns that run id)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown backup"


@implementer(IBackup)
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
        self._host_name = host_name
        self._work_dir = work_dir
        self._python = python
        self.jobs: dict[str, BackupJob] = {}
        self.restorers: dict[str, Restorer] = {}
        self.schedulers: dict[str, Scheduler] = {}
        # name -> the declaration a reload gave a busy set (None: the reload removed it), applied
        # once its run (or restore) is over.
        self._pending: dict[str, Backup | None] = {}
        self._schedulesStarted = False
        self._waiting: set[str] = set()  # runs whose end will settle pending declarations
        for declaration in declarations:
            self._addSet(declaration)
            self._schedule(declaration.name, declaration)
        self.started: Deferred | None = None

    def _addSet(self, declaration: Backup) -> None:
        job = BackupJob(self.reactor, declaration, self.records, self._host_name, self._work_dir,
                        self._python)
        self.jobs[declaration.name] = job
        self.restorers[declaration.name] = Restorer(self.reactor, job, None)

    def _schedule(self, name: str, declaration: Backup | None) -> None:
        """Give set C{name} a scheduler for C{declaration}'s schedule (none when it has none or
        is gone); an unchanged schedule keeps its scheduler and its next due time."""
        old = self.schedulers.pop(name, None)
        schedule = declaration.schedule if declaration is not None else None
        if old is not None and old.schedule == schedule:
            self.schedulers[name] = old
            return
        if old is not None:
            old.stop()
        if schedule is None:
            return
        job = self.jobs[name]
        scheduler = self.schedulers[name] = Scheduler(
            self.reactor, schedule, lambda job=job: self._scheduled(job))
        if self._schedulesStarted:
            scheduler.start()

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
            self._schedulesStarted = True
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
        self._schedulesStarted = False
        for scheduler in self.schedulers.values():
            scheduler.stop()
        waits = [d for d in (job.interrupt() for job in self.jobs.values()) if d is not None]
        return DeferredList(waits) if waits else succeed(None)

    # -- reload ----------------------------------------------------------------------------------

    def reconfigure(self, declarations: list[Backup]) -> dict[str, list[str]]:
        """Take a new list of backup sets on the running service (a host reload).

        Added sets get a job and, if scheduled, a running scheduler; a removed set's scheduler
        stops.  A new schedule takes effect now (an unchanged one keeps its next due time).  A set's
        other settings (sources, destination, keep counts …) reach its job between runs: a backup
        or restore running during the reload finishes with the old settings, the next run uses the
        new ones, and a removed set disappears once it is idle.  Returns the set names added,
        changed and removed.
        """
        wanted = {d.name: d for d in declarations}
        effective = {n: self._pending.get(n, job.decl) for n, job in self.jobs.items()}
        effective = {n: d for n, d in effective.items() if d is not None}
        summary = {
            "added": sorted(n for n in wanted if n not in effective),
            "changed": sorted(n for n in wanted
                              if n in effective and not sameBackup(effective[n], wanted[n])),
            "removed": sorted(n for n in effective if n not in wanted),
        }
        for name in summary["added"]:
            if name in self.jobs:
                self._pending[name] = wanted[name]  # removed while busy, and back again
            else:
                self._addSet(wanted[name])
        for name in summary["changed"] + summary["removed"]:
            self._pending[name] = wanted.get(name)
        for kind, names in summary.items():
            for name in names:
                self._schedule(name, wanted.get(name))
                log.info("backup {name}: {kind} by a reload", name=name, kind=kind)
        self._settle()
        return summary

    def _settle(self) -> None:
        """Hand reloaded declarations to the sets that are idle now; the busy ones get theirs
        when their run finishes (or at the next verb, after a restore)."""
        for name, declaration in list(self._pending.items()):
            job = self.jobs[name]
            if job.current is not None:
                if job.current.run_id not in self._waiting:
                    self._waiting.add(job.current.run_id)
                    job.current.finished.addBoth(self._afterRun, job.current.run_id)
                continue
            if self.restorers[name].busy:
                continue
            del self._pending[name]
            if declaration is None:
                del self.jobs[name]
                del self.restorers[name]
                log.info("backup {name}: removed", name=name)
            else:
                job.reconfigure(declaration)
                self.restorers[name].decl = declaration
                log.info("backup {name}: new settings in use", name=name)

    def _afterRun(self, result, run_id: str):
        self._waiting.discard(run_id)
        self._settle()
        return result

    def _scheduled(self, job: BackupJob):
        self._settle()
        if job.name not in self.jobs:
            return None
        if job.current is not None or self.restorers[job.name].busy:
            log.info("backup {name}: busy, skipping this slot", name=job.name)
            return None
        return job.run()

    # -- lookups ---------------------------------------------------------------------------------

    def job(self, name: str | None = None) -> BackupJob:
        self._settle()
        if name is None:
            if len(self.jobs) != 1:
                raise UnknownBackup("several backup sets: name one of " + ", ".join(sorted(self.jobs)))
            return next(iter(self.jobs.values()))
        if name not in self.jobs:
            raise UnknownBackup(f"no backup set named {name!r}")
        return self.jobs[name]

    def jobForRun(self, run_id: str) -> BackupJob:
        """The set a run id belongs to (run ids are C{NAME-YYYYmmddTHHMMSSZ})."""
        self._settle()
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
        self._settle()
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


def sameBackup(a: Backup, b: Backup) -> bool:
    """Two declarations of one set describe the same backup (every field, as validated)."""
    return type(a) is type(b) and vars(a) == vars(b)


def _fail(exception: Exception) -> Deferred:
    from twisted.internet.defer import fail

    return fail(exception)

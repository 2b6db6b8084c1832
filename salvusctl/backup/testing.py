"""A fake of the backup service, for the admin's and the CLI's tests and for users' own tests.

L{FakeBackup} keeps its runs in memory and answers every L{IBackup} verb with the keys, outcomes
and errors of the real L{salvusctl.backup.service.BackupService}: the contract suite in
C{tests/backup/test_contract.py} runs against both, the real one with rsync and a SQLite store.
A test scripts what the next run does (L{FakeBackup.failNext}) and what has been restored
(L{FakeBackup.restored}) instead of running rsync and database dumps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from salvusctl.backup.job import AlreadyRunning
from salvusctl.backup.layout import makeRunId
from salvusctl.backup.restore import RestoreError
from salvusctl.backup.service import UnknownBackup
from salvusctl.interfaces import IBackup

__all__ = ["FakeBackup"]

#: The keys of a run as L{FakeBackup.listRuns} and the real service list it.
LISTED = ("run_id", "backup", "host", "started", "ended", "outcome", "base_run", "bytes_transferred",
          "snapshot_size", "dump_size", "deleted_at", "in_directory")


@implementer(IBackup)
class FakeBackup:
    """Backup sets that "copy" C{size} bytes per run, instantly, on C{clock}'s time.

    @param sets: set name -> its destination.
    @param clock: anything with C{seconds()} (a L{twisted.internet.task.Clock}); run ids and
        times come from it, as the real service's come from its reactor.
    """

    def __init__(self, sets: dict[str, str], clock: Any, host_name: str = "test", size: int = 1000):
        self.sets = dict(sets)
        self.clock = clock
        self.host_name = host_name
        self.size = size
        self.runs: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}
        self.running: set[str] = set()
        self.restored: list[str] = []
        self._failNext: dict[str, str] = {}

    # -- scripting ---------------------------------------------------------------------------

    def failNext(self, name: str, why: str) -> None:
        """The next run of set C{name} fails with C{why} (outcome C{failed}, as the real one)."""
        self._failNext[name] = why

    # -- lookups as the real service does them -----------------------------------------------

    def _set(self, name: str | None) -> str:
        if name is None:
            if len(self.sets) != 1:
                raise UnknownBackup("several backup sets: name one of " + ", ".join(sorted(self.sets)))
            return next(iter(self.sets))
        if name not in self.sets:
            raise UnknownBackup(f"no backup set named {name!r}")
        return name

    def _setOfRun(self, run_id: str) -> str:
        owners = [n for n in self.sets if run_id.startswith(n + "-")]
        if not owners:
            raise UnknownBackup(f"run {run_id!r} belongs to no backup set on this host")
        return max(owners, key=len)

    def _good(self, name: str, run_id: str | None) -> dict[str, Any]:
        good = [r for r in self.runs if r["backup"] == name and r["outcome"] == "ok"]
        if run_id is None:
            if not good:
                raise RestoreError(f"backup {name}: no good run to restore in {self.sets[name]}")
            return good[-1]
        for run in good:
            if run["run_id"] == run_id:
                return run
        row = next((r for r in self.runs if r["run_id"] == run_id), None)
        why = f"its outcome is {row['outcome']}" if row else "no such run in the backup directory"
        raise RestoreError(f"run {run_id} cannot be restored: {why}")

    # -- IBackup -----------------------------------------------------------------------------

    def run(self, name: str | None = None) -> Deferred:
        try:
            name = self._set(name)
        except UnknownBackup as e:
            return fail(e)
        if name in self.running:
            return fail(AlreadyRunning(f"backup {name} is already running"))
        now = self.clock.seconds()
        run_id = makeRunId(name, now, {r["run_id"] for r in self.runs})
        why = self._failNext.pop(name, None)
        ok = why is None
        good = [r["run_id"] for r in self.runs if r["backup"] == name and r["outcome"] == "ok"]
        base = good[-1] if good else None
        log = f"backup {run_id} to {self.sets[name]}\n" + (f"FAILED: {why}" if why else "done")
        run = {"run_id": run_id, "backup": name, "outcome": "ok" if ok else "failed", "started": now,
               "ended": now, "base_run": base if ok else None,
               "bytes_transferred": self.size if ok else 0,
               "snapshot_size": self.size if ok else 0, "dump_size": 0, "log": log}
        self.runs.append(dict(run, host=self.host_name, deleted_at=None))
        self.logs[run_id] = log
        return succeed(run)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for name, destination in self.sets.items():
            last = next((r for r in reversed(self.runs) if r["backup"] == name), None)
            if last is not None:
                last = {k: last[k] for k in ("run_id", "backup", "outcome", "started", "ended", "base_run",
                                             "bytes_transferred", "snapshot_size", "dump_size", "log")}
            out.append({"backup": name, "destination": destination,
                        "state": "running" if name in self.running else "idle", "last": last,
                        "schedule": "on demand", "next_due": None})
        return out

    def listRuns(self, name: str | None = None) -> Deferred:
        try:
            names = [self._set(name)] if name is not None else list(self.sets)
        except UnknownBackup as e:
            return fail(e)
        out = []
        for run in self.runs:
            if run["backup"] in names:
                row = {k: run.get(k) for k in LISTED if k != "in_directory"}
                row["in_directory"] = run["outcome"] == "ok"
                out.append(row)
        out.sort(key=lambda r: (r["started"], r["run_id"]))
        return succeed(out)

    def runLog(self, run_id: str) -> Deferred:
        if run_id not in self.logs:
            return fail(UnknownBackup(f"no run {run_id!r} in the store"))
        return succeed(self.logs[run_id])

    def verify(self, run_id: str | None = None, name: str | None = None) -> Deferred:
        try:
            name = self._setOfRun(run_id) if run_id else self._set(name)
            run = self._good(name, run_id)
        except (UnknownBackup, RestoreError) as e:
            return fail(e)
        return succeed({"run_id": run["run_id"], "backup": name, "ok": True, "problems": [],
                        "checked": [f"files: {run['snapshot_size']} bytes match their checksums"],
                        "seconds": 0.0})

    def restore(self, run_id: str | None = None, dry_run: bool = False, name: str | None = None) -> Deferred:
        try:
            name = self._setOfRun(run_id) if run_id else self._set(name)
            if name in self.running and not dry_run:
                raise RestoreError(f"backup {name} is running; retry later")
            run = self._good(name, run_id)
        except (UnknownBackup, RestoreError) as e:
            return fail(e)
        outcome = "planned" if dry_run else "ok"
        steps = [{"step": f"restore files to {self.sets[name]}", "kind": "files", "outcome": outcome},
                 {"step": f"record the restore of {run['run_id']} in the store", "kind": "record",
                  "outcome": outcome}]
        if not dry_run:
            self.restored.append(run["run_id"])
        return succeed({"run_id": run["run_id"], "backup": name, "dry_run": bool(dry_run), "steps": steps,
                        "outcome": "ok", "error": ""})

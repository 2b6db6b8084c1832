"""One backup set's runs: dump the databases, snapshot the directories, write the manifest, prune.

A run is good only when every step succeeded; its C{manifest.json} is written last, so a run that
fails, is interrupted or whose host dies has no manifest and is never the C{--link-dest} base of
the next run nor a default restore point.  The store row of each run says the same thing for the
operator (C{ok}, C{failed}, C{interrupted}).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from salvusctl.backup import dbtools
from salvusctl.backup.declare import Backup, Database
from salvusctl.backup.layout import (
    FORMAT,
    MANIFEST,
    dumpName,
    makeRunId,
    runStarted,
    scanRuns,
    writeIndex,
    writeJSON,
)
from salvusctl.backup.records import FAILED, INTERRUPTED, OK, Records
from salvusctl.backup.retention import RunInfo, selectRuns
from salvusctl.backup.rsync import ProgressParser, copyCommand, parseStats, snapshotCommand
from salvusctl.backup.runner import ProcessHandle, checkResult, runProcess

__all__ = ["BackupJob", "RunState", "Interrupted", "AlreadyRunning", "hashtreeCommand"]

log = Logger()

class Interrupted(Exception):
    """The run was stopped (service stop or an operator) before it finished."""


class AlreadyRunning(Exception):
    """A run of this backup set is already in progress."""


def hashtreeCommand(python: str, directory: str, base_dir: str | None = None,
                    base_json: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The child process that checksums a tree.

    The module runs as a script by its path: it needs only the standard library, and importing
    the package (and with it Twisted) would cost more than hashing an incremental snapshot.
    """
    from salvusctl.backup import hashtree

    argv = [python, "-I", hashtree.__file__, directory]
    if base_dir and base_json:
        argv += [base_dir, base_json]
    return argv, {}


@dataclass
class RunState:
    """The live progress of a run, for C{status()} and the log."""

    run_id: str
    backup: str
    started: float
    steps_total: int
    steps_done: int = 0
    phase: str = "starting"
    step: str = ""
    step_percent: int = 0
    bytes: int = 0
    interrupted: bool = False
    handle: ProcessHandle | None = None
    lines: list[str] = field(default_factory=list)
    finished: Deferred = field(default_factory=Deferred)
    _last_logged: int = -1

    @property
    def percent(self) -> int:
        if self.steps_total <= 0:
            return 0
        return min(100, int((self.steps_done + self.step_percent / 100.0) * 100 / self.steps_total))

    def snapshot(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "step": self.step,
            "percent": self.percent,
            "step_percent": self.step_percent,
            "bytes": self.bytes,
            "started": self.started,
            "log_tail": self.lines[-5:],
        }


class BackupJob:
    """Runs one L{Backup} declaration: C{run()}, C{status()}, C{interrupt()}.

    @param work_dir: local scratch space (staging for a remote destination, manifest cache).
    @param python: the interpreter that runs the checksum child.
    """

    def __init__(
        self,
        reactor,
        declaration: Backup,
        records: Records,
        host_name: str,
        work_dir: str,
        python: str = sys.executable,
    ):
        if declaration.destination is None:
            declaration.validate(None)
        self.reactor = reactor
        self.decl = declaration
        self.name = declaration.name
        self.dest = declaration.destination
        self.records = records
        self.host_name = host_name
        self.work_dir = work_dir
        self.python = python
        self.current: RunState | None = None
        self.last: dict[str, Any] | None = None
        self.observers: list[Callable[[RunState], None]] = []
        self._used_ids: set[str] = set()

    def reconfigure(self, declaration: Backup) -> None:
        """Use a new declaration of this set from the next run on (a host reload).

        Only between runs: a run reads C{decl} and C{dest} as it goes, so changing them under it
        would mix two configurations in one run (L{BackupService.reconfigure} waits for it).
        """
        if self.current is not None:
            raise AlreadyRunning(f"backup {self.name} is running ({self.current.run_id})")
        if declaration.name != self.name:
            raise ValueError(f"backup {self.name}: a reload cannot rename the set to {declaration.name!r}")
        if declaration.destination is None:
            declaration.validate(None)
        self.decl = declaration
        self.dest = declaration.destination

    # -- reading the directory -------------------------------------------------------------------

    @inlineCallbacks
    def localView(self):
        """A local directory holding this set's run directories (and the partial-run ids).

        For a remote destination only the manifests are fetched (C{rsync --include}), into a
        cache under C{work_dir}; that is all that picking a base or a restore point needs.
        """
        if not self.dest.remote:
            return self.dest.path
        cache = os.path.join(self.work_dir, "manifests", self.name)
        os.makedirs(cache, exist_ok=True)
        argv = [
            "rsync", "-a", "--delete", "--prune-empty-dirs", "-e", self.dest.ssh,
            "--include=*/", f"--include={MANIFEST}", "--exclude=*",
            self.dest.join("") + "/", cache + "/",
        ]
        result = yield runProcess(self.reactor, argv).finished
        if not result.ok:
            log.warn("backup {name}: cannot list {dest}: {why}", name=self.name, dest=str(self.dest),
                     why=result.describe())
        return cache

    @inlineCallbacks
    def goodRuns(self):
        """Fires with this set's good manifests, oldest first, read from the directory itself."""
        view = yield self.localView()
        good, _ = scanRuns(view, self.name)
        return good

    # -- a run -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"backup": self.name, "destination": str(self.dest)}
        if self.current is not None:
            status["state"] = "running"
            status.update(self.current.snapshot())
        else:
            status["state"] = "idle"
        status["last"] = self.last
        return status

    def interrupt(self) -> Deferred | None:
        """Stop the run in progress (its child gets SIGTERM); fires once it is recorded."""
        state = self.current
        if state is None:
            return None
        state.interrupted = True
        if state.handle is not None:
            state.handle.kill(signal.SIGTERM)
        return state.finished

    def _log(self, state: RunState, message: str, **kw: Any) -> None:
        text = message.format(**kw) if kw else message
        offset = self.reactor.seconds() - state.started
        state.lines.append(f"[{offset:8.1f}s] {text}")
        log.info("backup {run}: {text}", run=state.run_id, text=text)

    def _notify(self, state: RunState) -> None:
        percent = state.percent
        if percent // 10 != state._last_logged // 10:
            state._last_logged = percent
            self._log(state, "progress {p}% ({b} bytes) {step}", p=percent, b=state.bytes, step=state.step)
        for observer in list(self.observers):
            observer(state)

    @inlineCallbacks
    def _exec(self, state: RunState, argv: list[str], **kwargs):
        if state.interrupted:
            raise Interrupted("interrupted")
        handle = runProcess(self.reactor, argv, **kwargs)
        state.handle = handle
        self._notify(state)
        try:
            result = yield handle.finished
        finally:
            state.handle = None
        if state.interrupted:
            raise Interrupted("interrupted")
        return checkResult(result)

    def run(self) -> Deferred:
        """Start a run; fires with its summary dict (outcome C{ok}, C{failed} or C{interrupted})."""
        if self.current is not None:
            raise AlreadyRunning(f"backup {self.name} is already running ({self.current.run_id})")
        now = self.reactor.seconds()
        taken = set(self._used_ids)
        if not self.dest.remote and os.path.isdir(self.dest.path):
            taken.update(os.listdir(self.dest.path))
        steps = len(self.decl.databases) + 2 * len(self.decl.paths) + 1
        state = RunState(makeRunId(self.name, now, taken), self.name, now, steps)
        self._used_ids.add(state.run_id)
        self.current = state
        d = self._run(state)

        def done(summary):
            self.current = None
            self.last = summary
            state.finished.callback(summary)
            return summary

        def broken(failure):
            # Only the store or the directory listing can fail outside the run's own handling:
            # free the set for the next run and let the caller see why.
            self.current = None
            state.finished.callback(None)
            return failure

        return d.addCallbacks(done, broken)

    @inlineCallbacks
    def _run(self, state: RunState):
        run_id = state.run_id
        good = yield self.goodRuns()
        base = good[-1] if good else None
        base_id = base["run_id"] if base else None
        yield self.records.startRun(run_id, self.name, self.host_name, state.started, base_id)
        self._log(state, "backup {run} to {dest} (base {base})", run=run_id, dest=str(self.dest),
                  base=base_id or "none: full copy")
        meta = (os.path.join(self.work_dir, "staging", run_id) if self.dest.remote
                else self.dest.localPath(run_id))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "backup": self.name,
            "run_id": run_id,
            "host": self.host_name,
            "started": state.started,
            "base_run": base_id,
            "deploys": list(self.decl.deploys),
            "databases": [],
            "files": [],
        }
        transferred = snapshot_size = dump_size = 0
        outcome = OK
        try:
            os.makedirs(os.path.join(meta, "db"), exist_ok=True)
            os.makedirs(os.path.join(meta, "checksums"), exist_ok=True)
            previous = {d["key"]: d["size"] for d in (base or {}).get("databases", [])}
            for db in self.decl.databases:
                entry = yield self._dump(state, db, meta, previous.get(db.key))
                manifest["databases"].append(entry)
                dump_size += entry["size"]
                transferred += entry["size"]
                state.steps_done += 1
            for label, source in self.decl.paths.items():
                entry = yield self._snapshot(state, label, source, base, meta)
                manifest["files"].append(entry)
                snapshot_size += entry["total_size"]
                transferred += entry["transferred"]
            state.phase, state.step = "manifest", MANIFEST
            manifest.update(
                ended=self.reactor.seconds(),
                outcome=OK,
                bytes_transferred=transferred,
                snapshot_size=snapshot_size,
                dump_size=dump_size,
            )
            yield self._writeManifest(state, meta, manifest)
            state.steps_done, state.step_percent = state.steps_total, 0
            self._notify(state)
            self._log(state, "done: {t} bytes transferred, snapshot {s} bytes, dumps {d} bytes",
                      t=transferred, s=snapshot_size, d=dump_size)
        except Exception as e:
            outcome = INTERRUPTED if state.interrupted else FAILED
            self._log(state, "{outcome}: {why}", outcome=outcome.upper(), why=str(e) or type(e).__name__)
        ended = self.reactor.seconds()
        yield self.records.finishRun(
            run_id, ended, outcome, transferred, snapshot_size, dump_size,
            manifest if outcome == OK else None, "\n".join(state.lines),
        )
        if outcome == OK:
            try:
                yield self.prune(state)
            except Exception as e:
                self._log(state, "pruning failed: {why}", why=e)
        return {
            "run_id": run_id,
            "backup": self.name,
            "outcome": outcome,
            "started": state.started,
            "ended": ended,
            "base_run": base_id,
            "bytes_transferred": transferred,
            "snapshot_size": snapshot_size,
            "dump_size": dump_size,
            "log": "\n".join(state.lines),
        }

    @inlineCallbacks
    def _dump(self, state: RunState, db: Database, meta: str, expected: int | None = None):
        """Dump one database.  @param expected: the last good dump's size, the best estimate of
        this one's, for a percentage (a dump's size is not known before it ends)."""
        state.phase, state.step, state.step_percent = "dump", db.key, 0
        relative = dumpName(db.kind, db.key)
        path = os.path.join(meta, relative)
        start = self.reactor.seconds()
        written = [0]

        def counting(data: bytes, feed=None) -> None:
            state.bytes += len(data)
            written[0] += len(data)
            if expected:
                percent = min(99, written[0] * 100 // expected)
                if percent != state.step_percent:
                    state.step_percent = percent
                    self._notify(state)
            if feed is not None:
                feed(data)

        if db.kind == "postgresql":
            result = yield self._exec(state, dbtools.pgDumpCommand(db), env=dbtools.clientEnv(db),
                                      stdoutPath=path, onStdout=counting)
            counter = dbtools.PgCopyCounter()
            yield self._exec(state, dbtools.pgDataSqlCommand(path), onStdout=counter.feed,
                             captureStdout=False)
        else:
            counter = dbtools.MysqlInsertCounter()
            result = yield self._exec(state, dbtools.mysqldumpCommand(db), env=dbtools.clientEnv(db),
                                      stdoutPath=path, onStdout=lambda data: counting(data, counter.feed))
        tables = counter.finish()
        self._log(state, "dumped {key}: {size} bytes, {n} tables, {rows} rows in {t:.1f}s",
                  key=db.key, size=result.size, n=len(tables), rows=sum(tables.values()),
                  t=self.reactor.seconds() - start)
        return {
            "key": db.key,
            "kind": db.kind,
            "name": db.name,
            "url": db.url(),
            "file": relative,
            "sha256": result.sha256,
            "size": result.size,
            "tables": tables,
        }

    @inlineCallbacks
    def _snapshot(self, state: RunState, label: str, source: str, base: dict | None, meta: str):
        state.phase, state.step, state.step_percent = "files", label, 0
        run_id = state.run_id
        subpath = f"{run_id}/files/{label}"
        link_dest = None
        if base is not None and any(f["label"] == label for f in base.get("files", [])):
            link_dest = self.dest.localPath(base["run_id"], "files", label)
        parser = ProgressParser()
        bytes_before = state.bytes

        def progress(data: bytes) -> None:
            for p in parser.feed(data):
                state.step_percent = p.percent
                state.bytes = bytes_before + p.bytes
                self._notify(state)

        argv = snapshotCommand(source, self.dest, subpath, link_dest, self.decl.rsync_args)
        self._log(state, "snapshot {label}: {argv}", label=label, argv=shlex.join(argv))
        yield self._exec(state, argv, onStdout=progress, captureStdout=False)
        stats = parseStats(parser.finish())
        state.bytes = bytes_before + stats.transferred
        state.steps_done += 1
        state.phase, state.step_percent = "checksums", 0
        # A remote snapshot cannot be read here: its checksums are taken from the source, which
        # rsync has just made identical.
        tree = source if self.dest.remote else self.dest.localPath(subpath)
        if link_dest and not self.dest.remote:
            base_entry = next(f for f in base["files"] if f["label"] == label)
            argv, env = hashtreeCommand(self.python, tree, link_dest,
                                        self.dest.localPath(base["run_id"], base_entry["checksums"]))
        else:
            argv, env = hashtreeCommand(self.python, tree)
        result = yield self._exec(state, argv, env=env)
        checksums = json.loads(result.stdout)
        relative = f"checksums/{label}.json"
        payload = json.dumps(checksums, sort_keys=True).encode()
        with open(os.path.join(meta, relative), "wb") as f:
            f.write(payload)
        state.steps_done += 1
        self._log(state, "snapshot {label}: {files} files, {size} bytes, {t} bytes transferred "
                  "({linked} linked to {base})", label=label, files=len(checksums),
                  size=stats.total_size, t=stats.transferred,
                  linked=len(checksums) - stats.files_transferred, base=base["run_id"] if link_dest else "-")
        return {
            "label": label,
            "source": source,
            "path": f"files/{label}",
            "checksums": relative,
            "checksums_sha256": hashlib.sha256(payload).hexdigest(),
            "files": len(checksums),
            "total_size": stats.total_size,
            "transferred": stats.transferred,
            "linked_to": base["run_id"] if link_dest else None,
        }

    @inlineCallbacks
    def _writeManifest(self, state: RunState, meta: str, manifest: dict[str, Any]):
        if not self.dest.remote:
            writeJSON(os.path.join(meta, MANIFEST), manifest)
            good, _ = scanRuns(self.dest.path, None)
            writeIndex(self.dest.path, good)
            return
        # Remote: push the dumps and checksums, then the manifest alone, last.
        ssh = self.dest.ssh
        yield self._exec(state, copyCommand(meta, self.dest.join(state.run_id), ssh=ssh, delete=False))
        writeJSON(os.path.join(meta, "pending", MANIFEST), manifest)
        yield self._exec(state, copyCommand(os.path.join(meta, "pending"), self.dest.join(state.run_id),
                                            ssh=ssh, delete=False))
        yield self._exec(state, ["rm", "-rf", "--", meta])

    # -- retention -------------------------------------------------------------------------------

    @inlineCallbacks
    def prune(self, state: RunState | None = None):
        """Apply the retention policy; delete dropped run directories; fires with dropped ids."""
        view = yield self.localView()
        good, partial = scanRuns(view, self.name)
        runs = {m["run_id"]: RunInfo(m["run_id"], m["started"], True) for m in good}
        for run_id in partial:
            runs[run_id] = RunInfo(run_id, runStarted(run_id) or 0.0, False)
        stored = yield self.records.runs(self.name)
        for row in stored:
            if row["run_id"] not in runs and row["outcome"] != OK:
                runs[row["run_id"]] = RunInfo(row["run_id"], row["started"], False)
        if self.current is not None and state is not self.current:
            runs.pop(self.current.run_id, None)
        keep, drop = selectRuns(runs.values(), self.reactor.seconds(), self.decl.keep)
        for run_id in drop:
            if self.dest.remote:
                argv = shlex.split(self.dest.ssh) + [
                    self.dest.host, "rm", "-rf", "--", shlex.quote(self.dest.localPath(run_id))]
            else:
                argv = ["rm", "-rf", "--", self.dest.localPath(run_id)]
            result = yield runProcess(self.reactor, argv).finished
            checkResult(result)
            yield self.records.markDeleted(run_id, self.reactor.seconds())
            if state is not None:
                self._log(state, "retention: removed {run}", run=run_id)
        if drop and not self.dest.remote:
            good, _ = scanRuns(self.dest.path, None)
            writeIndex(self.dest.path, good)
        return drop

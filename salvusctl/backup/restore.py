"""Restore a run (stop deploys, swap databases in, swap directories in, restart) and verify a run.

Every restore target is built beside the live one and swapped in by a rename at the end:
PostgreSQL restores into C{NAME_restore_X} and renames both databases in one transaction;
MariaDB loads C{NAME_restore_X} and moves every table with one atomic C{RENAME TABLE}; a directory
is copied to C{PATH.restore-X} and renamed over.  A restore that fails before its swap leaves the
old data untouched and usable.

Only the backup directory is read: a fresh host with an empty store restores from it alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.logger import Logger

from salvusctl.backup import dbtools
from salvusctl.backup.declare import Database, parseDatabase
from salvusctl.backup.hashtree import compareTrees
from salvusctl.backup.job import BackupJob, hashtreeCommand
from salvusctl.backup.layout import readManifest
from salvusctl.backup.records import FAILED, OK
from salvusctl.backup.rsync import copyCommand
from salvusctl.backup.runner import ProcessFailed, checkResult, runProcess

__all__ = ["Restorer", "RestoreError", "Step"]

log = Logger()

_ACTIVE_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF"})
# Addresses of this machine: a database there on a deploy's port is served by that deploy.
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})


class RestoreError(Exception):
    """The restore cannot proceed (no such run, nothing to restore from); says why."""


@dataclass
class Step:
    """One line of a restore plan; C{action} runs it (None for a dry run's listing)."""

    kind: str
    description: str
    action: Callable[[], Deferred] | None = None


class Restorer:
    """Restores and verifies the runs of one backup set.

    @param supervisor: an L{ISupervisor} (or None on a host without one: deploys are then not
        stopped, and the plan says so).
    """

    def __init__(self, reactor, job: BackupJob, supervisor=None):
        self.reactor = reactor
        self.job = job
        self.decl = job.decl
        self.records = job.records
        self.supervisor = supervisor
        self.work_dir = job.work_dir
        self.busy = False

    # -- helpers ---------------------------------------------------------------------------------

    @inlineCallbacks
    def _exec(self, argv: list[str], **kwargs):
        result = yield runProcess(self.reactor, argv, **kwargs).finished
        return checkResult(result)

    def _database(self, entry: dict[str, Any]) -> Database:
        """The declared connection (it has the password) or, on a fresh host, the manifest's URL."""
        for db in self.decl.databases:
            if db.key == entry["key"]:
                return db
        return parseDatabase(entry["url"], entry["kind"])

    @inlineCallbacks
    def resolve(self, run_id: str | None):
        """Fires with (manifest, local run directory) of C{run_id}, or of the newest good run."""
        good = yield self.job.goodRuns()
        if run_id is None:
            if not good:
                raise RestoreError(f"backup {self.job.name}: no good run to restore in {self.job.dest}")
            run_id = good[-1]["run_id"]
        elif run_id not in {m["run_id"] for m in good}:
            row = yield self.records.run(run_id)
            why = f"its outcome is {row['outcome']}" if row else "no such run in the backup directory"
            raise RestoreError(f"run {run_id} cannot be restored: {why}")
        if self.job.dest.remote:
            local = os.path.join(self.work_dir, "fetch", run_id)
            yield self._exec(copyCommand(self.job.dest.join(run_id), local, ssh=self.job.dest.ssh))
        else:
            local = self.job.dest.localPath(run_id)
        manifest = readManifest(local)
        if manifest is None:
            raise RestoreError(f"run {run_id}: manifest unreadable in {local}")
        return manifest, local

    def _runningDeploys(self) -> list[str]:
        if self.supervisor is None:
            return []
        active = {_deployOf(info) for info in self.supervisor.instanceInfos()
                  if info.get("state") in _ACTIVE_STATES}
        return [d for d in self.decl.deploys if d in active]

    def servingDeploys(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The set's deploys that serve one of the run's databases: deploy -> what it serves.

        A deploy serves a database when one of its instances listens on that database's port on
        this machine (C{tac/services.tac}'s C{pg} runs the PostgreSQL it backs up).  A restore
        restores into that server, so it must keep it running rather than stop it with the
        deploys that use the data.
        """
        if self.supervisor is None:
            return {}
        wanted = {}
        for entry in manifest.get("databases", []):
            db = self._database(entry)
            if db.host in _LOCAL_HOSTS or db.host.startswith("/"):
                wanted.setdefault(db.port, f"{db.kind} {db.name} on port {db.port}")
        serving: dict[str, str] = {}
        for info in self.supervisor.instanceInfos():
            deploy = _deployOf(info)
            if deploy in self.decl.deploys and info.get("port") in wanted:
                serving.setdefault(deploy, wanted[info["port"]])
        return {d: serving[d] for d in self.decl.deploys if d in serving}

    # -- restore ---------------------------------------------------------------------------------

    def plan(self, manifest: dict[str, Any], run_dir: str, suffix: str,
             to_stop: list[str], serving: dict[str, str] | None = None) -> list[Step]:
        """The steps of a restore, in order (stop, databases, files, record, start).

        Only deploys this restore actually stopped are started again.  A deploy in C{serving}
        (deploy -> the database it serves) is never stopped: it is kept running, or started first
        when it is not, because the databases are restored into it.
        """
        serving = serving or {}
        steps = []
        stopped: list[str] = []

        def stop(deploy: str):
            d = maybeDeferred(self.supervisor.stopDeploy, deploy)
            return d.addCallback(lambda _: stopped.append(deploy))

        def start(deploy: str):
            if deploy not in stopped:
                return succeed("skipped")
            return maybeDeferred(self.supervisor.startDeploy, deploy)

        deploys = list(self.decl.deploys)
        if deploys and self.supervisor is None:
            steps.append(Step("note", "no supervisor on this host: deploys "
                              + ", ".join(deploys) + " are not stopped"))
        for deploy in reversed(deploys):
            if self.supervisor is not None and deploy in to_stop and deploy not in serving:
                steps.append(Step("stop", f"stop deploy {deploy}", lambda d=deploy: stop(d)))
        for deploy, what in serving.items():
            if deploy in to_stop:
                steps.append(Step("note", f"keep deploy {deploy} running: it serves {what}"))
            else:
                steps.append(Step("serve", f"start deploy {deploy} first: it serves {what}",
                                  lambda d=deploy: maybeDeferred(self.supervisor.startDeploy, d)))
        for entry in manifest.get("databases", []):
            db = self._database(entry)
            path = os.path.join(run_dir, entry["file"])
            rows = sum(entry.get("tables", {}).values())
            if db.kind == "postgresql":
                text = (f"restore PostgreSQL {db.name} ({rows} rows) with pg_restore into "
                        f"{db.name}_restore_{suffix}, then rename it to {db.name} in one transaction")
                restoring = self._restorePostgres
            else:
                text = (f"restore MariaDB {db.name} ({rows} rows) into {db.name}_restore_{suffix}, "
                        f"then RENAME TABLE every table into {db.name}")
                restoring = self._restoreMysql
            steps.append(Step("database", text,
                              lambda f=restoring, db=db, path=path: f(db, path, suffix)))
        for entry in manifest.get("files", []):
            target = self.decl.paths.get(entry["label"], entry["source"])
            source = os.path.join(run_dir, entry["path"])
            steps.append(Step(
                "files",
                f"restore {entry['label']} ({entry['files']} files, {entry['total_size']} bytes) "
                f"to {target} via {target}.restore-{suffix}",
                lambda source=source, target=target: self._restoreFiles(source, target, suffix),
            ))
        steps.append(Step("record", f"record the restore of {manifest['run_id']} in the store"))
        for deploy in deploys:
            if self.supervisor is not None and deploy in to_stop and deploy not in serving:
                steps.append(Step("start", f"start deploy {deploy}", lambda d=deploy: start(d)))
        return steps

    @inlineCallbacks
    def restore(self, run_id: str | None = None, dry_run: bool = False):
        """Restore a run (default: the newest good one); fires with a report dict.

        A dry run lists the steps and changes nothing.  Deploys stopped here are started again
        even when a step fails.
        """
        if self.busy:
            raise RestoreError("a restore or verify is already running")
        self.busy = True
        try:
            report = yield self._restore(run_id, dry_run)
        finally:
            self.busy = False
            yield self._dropFetched()
        return report

    @inlineCallbacks
    def _dropFetched(self):
        """A remote run is pulled into C{work_dir/fetch} for a restore or verify; drop it after."""
        if self.job.dest.remote:
            yield runProcess(self.reactor, ["rm", "-rf", "--", os.path.join(self.work_dir, "fetch")]).finished

    @inlineCallbacks
    def _restore(self, run_id, dry_run):
        started = self.reactor.seconds()
        manifest, run_dir = yield self.resolve(run_id)
        run_id = manifest["run_id"]
        suffix = secrets.token_hex(3)
        to_stop = self._runningDeploys()
        steps = self.plan(manifest, run_dir, suffix, to_stop, self.servingDeploys(manifest))
        report: dict[str, Any] = {"run_id": run_id, "backup": self.job.name, "dry_run": dry_run,
                                  "steps": [], "outcome": OK, "error": ""}
        lines: list[str] = []
        if dry_run:
            report["steps"] = [{"step": s.description, "kind": s.kind, "outcome": "planned"} for s in steps]
            return report
        failed = False
        for step in steps:
            entry: dict[str, Any] = {"step": step.description, "kind": step.kind, "outcome": "ok"}
            report["steps"].append(entry)
            if failed and step.kind not in ("record", "start"):
                entry["outcome"] = "skipped"
                continue
            t0 = self.reactor.seconds()
            try:
                if step.kind == "record":
                    report["seconds"] = round(t0 - started, 3)
                    yield self.records.recordRestore(run_id, self.job.name, "restore", False, started, t0,
                                                     report["outcome"], report, "\n".join(lines))
                elif step.action is None:
                    entry["outcome"] = "note"
                elif (yield step.action()) == "skipped":
                    entry["outcome"] = "skipped"
            except Exception as e:
                failed = True
                entry["outcome"] = "failed"
                entry["error"] = str(e)
                report["outcome"] = FAILED
                report["error"] = report["error"] or f"{step.description}: {e}"
                lines.append(f"FAILED {step.description}: {e}")
                log.error("restore {run}: {step} failed: {e}", run=run_id, step=step.description, e=e)
            else:
                lines.append(f"{entry['outcome']} {step.description}")
            entry["seconds"] = round(self.reactor.seconds() - t0, 3)
        report["seconds"] = round(self.reactor.seconds() - started, 3)
        return report

    @inlineCallbacks
    def _restorePostgres(self, db: Database, dump: str, suffix: str):
        env = dbtools.clientEnv(db)
        name = db.name
        tmp, old = f"{name}_restore_{suffix}"[:63], f"{name}_old_{suffix}"[:63]
        yield self._exec(dbtools.psqlCommand(db, [f"CREATE DATABASE {dbtools.quotePg(tmp)}"], single=False),
                         env=env)
        try:
            yield self._exec(dbtools.pgRestoreCommand(db, tmp, dump), env=env)
            exists = yield self._exec(dbtools.psqlCommand(
                db, [f"SELECT 1 FROM pg_database WHERE datname = {_literal(name)}"], single=False), env=env)
            statements = []
            if exists.stdout.strip() == b"1":
                statements += [
                    f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    f" WHERE datname = {_literal(name)} AND pid <> pg_backend_pid()",
                    # Terminated backends take a moment to leave: wait (bounded) until they have.
                    "DO $$ BEGIN FOR i IN 1..100 LOOP PERFORM pg_stat_clear_snapshot();"
                    f" EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = {_literal(name)}"
                    " AND pid <> pg_backend_pid()); PERFORM pg_sleep(0.05); END LOOP; END $$",
                    f"ALTER DATABASE {dbtools.quotePg(name)} RENAME TO {dbtools.quotePg(old)}",
                ]
            statements.append(f"ALTER DATABASE {dbtools.quotePg(tmp)} RENAME TO {dbtools.quotePg(name)}")
            # A client reconnecting between the wait and the rename fails the transaction (nothing
            # changed); try the swap a few times before giving up.
            for attempt in range(3):
                try:
                    yield self._exec(dbtools.psqlCommand(db, statements, dbname=_swapDatabase(name),
                                                         single=True), env=env)
                    break
                except ProcessFailed as e:
                    if attempt == 2 or b"being accessed by other users" not in e.result.stderr:
                        raise
        except Exception:
            yield self._dropPg(db, tmp)
            raise
        yield self._dropPg(db, old)

    @inlineCallbacks
    def _dropPg(self, db: Database, name: str):
        result = yield runProcess(self.reactor, dbtools.psqlCommand(
            db, [f"DROP DATABASE IF EXISTS {dbtools.quotePg(name)} WITH (FORCE)"], single=False),
            env=dbtools.clientEnv(db)).finished
        if not result.ok:
            log.warn("could not drop {name}: {why}", name=name, why=result.describe())

    @inlineCallbacks
    def _tables(self, db: Database, dbname: str):
        result = yield self._exec(
            dbtools.mysqlCommand(db, dbtools.tablesQuery("mysql", dbname)), env=dbtools.clientEnv(db))
        return [line for line in result.stdout.decode().splitlines() if line]

    @inlineCallbacks
    def _loadMysql(self, db: Database, target: str, dump: str):
        env = dbtools.clientEnv(db)
        yield self._exec(dbtools.mysqlCommand(db, f"CREATE DATABASE {dbtools.quoteMy(target)}"), env=env)
        yield self._exec(dbtools.mysqlCommand(db, f"source {dump}", dbname=target), env=env)

    @inlineCallbacks
    def _restoreMysql(self, db: Database, dump: str, suffix: str):
        env = dbtools.clientEnv(db)
        name = db.name
        tmp, old = f"{name}_restore_{suffix}"[:64], f"{name}_old_{suffix}"[:64]
        q = dbtools.quoteMy
        try:
            yield self._loadMysql(db, tmp, dump)
            new_tables = yield self._tables(db, tmp)
            old_tables = yield self._tables(db, name)
            moves = [f"{q(name)}.{q(t)} TO {q(old)}.{q(t)}" for t in old_tables]
            moves += [f"{q(tmp)}.{q(t)} TO {q(name)}.{q(t)}" for t in new_tables]
            sql = f"CREATE DATABASE IF NOT EXISTS {q(name)}; CREATE DATABASE {q(old)};"
            if moves:
                # One RENAME TABLE statement is atomic: every table moves, or none does.
                sql += " RENAME TABLE " + ", ".join(moves) + ";"
            yield self._exec(dbtools.mysqlCommand(db, sql), env=env)
        except Exception:
            yield self._dropMy(db, tmp)
            yield self._dropMy(db, old)
            raise
        yield self._dropMy(db, tmp)
        yield self._dropMy(db, old)

    @inlineCallbacks
    def _dropMy(self, db: Database, name: str):
        result = yield runProcess(self.reactor, dbtools.mysqlCommand(
            db, f"DROP DATABASE IF EXISTS {dbtools.quoteMy(name)}"), env=dbtools.clientEnv(db)).finished
        if not result.ok:
            log.warn("could not drop {name}: {why}", name=name, why=result.describe())

    @inlineCallbacks
    def _restoreFiles(self, source: str, target: str, suffix: str):
        target = target.rstrip("/")
        staging, old = f"{target}.restore-{suffix}", f"{target}.old-{suffix}"
        try:
            yield self._exec(copyCommand(source, staging))
        except Exception:
            yield runProcess(self.reactor, ["rm", "-rf", "--", staging]).finished
            raise
        if os.path.lexists(target):
            os.rename(target, old)
        os.rename(staging, target)
        if os.path.lexists(old):
            yield self._exec(["rm", "-rf", "--", old])

    # -- verify ----------------------------------------------------------------------------------

    @inlineCallbacks
    def verify(self, run_id: str | None = None):
        """Restore a run into scratch databases and a scratch directory; compare row counts and
        checksums with its manifest.  Fires with a report whose C{ok} says whether all matched."""
        if self.busy:
            raise RestoreError("a restore or verify is already running")
        self.busy = True
        try:
            report = yield self._verify(run_id)
        finally:
            self.busy = False
            yield self._dropFetched()
        return report

    @inlineCallbacks
    def _verify(self, run_id):
        started = self.reactor.seconds()
        manifest, run_dir = yield self.resolve(run_id)
        run_id = manifest["run_id"]
        suffix = secrets.token_hex(3)
        problems: list[str] = []
        checked: list[str] = []
        for entry in manifest.get("databases", []):
            try:
                yield self._verifyDatabase(entry, run_dir, suffix, problems, checked)
            except ProcessFailed as e:
                problems.append(f"{entry['key']}: restore failed: {e}")
        for entry in manifest.get("files", []):
            try:
                yield self._verifyFiles(entry, run_dir, suffix, problems, checked)
            except ProcessFailed as e:
                problems.append(f"{entry['label']}: copy failed: {e}")
        ended = self.reactor.seconds()
        report = {"run_id": run_id, "backup": self.job.name, "ok": not problems,
                  "problems": problems, "checked": checked, "seconds": round(ended - started, 3)}
        yield self.records.recordRestore(run_id, self.job.name, "verify", False, started, ended,
                                         OK if not problems else FAILED, report,
                                         "\n".join(checked + problems))
        return report

    @inlineCallbacks
    def _verifyDatabase(self, entry, run_dir, suffix, problems, checked):
        path = os.path.join(run_dir, entry["file"])
        result = yield self._exec(["sha256sum", "--", path])
        digest = result.stdout.split()[0].decode() if result.stdout else ""
        if digest != entry["sha256"]:
            problems.append(f"{entry['key']}: dump checksum mismatch ({entry['file']})")
            return
        db = self._database(entry)
        env = dbtools.clientEnv(db)
        scratch = f"{db.name}_verify_{suffix}"[:63]
        try:
            if db.kind == "postgresql":
                yield self._exec(dbtools.psqlCommand(
                    db, [f"CREATE DATABASE {dbtools.quotePg(scratch)}"], single=False), env=env)
                yield self._exec(dbtools.pgRestoreCommand(db, scratch, path), env=env)
                tables = yield self._exec(dbtools.psqlCommand(
                    db, [dbtools.tablesQuery("postgresql", scratch)], dbname=scratch, single=False), env=env)
                names = [t for t in tables.stdout.decode().splitlines() if t]
                query = dbtools.psqlCommand(db, [dbtools.countQuery("postgresql", names)], dbname=scratch,
                                            single=False) if names else None
            else:
                yield self._loadMysql(db, scratch, path)
                names = yield self._tables(db, scratch)
                query = dbtools.mysqlCommand(db, dbtools.countQuery("mysql", names), dbname=scratch) \
                    if names else None
            counts = {}
            if query is not None:
                result = yield self._exec(query, env=env)
                counts = dbtools.parseCounts(result.stdout)
        finally:
            if db.kind == "postgresql":
                yield self._dropPg(db, scratch)
            else:
                yield self._dropMy(db, scratch)
        expected = entry.get("tables", {})
        if counts != expected:
            for table in sorted(set(counts) | set(expected)):
                if counts.get(table) != expected.get(table):
                    problems.append(f"{entry['key']}: table {table}: {counts.get(table)} rows restored,"
                                    f" {expected.get(table)} in the backup")
        else:
            checked.append(f"{entry['key']}: {len(counts)} tables, {sum(counts.values())} rows match")

    @inlineCallbacks
    def _verifyFiles(self, entry, run_dir, suffix, problems, checked):
        label = entry["label"]
        try:
            with open(os.path.join(run_dir, entry["checksums"]), "rb") as f:
                payload = f.read()
        except OSError as e:
            problems.append(f"{label}: checksum list unreadable: {e}")
            return
        if hashlib.sha256(payload).hexdigest() != entry["checksums_sha256"]:
            problems.append(f"{label}: checksum list does not match the manifest")
            return
        expected = json.loads(payload)
        scratch = os.path.join(self.work_dir, "verify", suffix, label)
        try:
            yield self._exec(copyCommand(os.path.join(run_dir, entry["path"]), scratch))
            argv, env = hashtreeCommand(self.job.python, scratch)
            result = yield self._exec(argv, env=env)
            actual = json.loads(result.stdout)
        finally:
            yield runProcess(self.reactor, ["rm", "-rf", "--", os.path.join(self.work_dir, "verify",
                                                                             suffix)]).finished
        found = compareTrees(expected, actual)
        problems += [f"{label}: {p}" for p in found]
        if not found:
            checked.append(f"{label}: {len(actual)} files match their checksums")


def _swapDatabase(name: str) -> str:
    """Where psql connects to rename C{name}: never C{name} itself (PostgreSQL cannot rename the
    database a session is in), so restoring the C{postgres} database swaps from C{template1}."""
    return "template1" if name == "postgres" else "postgres"


def _deployOf(info: dict[str, Any]) -> str:
    return str(info.get("group") or str(info.get("name", "")).partition(":")[0])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

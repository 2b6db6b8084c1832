"""Backups, restores and verification against the real PostgreSQL, MariaDB, rsync and sshd here."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from salvusctl.backup.declare import Backup
from salvusctl.backup.layout import MANIFEST, readManifest, scanRuns
from salvusctl.backup.retention import Retention
from salvusctl.backup.service import BackupService
from salvusctl.interfaces import ISupervisor
from tests.helpers import freePort, waitFor

from .fakes import FakeSupervisor
from .helpers import TempMariaDB, TempPostgres, TempSshd, makeStore, tempPath, writeFile


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class BackupRestoreTests(TestCase):
    """One backup set with a PostgreSQL database, a MariaDB database and a deploy directory."""

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.pg = TempPostgres(self)
        self.pg.query("CREATE TABLE items (id serial PRIMARY KEY, name text);"
                      " INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 500) g;"
                      " CREATE TABLE empty (x int)")
        self.my = TempMariaDB(self)
        self.my.query("CREATE TABLE notes (id int PRIMARY KEY, body text);"
                      " INSERT INTO notes VALUES (1, 'one\\ntwo'), (2, 'it''s'), (3, 'three')")
        self.base = tempPath(self)
        self.src = os.path.join(self.base, "srv", "web")
        writeFile(os.path.join(self.src, "static", "big.bin"), os.urandom(300_000))
        writeFile(os.path.join(self.src, "config.ini"), b"[web]\nport = 8080\n")
        self.dest = os.path.join(self.base, "backups")
        self.supervisor = FakeSupervisor(running=["db-migrate", "web"], stopped=["other"])
        verifyObject(ISupervisor, self.supervisor)
        self.store = makeStore(self, reactor)
        yield self.store.start()
        self.service = self.makeService(self.store)

    def declaration(self, **kwargs) -> Backup:
        decl = Backup("main", self.dest, postgres=[self.pg.url], mysql=[self.my.url],
                      paths={"web": self.src}, deploys=["db-migrate", "web"], **kwargs)
        decl.validate(None)
        return decl

    def makeService(self, store, supervisor="default", **kwargs) -> BackupService:
        service = BackupService(reactor, store, [self.declaration(**kwargs)], host_name="alpha",
                                work_dir=os.path.join(self.base, "work"),
                                supervisor=self.supervisor if supervisor == "default" else supervisor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def nextSecond(self):
        """Run ids carry the start second; wait into the next one (a real run takes ~0.3 s)."""
        from twisted.internet.task import deferLater

        now = reactor.seconds()
        yield deferLater(reactor, int(now) + 1.01 - now, lambda: None)

    @inlineCallbacks
    def test_incrementalSnapshotsHardlinkUnchangedFiles(self):
        """The second run links unchanged files to the first (same inode), copies only what changed,
        and both snapshots are whole; sizes and checksums are recorded."""
        first = yield self.service.run()
        self.assertEqual(first["outcome"], "ok", first["log"])
        self.assertEqual(first["base_run"], None)
        yield self.nextSecond()
        writeFile(os.path.join(self.src, "config.ini"), b"[web]\nport = 9090\n")
        second = yield self.service.run()
        self.assertEqual(second["outcome"], "ok", second["log"])
        self.assertEqual(second["base_run"], first["run_id"])
        a = os.path.join(self.dest, first["run_id"], "files", "web")
        b = os.path.join(self.dest, second["run_id"], "files", "web")
        self.assertEqual(os.stat(os.path.join(a, "static", "big.bin")).st_ino,
                         os.stat(os.path.join(b, "static", "big.bin")).st_ino)
        self.assertNotEqual(os.stat(os.path.join(a, "config.ini")).st_ino,
                            os.stat(os.path.join(b, "config.ini")).st_ino)
        with open(os.path.join(a, "config.ini"), "rb") as f:
            self.assertIn(b"8080", f.read())
        self.assertEqual(first["snapshot_size"], 300_000 + 18)
        self.assertEqual(second["snapshot_size"], 300_000 + 18)
        # Only the changed file's bytes (plus the fresh dumps) were transferred the second time.
        self.assertEqual(second["bytes_transferred"] - second["dump_size"], 18)
        self.assertGreater(first["bytes_transferred"] - first["dump_size"], 300_000)
        manifest = readManifest(os.path.join(self.dest, second["run_id"]))
        tables = {d["kind"]: d["tables"] for d in manifest["databases"]}
        self.assertEqual(tables["postgresql"], {"public.items": 500, "public.empty": 0})
        self.assertEqual(tables["mysql"], {"notes": 3})
        for entry in manifest["databases"]:
            path = os.path.join(self.dest, second["run_id"], entry["file"])
            self.assertEqual(entry["sha256"], sha256(path))
        with open(os.path.join(self.dest, second["run_id"], "checksums", "web.json")) as f:
            checksums = json.load(f)
        self.assertEqual(checksums["config.ini"][1], sha256(os.path.join(self.src, "config.ini")))
        rows = yield self.store.runQuery(
            "SELECT run_id, outcome, bytes_transferred, snapshot_size, dump_size, manifest, log"
            " FROM backup_runs ORDER BY started")
        self.assertEqual([(r[0], r[1]) for r in rows], [(first["run_id"], "ok"), (second["run_id"], "ok")])
        self.assertEqual(rows[1][3], second["snapshot_size"])
        self.assertEqual(json.loads(rows[1][5])["run_id"], second["run_id"])
        self.assertIn("progress 100%", rows[1][6])
        with open(os.path.join(self.dest, "index.json")) as f:
            self.assertEqual([r["run_id"] for r in json.load(f)["runs"]], [first["run_id"], second["run_id"]])
        status = self.service.status()[0]
        self.assertEqual((status["state"], status["last"]["run_id"]), ("idle", second["run_id"]))

    @inlineCallbacks
    def test_statusReportsProgressDuringARun(self):
        """While a run is in progress, status() gives its phase, percent and bytes."""
        seen = []
        self.service.jobs["main"].observers.append(lambda state: seen.append(self.service.status()[0]))
        result = yield self.service.run()
        self.assertEqual(result["outcome"], "ok")
        self.assertTrue(all(s["state"] == "running" for s in seen))
        self.assertEqual({"dump", "files"} - {s["phase"] for s in seen}, set())
        percents = [s["percent"] for s in seen]
        self.assertEqual(percents, sorted(percents))
        self.assertTrue(any(s["phase"] == "files" and s["bytes"] >= 300_000 for s in seen))
        # The next run estimates each dump's progress from the last good dump's size.
        del seen[:]
        yield self.nextSecond()
        result = yield self.service.run()
        self.assertEqual(result["outcome"], "ok")
        self.assertTrue(any(s["phase"] == "dump" and s["step_percent"] > 0 for s in seen))

    @inlineCallbacks
    def test_restoreStopsDeploysSwapsDataAndRestarts(self):
        """Restore: dependents stopped first, databases and files back as backed up, no leftover
        scratch databases, deploys started again in dependency order, the restore recorded."""
        run = yield self.service.run()
        self.assertEqual(run["outcome"], "ok", run["log"])
        self.pg.query("DELETE FROM items WHERE id > 100; CREATE TABLE junk (y int)")
        self.my.query("DELETE FROM notes; CREATE TABLE extra (z int)")
        writeFile(os.path.join(self.src, "config.ini"), b"broken")
        writeFile(os.path.join(self.src, "new.txt"), b"new")
        # A client still connected to the database is disconnected for the swap.
        client = subprocess.Popen(["psql", "-X", "-h", self.pg.host, "-p", str(self.pg.port), "-U",
                                   self.pg.user, "-d", self.pg.name, "-c", "SELECT pg_sleep(60)"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(client.kill)
        self.addCleanup(client.wait)
        yield waitFor(lambda: self.pg.psql("postgres", "SELECT count(*) FROM pg_stat_activity"
                                           f" WHERE datname = '{self.pg.name}'") == "1", interval=0.05)
        report = yield self.service.restore()
        self.assertEqual(report["outcome"], "ok", report)
        self.assertEqual(report["run_id"], run["run_id"])
        self.assertEqual(self.supervisor.calls, [("stop", "web"), ("stop", "db-migrate"),
                                                 ("start", "db-migrate"), ("start", "web")])
        self.assertEqual(self.pg.query("SELECT count(*) FROM items"), "500")
        self.assertEqual(self.pg.query("SELECT to_regclass('junk') IS NULL"), "t")
        self.assertEqual(self.my.query("SELECT count(*) FROM notes"), "3")
        self.assertEqual(self.my.query("SELECT body FROM notes WHERE id = 2"), "it's")
        self.assertEqual(self.my.query("SHOW TABLES"), "notes")
        self.assertEqual(self.pg.databases(), [self.pg.name])
        self.assertEqual(self.my.databases(), [self.my.name])
        self.assertIsNotNone(client.wait(timeout=10))
        with open(os.path.join(self.src, "config.ini"), "rb") as f:
            self.assertEqual(f.read(), b"[web]\nport = 8080\n")
        self.assertFalse(os.path.exists(os.path.join(self.src, "new.txt")))
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.src))), ["web"])
        self.assertEqual([s["kind"] for s in report["steps"]],
                         ["stop", "stop", "database", "database", "files", "record", "start", "start"])
        restores = yield self.service.records.restores()
        self.assertEqual([(r["run_id"], r["kind"], r["outcome"]) for r in restores],
                         [(run["run_id"], "restore", "ok")])

    @inlineCallbacks
    def test_dryRunListsStepsAndChangesNothing(self):
        """A dry run lists every step and touches neither data nor deploys."""
        run = yield self.service.run()
        self.pg.query("DELETE FROM items")
        report = yield self.service.restore(run["run_id"], dry_run=True)
        self.assertTrue(report["dry_run"])
        text = "\n".join(s["step"] for s in report["steps"])
        self.assertIn("stop deploy web", text)
        self.assertNotIn("deploy other", text)  # not this set's deploy
        self.assertIn(f"rename it to {self.pg.name}", text)
        self.assertIn("RENAME TABLE", text)
        self.assertIn(f"to {self.src}", text)
        self.assertEqual(self.supervisor.calls, [])
        self.assertEqual(self.pg.query("SELECT count(*) FROM items"), "0")

    @inlineCallbacks
    def test_failedRestoreLeavesOldDataUsable(self):
        """A dump that cannot be restored fails the restore before any swap: the live database
        keeps its current data, scratch databases are dropped, the deploys run again."""
        run = yield self.service.run()
        self.pg.query("DELETE FROM items WHERE id > 10")
        dump = os.path.join(self.dest, run["run_id"], "db", f"postgresql-{self.pg.name}.pgdump")
        with open(dump, "r+b") as f:
            f.truncate(os.path.getsize(dump) // 2)
        report = yield self.service.restore()
        self.assertEqual(report["outcome"], "failed")
        self.assertIn("pg_restore", report["error"])
        self.assertEqual(self.pg.query("SELECT count(*) FROM items"), "10")
        self.assertEqual(self.pg.databases(), [self.pg.name])
        outcomes = {s["kind"]: s["outcome"] for s in report["steps"]}
        self.assertEqual(outcomes["files"], "skipped")
        self.assertEqual(self.supervisor.calls[-2:], [("start", "db-migrate"), ("start", "web")])
        restores = yield self.service.records.restores()
        self.assertEqual(restores[0]["outcome"], "failed")

    @inlineCallbacks
    def test_verifyPassesThenCatchesACorruptSnapshot(self):
        """Verify restores into scratch space and compares; a corrupted snapshot file is caught."""
        run = yield self.service.run()
        report = yield self.service.verify(run["run_id"])
        self.assertTrue(report["ok"], report["problems"])
        self.assertEqual(len(report["checked"]), 3)
        self.assertIn("500 rows match", " ".join(report["checked"]))
        self.assertEqual(self.pg.databases(), [self.pg.name])
        self.assertEqual(self.my.databases(), [self.my.name])
        victim = os.path.join(self.dest, run["run_id"], "files", "web", "static", "big.bin")
        with open(victim, "r+b") as f:
            f.seek(1000)
            f.write(b"\x00corrupt\x00")
        report = yield self.service.verify(run["run_id"])
        self.assertFalse(report["ok"])
        self.assertEqual(report["problems"], ["web: checksum mismatch static/big.bin"])
        restores = yield self.service.records.restores()
        self.assertEqual([(r["kind"], r["outcome"]) for r in restores],
                         [("verify", "ok"), ("verify", "failed")])

    @inlineCallbacks
    def test_verifyCatchesACorruptDump(self):
        """A flipped byte in a dump fails its checksum."""
        run = yield self.service.run()
        dump = os.path.join(self.dest, run["run_id"], "db", f"mysql-{self.my.name}.sql")
        with open(dump, "ab") as f:
            f.write(b"-- tampered\n")
        report = yield self.service.verify(run["run_id"])
        self.assertFalse(report["ok"])
        self.assertIn("dump checksum mismatch", report["problems"][0])

    @inlineCallbacks
    def test_killedRunIsNeverTheBaseOrRestorePoint(self):
        """SIGKILL the rsync child mid-transfer: the run is marked failed, leaves no manifest, and the
        next run links against the last GOOD run and is complete."""
        good = yield self.service.run()
        yield self.nextSecond()
        writeFile(os.path.join(self.src, "static", "more.bin"), os.urandom(2_000_000))
        job = self.service.jobs["main"]
        job.decl.rsync_args = ["--bwlimit=500"]  # ~4 s for 2 MB: time to kill it mid-transfer
        killed = []

        def observe(state):
            if state.phase == "files" and state.step_percent > 0 and state.handle and not killed:
                killed.append(state.handle.pid)
                state.handle.kill(signal.SIGKILL)

        job.observers.append(observe)
        partial = yield self.service.run()
        self.assertTrue(killed)
        self.assertEqual(partial["outcome"], "failed")
        self.assertIn("signal 9", partial["log"])
        self.assertIsNone(readManifest(os.path.join(self.dest, partial["run_id"])))
        self.assertTrue(os.path.isdir(os.path.join(self.dest, partial["run_id"])))
        job.observers.remove(observe)
        job.decl.rsync_args = []
        yield self.nextSecond()
        after = yield self.service.run()
        self.assertEqual(after["outcome"], "ok", after["log"])
        self.assertEqual(after["base_run"], good["run_id"])
        old = os.path.join(self.dest, good["run_id"], "files", "web", "static", "big.bin")
        new = os.path.join(self.dest, after["run_id"], "files", "web", "static", "big.bin")
        self.assertEqual(os.stat(old).st_ino, os.stat(new).st_ino)
        more = os.path.join(self.dest, after["run_id"], "files", "web", "static", "more.bin")
        self.assertEqual(sha256(more), sha256(os.path.join(self.src, "static", "more.bin")))
        report = yield self.service.verify(after["run_id"])
        self.assertTrue(report["ok"], report["problems"])
        # The failed run was superseded by a good one: retention removed its directory.
        self.assertFalse(os.path.exists(os.path.join(self.dest, partial["run_id"])))
        runs = yield self.service.listRuns()
        self.assertEqual([r["outcome"] for r in runs], ["ok", "ok"])
        bad = yield self.service.records.run(partial["run_id"])
        self.assertEqual((bad["outcome"], bad["deleted_at"] is not None), ("failed", True))

    @inlineCallbacks
    def test_stoppingTheServiceInterruptsTheRun(self):
        """Stopping the service mid-run kills the child and records the run as interrupted;
        restoring that run is refused."""
        yield self.service.run()
        yield self.nextSecond()
        writeFile(os.path.join(self.src, "static", "more.bin"), os.urandom(2_000_000))
        job = self.service.jobs["main"]
        job.decl.rsync_args = ["--bwlimit=500"]
        stopping: list[Deferred] = []

        def observe(state):
            if state.phase == "files" and state.step_percent > 0 and not stopping:
                stopping.append(self.service.stopService())

        job.observers.append(observe)
        result = yield self.service.run()
        yield stopping[0]
        self.assertEqual(result["outcome"], "interrupted")
        row = yield self.service.records.run(result["run_id"])
        self.assertEqual(row["outcome"], "interrupted")
        failure = yield self.assertFailure(self.service.restore(result["run_id"]), Exception)
        self.assertIn("interrupted", str(failure))
        job.decl.rsync_args = []

    @inlineCallbacks
    def test_hostDiedMidRunIsMarkedInterruptedAtStart(self):
        """A run this host left 'running' when it died is marked interrupted when the service
        starts."""
        yield self.service.records.startRun("main-20200101T000000Z", "main", "alpha", 1.0, None)
        yield self.service.records.startRun("main-20200101T000001Z", "main", "beta", 1.0, None)
        os.makedirs(os.path.join(self.dest, "main-20200101T000000Z", "files"))
        service = self.makeService(self.store)
        yield service.started
        row = yield service.records.run("main-20200101T000000Z")
        self.assertEqual(row["outcome"], "interrupted")
        other = yield service.records.run("main-20200101T000001Z")
        self.assertEqual(other["outcome"], "running")  # another host's run is not ours to judge
        good, partial = scanRuns(self.dest, "main")
        self.assertEqual((good, partial), ([], ["main-20200101T000000Z"]))

    @inlineCallbacks
    def test_restoreOntoAFreshHostFromTheDirectoryAlone(self):
        """A second host with an empty store and only the backup directory restores everything."""
        run = yield self.service.run()
        self.pg.psql("postgres", f"DROP DATABASE {self.pg.name} WITH (FORCE)")
        self.my.sql(f"DROP DATABASE {self.my.name}")
        import shutil

        shutil.rmtree(self.src)
        fresh_store = makeStore(self, reactor)
        yield fresh_store.start()
        fresh = BackupService(reactor, fresh_store, [Backup("main", self.dest, paths={"other": "/nowhere"})],
                              host_name="beta", work_dir=os.path.join(self.base, "work2"))
        fresh.startService()
        self.addCleanup(fresh.stopService)
        runs = yield fresh.listRuns()
        self.assertEqual([(r["run_id"], r["in_directory"]) for r in runs], [(run["run_id"], True)])
        report = yield fresh.restore()
        self.assertEqual(report["outcome"], "ok", report)
        self.assertEqual(self.pg.query("SELECT count(*) FROM items"), "500")
        self.assertEqual(self.my.query("SELECT count(*) FROM notes"), "3")
        with open(os.path.join(self.src, "config.ini"), "rb") as f:
            self.assertEqual(f.read(), b"[web]\nport = 8080\n")
        self.assertEqual(report["steps"][0]["kind"], "database")  # no supervisor, no deploys here
        restores = yield fresh.records.restores()
        self.assertEqual(len(restores), 1)


class FilesOnlyTests(TestCase):
    """Directory-only sets: retention, bad requests, the remote destination over a real sshd."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.base = tempPath(self)
        self.src = os.path.join(self.base, "data")
        writeFile(os.path.join(self.src, "a.txt"), b"alpha")
        self.store = makeStore(self, reactor)
        yield self.store.start()

    def service(self, decl: Backup) -> BackupService:
        decl.validate(None)
        service = BackupService(reactor, self.store, [decl], host_name="alpha",
                                work_dir=os.path.join(self.base, "work"))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def test_retentionRemovesOldRuns(self):
        """With keep=Retention(last=2), the third run removes the first run's directory."""
        dest = os.path.join(self.base, "b")
        service = self.service(Backup("f", dest, paths={"data": self.src}, keep=Retention(last=2)))
        ids = []
        for i in range(3):
            writeFile(os.path.join(self.src, "a.txt"), b"v%d" % i)
            job = service.jobs["f"]
            result = yield job.run()
            ids.append(result["run_id"])
            yield BackupRestoreTests.nextSecond(self)
        good, _ = scanRuns(dest, "f")
        self.assertEqual([m["run_id"] for m in good], ids[1:])
        runs = yield service.records.runs("f", include_deleted=True)
        self.assertEqual([r["deleted_at"] is not None for r in runs], [True, False, False])

    @inlineCallbacks
    def test_oneOperationAtATime(self):
        """A second run, or a restore, while a run is in progress is refused with the reason."""
        service = self.service(Backup("f", os.path.join(self.base, "b"), paths={"data": self.src}))
        first = service.run()
        failure = yield self.assertFailure(service.run(), Exception)
        self.assertIn("already running", str(failure))
        failure = yield self.assertFailure(service.restore(), Exception)
        self.assertIn("is running", str(failure))
        status = service.status()[0]
        self.assertEqual(status["state"], "running")
        self.assertIn("log_tail", status)
        result = yield first
        self.assertEqual(result["outcome"], "ok")

    @inlineCallbacks
    def test_hostBuildsAndRunsTheService(self):
        """Through Host.build: the store gets the backup tables, the service starts after it and
        a run is recorded."""
        from salvusctl.host import Host

        host = Host(name="alpha", store="sqlite:" + os.path.join(self.base, "host.db"),
                    var=os.path.join(self.base, "var"))
        host.add(Backup("h", os.path.join(self.base, "hb"), paths={"data": self.src}))
        top = host.build(reactor)
        top.startService()
        self.addCleanup(top.stopService)
        backup = top.getServiceNamed("backup")
        yield backup.started
        result = yield backup.run()
        self.assertEqual(result["outcome"], "ok", result["log"])
        runs = yield backup.listRuns()
        self.assertEqual([r["run_id"] for r in runs], [result["run_id"]])

    @inlineCallbacks
    def test_storeFailureFreesTheSet(self):
        """If the store refuses the run's record, the run fails with that reason and the next one
        can start (the set is not left 'running' forever)."""
        service = self.service(Backup("f", os.path.join(self.base, "b"), paths={"data": self.src}))
        yield service.started
        yield self.store.close()
        yield self.assertFailure(service.run(), Exception)
        self.assertEqual(service.status()[0]["state"], "idle")
        yield self.store.start()
        result = yield service.run()
        self.assertEqual(result["outcome"], "ok")

    @inlineCallbacks
    def test_deployThatWillNotStopAbortsBeforeAnyChange(self):
        """If the supervisor cannot stop a deploy, nothing is restored and the deploys already
        stopped are started again."""
        supervisor = FakeSupervisor(running=["db", "app"])
        original = supervisor.stopDeploy

        def stopDeploy(name):
            if name == "db":
                raise RuntimeError("db refuses to stop")
            return original(name)

        supervisor.stopDeploy = stopDeploy
        decl = Backup("s", os.path.join(self.base, "b"), paths={"data": self.src}, deploys=["db", "app"])
        decl.validate(None)
        service = BackupService(reactor, self.store, [decl], host_name="alpha",
                                work_dir=os.path.join(self.base, "work"), supervisor=supervisor)
        service.startService()
        self.addCleanup(service.stopService)
        yield service.run()
        writeFile(os.path.join(self.src, "a.txt"), b"newer")
        report = yield service.restore()
        self.assertEqual(report["outcome"], "failed")
        self.assertIn("db refuses to stop", report["error"])
        self.assertEqual(supervisor.calls, [("stop", "app"), ("start", "app")])
        with open(os.path.join(self.src, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"newer")
        self.assertEqual([s["outcome"] for s in report["steps"]],
                         ["ok", "failed", "skipped", "ok", "skipped", "ok"])
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_badRequestsSayWhy(self):
        """Unknown runs and sets, and restoring with nothing backed up, fail with a clear reason."""
        service = self.service(Backup("f", os.path.join(self.base, "b"), paths={"data": self.src}))
        failure = yield self.assertFailure(service.restore(), Exception)
        self.assertIn("no good run", str(failure))
        self.assertRaises(KeyError, service.verify, "zzz-20200101T000000Z")
        failure = yield self.assertFailure(service.restore("f-20200101T000000Z"), Exception)
        self.assertIn("no such run", str(failure))

    @inlineCallbacks
    def test_remoteDestinationOverRealSsh(self):
        """The remote destination through a real OpenSSH server (a private sshd on 127.0.0.1):
        two runs where the second hard-links the unchanged file to the first on the remote side,
        retention over ssh, verify, and a restore that brings back the first content."""
        sshd = TempSshd(self, os.path.join(self.base, "sshd"))
        yield waitFor(sshd.ready, timeout=20)
        writeFile(os.path.join(self.src, "big.bin"), os.urandom(256 * 1024))
        remote_dir = os.path.join(self.base, "vault")
        service = self.service(Backup("s", f"{sshd.target}:{remote_dir}", paths={"data": self.src},
                                      ssh=sshd.ssh, keep=Retention(last=2)))
        first = yield service.run()
        self.assertEqual(first["outcome"], "ok", first["log"] + sshd.log())
        yield BackupRestoreTests.nextSecond(self)
        writeFile(os.path.join(self.src, "a.txt"), b"beta")
        second = yield service.run()
        self.assertEqual(second["outcome"], "ok", second["log"])
        self.assertEqual(second["base_run"], first["run_id"])

        def inode(run):
            return os.stat(os.path.join(remote_dir, run["run_id"], "files", "data", "big.bin")).st_ino

        self.assertEqual(inode(first), inode(second), "unchanged file not hard-linked over ssh")
        self.assertTrue(os.path.exists(os.path.join(remote_dir, second["run_id"], MANIFEST)))
        yield BackupRestoreTests.nextSecond(self)
        third = yield service.run()
        self.assertEqual(third["outcome"], "ok", third["log"])
        # keep last=2: the first run was removed on the remote host, over ssh.
        self.assertEqual(sorted(os.listdir(remote_dir)), sorted([second["run_id"], third["run_id"]]))
        report = yield service.verify(third["run_id"])
        self.assertTrue(report["ok"], report["problems"])
        writeFile(os.path.join(self.src, "a.txt"), b"lost")
        report = yield service.restore(second["run_id"])
        self.assertEqual(report["outcome"], "ok", report)
        with open(os.path.join(self.src, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"beta")

    @inlineCallbacks
    def test_remoteDestinationUnreachableFailsClearly(self):
        """An ssh destination nobody answers on: the run fails with ssh's reason in its log and
        is never used as a base for the next run."""
        port = freePort()
        service = self.service(Backup("u", f"nobody@127.0.0.1:{self.base}/none", paths={"data": self.src},
                                      ssh=f"ssh -p {port} -o BatchMode=yes -o ConnectTimeout=5"))
        run = yield service.run()
        self.assertNotEqual(run["outcome"], "ok")
        self.assertIn("Connection refused", run["log"])
        self.flushLoggedErrors()


class MariaDBOnlyTests(TestCase):
    """MariaDB on its own (runs even where SALVUS_TEST_POSTGRES is unset)."""

    timeout = 60

    @inlineCallbacks
    def test_dumpRestoreVerify(self):
        """mysqldump --single-transaction, row counts from the dump, restore by an atomic
        RENAME TABLE swap (tables added since the backup leave), verify in a scratch database."""
        my = TempMariaDB(self)
        my.query("CREATE TABLE t (id int PRIMARY KEY, v varchar(20));"
                 " INSERT INTO t VALUES (1, 'a'), (2, 'b'); CREATE TABLE e (x int)")
        base = tempPath(self)
        store = makeStore(self, reactor)
        yield store.start()
        decl = Backup("m", os.path.join(base, "b"), mysql=[my.url])
        decl.validate(None)
        service = BackupService(reactor, store, [decl], host_name="alpha", work_dir=os.path.join(base, "w"))
        service.startService()
        self.addCleanup(service.stopService)
        run = yield service.run()
        self.assertEqual(run["outcome"], "ok", run["log"])
        manifest = readManifest(os.path.join(base, "b", run["run_id"]))
        self.assertEqual(manifest["databases"][0]["tables"], {"t": 2, "e": 0})
        my.query("DELETE FROM t; CREATE TABLE later (y int)")
        report = yield service.restore()
        self.assertEqual(report["outcome"], "ok", report)
        self.assertEqual(my.query("SELECT v FROM t ORDER BY id").split(), ["a", "b"])
        self.assertEqual(sorted(my.query("SHOW TABLES").split()), ["e", "t"])
        self.assertEqual(my.databases(), [my.name])
        report = yield service.verify(run["run_id"])
        self.assertTrue(report["ok"], report["problems"])
        self.assertEqual(my.databases(), [my.name])

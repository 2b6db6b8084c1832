"""One contract suite for L{IBackup}, run against the real L{BackupService} (rsync into a local
directory, a SQLite store, the real reactor) and against L{salvusctl.backup.testing.FakeBackup}.

The admin's C{backup.*} verbs, its pages and the CLI read these answers: the fake must give the
real keys, outcomes and errors, so a test written against the fake holds against the service.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from salvusctl.backup.declare import Backup
from salvusctl.backup.restore import RestoreError
from salvusctl.backup.service import BackupService, UnknownBackup
from salvusctl.backup.testing import LISTED, FakeBackup
from salvusctl.interfaces import IBackup

from .helpers import makeStore, tempPath, writeFile

RUN_KEYS = {"run_id", "backup", "outcome", "started", "ended", "base_run", "bytes_transferred",
            "snapshot_size", "dump_size", "log"}
STATUS_KEYS = {"backup", "destination", "state", "last", "schedule", "next_due"}
VERIFY_KEYS = {"run_id", "backup", "ok", "problems", "checked", "seconds"}
RESTORE_KEYS = {"run_id", "backup", "dry_run", "steps", "outcome", "error"}
STEP_KEYS = {"step", "kind", "outcome"}


class BackupContract:
    """What both must do; a subclass's C{make()} gives a service with one set, C{main}."""

    timeout = 60

    def make(self):
        raise NotImplementedError

    def setUp(self):
        self.backup = self.make()

    def test_providesTheInterface(self):
        verifyObject(IBackup, self.backup)

    def test_statusBeforeAnyRun(self):
        [status] = self.backup.status()
        self.assertEqual(set(status), STATUS_KEYS)
        self.assertEqual((status["backup"], status["state"], status["last"]), ("main", "idle", None))
        self.assertEqual((status["schedule"], status["next_due"]), ("on demand", None))

    @inlineCallbacks
    def test_runThenStatusListLog(self):
        run = yield self.backup.run()
        self.assertEqual(set(run), RUN_KEYS)
        self.assertEqual((run["backup"], run["outcome"], run["base_run"]), ("main", "ok", None))
        self.assertTrue(run["run_id"].startswith("main-"), run["run_id"])
        [status] = self.backup.status()
        self.assertEqual(status["state"], "idle")
        self.assertEqual(status["last"]["run_id"], run["run_id"])
        self.assertEqual(set(status["last"]), RUN_KEYS)
        [listed] = yield self.backup.listRuns()
        self.assertEqual(set(listed), set(LISTED))
        self.assertEqual((listed["run_id"], listed["in_directory"], listed["deleted_at"]),
                         (run["run_id"], True, None))
        self.assertEqual((yield self.backup.listRuns("main")), [listed])
        log = yield self.backup.runLog(run["run_id"])
        self.assertIsInstance(log, str)
        self.assertIn(run["run_id"], log)

    @inlineCallbacks
    def test_verifyAndDryRestore(self):
        run = yield self.backup.run()
        report = yield self.backup.verify(run["run_id"])
        self.assertEqual(set(report), VERIFY_KEYS)
        self.assertEqual((report["run_id"], report["ok"], report["problems"]), (run["run_id"], True, []))
        plan = yield self.backup.restore(dry_run=True)
        self.assertEqual(set(plan), RESTORE_KEYS)
        self.assertEqual((plan["run_id"], plan["dry_run"], plan["outcome"]), (run["run_id"], True, "ok"))
        self.assertTrue(plan["steps"])
        for step in plan["steps"]:
            self.assertEqual(set(step), STEP_KEYS)
            self.assertEqual(step["outcome"], "planned")
        self.assertEqual(plan["steps"][-1]["kind"], "record")

    @inlineCallbacks
    def test_unknownSetsAndRuns(self):
        """An unknown set or run is L{UnknownBackup} (the admin's BAD_NAME), never a crash."""
        for call in (lambda: self.backup.run("nope"), lambda: self.backup.listRuns("nope"),
                     lambda: self.backup.runLog("nope"), lambda: self.backup.verify("nope"),
                     lambda: self.backup.restore("nope")):
            with self.assertRaises(UnknownBackup):
                yield call()

    @inlineCallbacks
    def test_nothingToRestore(self):
        """No good run yet, or a run id of the set that is not in its directory: L{RestoreError}
        with the reason, before anything is touched."""
        with self.assertRaises(RestoreError) as caught:
            yield self.backup.restore(dry_run=True)
        self.assertIn("no good run to restore", str(caught.exception))
        with self.assertRaises(RestoreError) as caught:
            yield self.backup.restore("main-20000101T000000Z", dry_run=True)
        self.assertIn("cannot be restored: no such run", str(caught.exception))


class RealBackupContractTests(BackupContract, TestCase):
    """The real service: rsync of one directory into a local destination."""

    def make(self):
        base = tempPath(self)
        source = os.path.join(base, "srv")
        writeFile(os.path.join(source, "a.txt"), b"hello\n")
        self.store = makeStore(self, reactor)
        declaration = Backup("main", os.path.join(base, "dest"), paths={"files": source})
        declaration.validate(None)
        service = BackupService(reactor, self.store, [declaration], host_name="alpha",
                                work_dir=os.path.join(base, "work"))
        return service

    @inlineCallbacks
    def setUp(self):
        BackupContract.setUp(self)
        yield self.store.start()
        self.backup.startService()
        self.addCleanup(self.backup.stopService)
        yield self.backup.started  # the run history is read: status() is what it will stay


class FakeBackupContractTests(BackupContract, TestCase):
    """L{FakeBackup} on a Clock."""

    def make(self):
        clock = Clock()
        clock.advance(1_800_000_000)
        return FakeBackup({"main": "/srv/backups"}, clock, host_name="alpha")

    def test_failNextIsAFailedRun(self):
        """A scripted failure is recorded as the real one is: outcome C{failed}, not listed as in
        the directory, not restorable."""
        self.backup.failNext("main", "disk full")
        run = self.successResultOf(self.backup.run())
        self.assertEqual(run["outcome"], "failed")
        self.assertIn("disk full", self.successResultOf(self.backup.runLog(run["run_id"])))
        [listed] = self.successResultOf(self.backup.listRuns())
        self.assertFalse(listed["in_directory"])
        failure = self.failureResultOf(self.backup.restore(run["run_id"]), RestoreError)
        self.assertIn("its outcome is failed", str(failure.value))

"""Reloading the backup sets of a running host, on a Clock: schedules, settings between runs."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.backup import reload
from salvusctl.backup.declare import Backup, Retention
from salvusctl.backup.service import BackupService
from salvusctl.errors import ConfigError

from .test_faces import _FakeStore, _valid


def _set(name="a", dest="/b/a", every=60.0, keep=None, paths=None):
    return _valid(Backup(name, dest, paths=paths or {"x": "/x"}, every=every, keep=keep))


class BackupReconfigureTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.service = BackupService(self.clock, _FakeStore(), [_set()], host_name="alpha",
                                     work_dir="/tmp/unused")
        self.runs: list[tuple] = []
        self.pending: list[Deferred] = []
        for job in self.service.jobs.values():
            self.fake(job)
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self):
        for d in self.pending:
            if not d.called:
                d.callback(None)
        self.service.stopService()

    def fake(self, job):
        """A run that reads its settings at its start and at its end, and waits for the test."""

        @inlineCallbacks
        def run(state):
            started_with = (dict(job.decl.paths), str(job.dest))
            d = Deferred()
            self.pending.append(d)
            yield d
            self.runs.append((job.name, self.clock.seconds(), started_with,
                              (dict(job.decl.paths), str(job.dest), job.decl.keep)))
            return {"run_id": state.run_id, "outcome": "ok"}

        job._run = run

    def finishRuns(self):
        while self.pending:
            self.pending.pop(0).callback(None)

    def test_runningBackupFinishesWithItsOldSettings(self):
        """A reload while a run is in progress: the run ends with the settings it began with; the
        next run (and status) use the new destination, sources and keep counts."""
        self.clock.advance(60)  # the 1060 run starts
        keep = Retention(daily=3)
        new = _set(dest="/b/new", paths={"y": "/y"}, keep=keep)
        summary = self.service.reconfigure([new])
        self.assertEqual(summary, {"added": [], "changed": ["a"], "removed": []})
        self.assertEqual(self.service.status()[0]["destination"], "/b/a")  # still running there
        self.finishRuns()
        self.assertEqual(self.runs[0][2:], (({"x": "/x"}, "/b/a"), ({"x": "/x"}, "/b/a", Retention())))
        self.assertEqual(self.service.status()[0]["destination"], "/b/new")
        self.clock.advance(60)
        self.finishRuns()
        self.assertEqual(self.runs[1][2:], (({"y": "/y"}, "/b/new"), ({"y": "/y"}, "/b/new", keep)))
        self.assertIs(self.service.restorers["a"].decl, new)

    def test_newScheduleTakesEffectNow(self):
        """A new interval re-arms the scheduler at once; an unchanged one keeps its due time."""
        self.clock.advance(30)
        scheduler = self.service.schedulers["a"]
        self.service.reconfigure([_set(dest="/b/a2")])
        self.assertIs(self.service.schedulers["a"], scheduler)  # same schedule: same next run
        self.service.reconfigure([_set(every=10)])
        self.assertEqual(self.service.status()[0]["next_due"], 1040)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.finishRuns()
        self.assertEqual([r[1] for r in self.runs], [1040])

    def test_oldSchedulerDoesNotReArmAfterItsRun(self):
        """A schedule changed while its run is in progress: once the run ends only the new
        scheduler is armed (the old one must not come back and run the set twice)."""
        self.clock.advance(60)
        self.service.reconfigure([_set(every=600)])
        self.finishRuns()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.service.status()[0]["next_due"], 1660)

    def test_addedAndRemovedSets(self):
        """An added set is scheduled at once; a removed idle set goes; the others are untouched."""
        job = self.service.jobs["a"]
        summary = self.service.reconfigure([_set(), _set("b", "/b/b", every=5)])
        self.assertEqual(summary, {"added": ["b"], "changed": [], "removed": []})
        self.fake(self.service.jobs["b"])
        self.assertIs(self.service.jobs["a"], job)
        self.clock.advance(5)
        self.finishRuns()
        self.assertEqual([r[0] for r in self.runs], ["b"])
        summary = self.service.reconfigure([_set("b", "/b/b", every=5)])
        self.assertEqual(summary["removed"], ["a"])
        self.assertEqual(sorted(self.service.jobs), ["b"])
        self.assertEqual(sorted(self.service.schedulers), ["b"])

    def test_removedWhileRunningGoesWhenDone(self):
        """A set removed during its run stays (running) until the run ends, then disappears."""
        self.clock.advance(60)
        self.service.reconfigure([])
        self.assertEqual([s["state"] for s in self.service.status()], ["running"])
        self.assertEqual(self.service.schedulers, {})
        self.finishRuns()
        self.assertEqual(self.service.status(), [])
        self.clock.advance(600)
        self.assertEqual(len(self.runs), 1)

    def test_sameSetsNoChange(self):
        """The same declarations again change nothing."""
        self.assertEqual(self.service.reconfigure([_set()]), {"added": [], "changed": [], "removed": []})


class BackupDiffTests(SynchronousTestCase):
    def context(self, service=True):
        return SimpleNamespace(host=None, services={"backup": object()} if service else {})

    def test_namesAndRestart(self):
        """Set names added/changed/removed; no backup service yet: restart, with the reason."""
        old = [_set(), _set("b", "/b/b")]
        new = [_set(keep=Retention(daily=2)), _set("c", "/b/c")]
        self.assertEqual(reload.diff(self.context(), old, new),
                         {"added": ["c"], "changed": ["a"], "removed": ["b"]})
        self.assertIsNone(reload.diff(self.context(), old, [_set(), _set("b", "/b/b")]))
        entry = reload.diff(self.context(service=False), [], [_set()])
        self.assertTrue(entry["restart"])
        self.assertIn("backup tables", entry["reason"])

    def test_clashRefusedBeforeApplying(self):
        """Two sets on one destination: the reload fails in the diff, before anything applies."""
        with self.assertRaises(ConfigError):
            reload.diff(self.context(), [_set()], [_set(), _set("b", "/b/a")])

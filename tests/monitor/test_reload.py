"""Reloading a running monitor: new intervals, retention and sampled deploys, on a Clock."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.errors import ConfigError
from salvusctl.monitor import reload
from salvusctl.monitor.build import Monitor
from salvusctl.monitor.loadsource import MonitorLoadSource
from salvusctl.monitor.retention import RetentionPolicy
from tests.monitor.test_service import MonitorTestMixin


class ReconfigureTests(MonitorTestMixin, SynchronousTestCase):
    def setUp(self):
        self.makeMonitor(interval=5.0, retention_interval=100.0)
        self.supervisor.add("web:0", pid=100)
        self.supervisor.add("api:0", pid=200)
        self.start()

    def times(self):
        return [now for _, now, _ in self.sampler.calls]

    def test_newIntervalReschedulesTheLoop(self):
        """After a reload at t=7 to 2 s, samples come at 9, 11 …, not on the old 5 s grid."""
        self.clock.pump([1] * 7)
        self.assertEqual(self.monitor.reconfigure(interval=2.0), ["interval"])
        self.clock.pump([1] * 6)
        self.assertEqual(self.times(), [0, 5, 9, 11, 13])

    def test_oneLoopAfterManyReloads(self):
        """Reloading twice leaves one sampling loop (the old ones schedule nothing)."""
        self.monitor.reconfigure(interval=3.0)
        self.monitor.reconfigure(interval=4.0)
        self.clock.pump([1] * 8)
        self.assertEqual(self.times(), [0, 4, 8])

    def test_bufferedRowsSurviveAReload(self):
        """Rows waiting for an unreachable store are still there, and written, after a reload."""
        self.store.runInteraction = lambda *a, **k: _fail()
        self.tick()
        waiting = self.monitor.bufferedRows()
        self.assertGreater(waiting, 0)
        self.monitor.reconfigure(interval=1.0, buffer_rows=waiting + 100)
        self.assertEqual(self.monitor.bufferedRows(), waiting)
        del self.store.runInteraction
        self.tick(1.0)
        self.assertEqual(self.monitor.bufferedRows(), 0)
        self.assertGreater(len(self.store.rows("SELECT * FROM host_status")), 2)

    def test_sameSettingsChangeNothing(self):
        """Reapplying the running settings names no change and leaves the loop alone."""
        loop = self.monitor._loop
        self.assertEqual(self.monitor.reconfigure(interval=5.0, deploys=None, mounts=True), [])
        self.assertIs(self.monitor._loop, loop)

    def test_sampledDeploys(self):
        """Only the listed deploys are sampled after the reload; None means all again."""
        self.monitor.reconfigure(deploys=["web"])
        self.tick()
        self.assertEqual(self.sampler.calls[-1][0], [("web:0", 100)])
        self.monitor.reconfigure(deploys=None)
        self.tick()
        self.assertEqual(sorted(self.sampler.calls[-1][0]), [("api:0", 200), ("web:0", 100)])

    def test_newDeployDirsAreWalkedAtTheNextTick(self):
        """A new deploy directory is sized at the next tick, not a disk_interval later."""
        self.tick()
        self.assertIsNone(self.sampler.calls[-1][2])
        self.monitor.reconfigure(deploy_dirs={"web": "/srv/web"})
        self.tick()
        self.assertEqual(self.sampler.calls[-1][2], {"web": "/srv/web"})

    def test_retentionIntervalRescheduled(self):
        """A new retention interval restarts the retention loop; new policies alone do not."""
        runs = []
        self.monitor.runRetention = \
            lambda now=None, batch=None: runs.append(self.clock.seconds()) or _done()
        self.clock.advance(60)
        self.monitor.reconfigure(retention={"logs": RetentionPolicy(max_age=10)})
        self.assertEqual(self.monitor.retention, {"logs": RetentionPolicy(max_age=10)})
        self.monitor.reconfigure(retention_interval=10.0)
        self.clock.pump([5] * 6)
        self.assertEqual(runs, [60, 70, 80, 90])  # the first: the start run, due at 10 s

    def test_badValueChangesNothing(self):
        """A bad value is refused before any setting changes."""
        with self.assertRaises(ValueError):
            self.monitor.reconfigure(deploys=["web"], interval=0)
        with self.assertRaises(ValueError):
            self.monitor.reconfigure(address="10.0.0.1")
        self.assertEqual((self.monitor.deploys, self.monitor.interval), (None, 5.0))


def _fail():
    from twisted.internet.defer import fail

    return fail(RuntimeError("store down"))


def _done():
    from twisted.internet.defer import succeed

    return succeed({})


class MonitorDiffTests(SynchronousTestCase):
    def context(self, monitor=True):
        return SimpleNamespace(services={"monitor": object()} if monitor else {})

    def test_liveFieldsByName(self):
        """Changed live fields are named; the same declaration is no difference."""
        old = [Monitor(interval=5, load_source=MonitorLoadSource())]
        new = [Monitor(interval=2, retention={"logs": None}, load_source=MonitorLoadSource())]
        same = [Monitor(interval=5, load_source=MonitorLoadSource())]
        self.assertIsNone(reload.diff(self.context(), old, same))
        self.assertEqual(reload.diff(self.context(), old, new),
                         {"added": [], "changed": ["interval", "retention"], "removed": []})

    def test_fixedFieldsNeedARestart(self):
        """address / memcached / a load source added: restart, with the reason."""
        entry = reload.diff(self.context(), [Monitor()], [Monitor(memcached="tcp:127.0.0.1:11211")])
        self.assertEqual((entry["changed"], entry["restart"]), (["memcached"], True))
        self.assertIn("memcached", entry["reason"])
        entry = reload.diff(self.context(), [], [Monitor()])
        self.assertEqual((entry["added"], entry["restart"]), (["monitor"], True))

    def test_twoMonitorsRefused(self):
        """Two Monitor(...) in the edited file fail the reload before anything is applied."""
        with self.assertRaises(ConfigError):
            reload.diff(self.context(), [Monitor()], [Monitor(), Monitor()])

    def test_applyPassesTheDeclaration(self):
        """apply gives the service every live field, retention as policies."""
        got = {}
        service = SimpleNamespace(reconfigure=lambda **kw: got.update(kw) or ["interval"])
        context = SimpleNamespace(services={"monitor": service})
        reload.apply(context, [Monitor(interval=3, deploys=["web"])], {})
        self.assertEqual((got["interval"], got["deploys"]), (3, ["web"]))
        self.assertIsInstance(got["retention"]["status"], RetentionPolicy)
        self.assertEqual(sorted(got), sorted(reload.LIVE_FIELDS))


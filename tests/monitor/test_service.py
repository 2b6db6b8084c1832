"""The monitor service: sampling ticks, services rows, batched status writes, buffering, queries."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.interfaces import ILoadSource, IMonitor, ISupervisor
from salvusctl.monitor.loadsource import MonitorLoadSource
from salvusctl.monitor.service import MonitorService
from tests.monitor.fakes import FakeSampler, FakeSupervisor, SyncSQLiteStore, inline


class MonitorTestMixin:
    def makeMonitor(self, **kwargs):
        self.clock = Clock()
        self.store = SyncSQLiteStore(self.clock)
        self.supervisor = FakeSupervisor()
        self.sampler = FakeSampler()
        kwargs.setdefault("interval", 5.0)
        self.monitor = MonitorService(
            self.clock, self.store, self.supervisor, host_name="h1", sampler=self.sampler,
            run=inline, **kwargs
        )
        self.successResultOf(self.store.start())
        return self.monitor

    def start(self):
        self.monitor.startService()
        self.addCleanup(self.stop)

    def stop(self):
        if self.monitor.running:
            self.successResultOf(self.monitor.stopService())

    def tick(self, seconds=5.0):
        self.clock.advance(seconds)
        self.clock.advance(0)  # the flush scheduled by the tick


class FakesTests(SynchronousTestCase):
    def test_fakesProvideTheirInterfaces(self):
        """The fakes stand in for the real services only while they match the interfaces."""
        verifyObject(ISupervisor, FakeSupervisor())
        store = SyncSQLiteStore(Clock())
        monitor = MonitorService(Clock(), store, FakeSupervisor(), sampler=FakeSampler(), run=inline)
        verifyObject(IMonitor, monitor)
        verifyObject(ILoadSource, MonitorLoadSource(monitor))


class SamplingTests(MonitorTestMixin, SynchronousTestCase):
    def test_firstTickAtStartThenEveryInterval(self):
        """A tick runs at start and every interval on the injected clock."""
        self.makeMonitor(interval=2.0)
        self.supervisor.add("web:0", pid=100, port=8001)
        self.start()
        self.assertEqual(len(self.sampler.calls), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(self.sampler.calls), 2)
        self.assertEqual(self.sampler.calls[0][0], [("web:0", 100)])

    def test_servicesRowOnStartAndExit(self):
        """A RUNNING instance gets a services row; its exit marks it not running."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, port=8001, user="www")
        self.start()
        self.tick(0)
        rows = self.store.rows('SELECT type, site, port, pid, running, host, "user", monitor_pid'
                               " FROM services")
        self.assertEqual(rows, [("web", "web:0", 8001, 100, 1, "h1", "www", os.getpid())])
        self.supervisor.setState("web:0", "EXITED")
        self.tick(0)
        rows = self.store.rows("SELECT running, stopped_at FROM services")
        self.assertEqual(rows, [(0, 0.0)])

    def test_restartOpensANewLife(self):
        """Each start of an instance is its own services row, so its lifetime history has lives."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, state="STARTING")
        self.start()
        self.supervisor.setState("web:0", "RUNNING", pid=100)
        self.tick()
        self.supervisor.setState("web:0", "BACKOFF")
        self.supervisor.setState("web:0", "RUNNING", pid=101)
        self.tick()
        rows = self.store.rows("SELECT pid, running FROM services ORDER BY id")
        self.assertEqual(rows, [(100, 0), (101, 1)])
        life = self.successResultOf(self.monitor.instanceHistory("web:0"))
        self.assertEqual([e["event"] for e in life["events"]], ["start", "exit", "start"])
        self.assertEqual(len(life["lives"]), 2)

    def test_oneTransactionPerTickWithEveryRow(self):
        """A tick's status, per-process, host and disk rows are written in one interaction."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.supervisor.add("web:1", pid=200)
        self.sampler.overrides["web:0"] = dict(children=2, cpu=3.0)
        self.start()
        self.tick(0)
        before = self.store.interactions
        self.tick()
        self.assertEqual(self.store.interactions - before, 1)
        status = self.store.rows("SELECT nprocs, percent_cpu, threads, fds, state FROM status"
                                 " WHERE timestamp = 5.0 ORDER BY service_id")
        self.assertEqual(status, [(3, 9.0, 3, 9, "sleeping"), (1, 1.0, 1, 3, "sleeping")])
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM process_status WHERE timestamp = 5.0"),
                         [(4,)])
        self.assertEqual(self.store.rows("SELECT host, load1 FROM host_status WHERE timestamp = 5.0"),
                         [("h1", 0.5)])
        self.assertEqual(self.store.rows("SELECT kind, name, percent FROM disk_status"
                                         " WHERE timestamp = 5.0"), [("mount", "/", 50.0)])

    def test_latestIsInMemory(self):
        """latest() answers from memory, with summed and per-process figures and the state."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, port=8001)
        self.supervisor.add("web:1", pid=None, state="FATAL")
        self.sampler.overrides["web:0"] = dict(children=1, rss=500)
        self.start()
        self.store.down = True  # the database is not consulted
        latest = self.monitor.latest()
        self.assertEqual(set(latest), {"web:0", "web:1"})
        self.assertEqual(latest["web:0"]["rss"], 1000)
        self.assertEqual(latest["web:0"]["nprocs"], 2)
        self.assertEqual([p["pid"] for p in latest["web:0"]["processes"]], [100, 101])
        self.assertEqual(latest["web:0"]["sampled_at"], 0.0)
        self.assertEqual(latest["web:1"]["state"], "FATAL")
        self.assertNotIn("sampled_at", latest["web:1"])

    def test_vanishedProcessKeepsLastSample(self):
        """A process that vanished between the supervisor's report and the read keeps its last
        sample time, so a stale alert can see it."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.sampler.overrides["web:0"] = None
        self.tick()
        self.assertEqual(self.monitor.latest()["web:0"]["sampled_at"], 0.0)

    def test_tickErrorDoesNotStopTheLoop(self):
        """A failing sample is logged and the next tick runs."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.sampler.raiseNext = RuntimeError("proc unreadable")
        self.tick()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.tick()
        self.assertEqual(len(self.sampler.calls), 3)
        self.assertEqual(self.monitor.latest()["web:0"]["sampled_at"], 10.0)

    def test_observerErrorDoesNotStopTheLoop(self):
        """A broken sample observer (an alert rule bug) cannot stop sampling."""
        self.makeMonitor()
        self.start()

        def broken(snapshot):
            raise ValueError("bug")

        self.monitor.addSampleObserver(broken)
        self.tick()
        self.tick()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(self.monitor.ticks, 3)

    def test_deployDirectoriesWalkedOnTheirOwnInterval(self):
        """Directory sizes are costly: walked every disk_interval, and stored as deploy rows."""
        self.makeMonitor(deploy_dirs={"web": "/srv/web"}, disk_interval=60.0)
        self.start()
        self.tick()
        self.assertEqual(self.sampler.calls[0][2], {"web": "/srv/web"})
        self.assertIsNone(self.sampler.calls[1][2])
        self.assertEqual(self.monitor.latestHost()["deploys"][0]["bytes"], 1234)
        for _ in range(12):
            self.tick()
        self.assertEqual(self.sampler.calls[12][2], {"web": "/srv/web"})
        rows = self.store.rows("SELECT timestamp, name, used FROM disk_status WHERE kind = 'deploy'")
        self.assertEqual(rows, [(0.0, "web", 1234), (60.0, "web", 1234)])

    def test_badSettingsAreRefused(self):
        """A zero interval or buffer is a configuration mistake, reported clearly."""
        store = SyncSQLiteStore(Clock())
        with self.assertRaises(ValueError) as e:
            MonitorService(Clock(), store, interval=0)
        self.assertIn("interval", str(e.exception))
        with self.assertRaises(ValueError):
            MonitorService(Clock(), store, buffer_rows=0)


class BufferTests(MonitorTestMixin, SynchronousTestCase):
    def test_storeDownBuffersThenFlushes(self):
        """Samples taken while the store is down are all written when it returns."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.tick(0)
        self.store.down = True
        for _ in range(4):
            self.tick()
        self.assertGreater(self.monitor.bufferedRows(), 0)
        self.store.down = False
        self.tick()
        self.assertEqual(self.monitor.bufferedRows(), 0)
        times = [r[0] for r in self.store.rows("SELECT timestamp FROM status ORDER BY timestamp")]
        self.assertEqual(times, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0])

    def test_storeDownAtInstanceStart(self):
        """An instance that starts during an outage gets its services row when the store returns,
        and its samples are attached to it."""
        self.makeMonitor()
        self.start()
        self.store.down = True
        self.supervisor.add("web:0", pid=100, state="STARTING")
        self.supervisor.setState("web:0", "RUNNING", pid=100)
        self.tick()
        self.tick()
        self.store.down = False
        self.tick()
        self.tick(0)
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM services"), [(1,)])
        self.assertEqual(self.store.rows("SELECT timestamp FROM status ORDER BY timestamp"),
                         [(5.0,), (10.0,), (15.0,)])

    def test_boundDropsOldestWithOneLogLine(self):
        """Beyond the bound the oldest rows go, with one clear warning per outage."""
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.makeMonitor(buffer_rows=10)
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.tick(0)
        self.store.down = True
        for _ in range(10):
            self.tick()
        self.assertEqual(self.monitor.bufferedRows(), 10)
        warnings = [e for e in events if "buffer is full" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.store.down = False
        self.tick()
        back = [e for e in events if "store is back after" in e.get("log_format", "")]
        self.assertEqual(len(back), 1)
        self.assertGreater(back[0]["dropped"], 0)
        # The newest samples survived.
        times = [r[0] for r in self.store.rows("SELECT timestamp FROM status ORDER BY timestamp")]
        self.assertEqual(times[-1], 55.0)
        self.assertNotIn(10.0, times)

    def test_queueingStoreOutagesEachLoggedWithTheirOwnCount(self):
        """A store that queues writes during an outage (PostgreSQL) instead of failing them: each
        outage gives one warning when dropping starts and one "store is back" line with that
        outage's count, and the dropped-rows total keeps growing across outages."""
        from twisted.internet.defer import Deferred
        from twisted.logger import LogLevel, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.makeMonitor(buffer_rows=10)
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.tick(0)
        real = self.store.runInteraction
        queued = []

        def hung(fn, *args, **kw):
            d = Deferred()
            queued.append((d, fn, args, kw))
            return d

        def recover():
            self.store.runInteraction = real
            for d, fn, args, kw in queued:
                real(fn, *args, **kw).chainDeferred(d)
            del queued[:]
            self.clock.advance(0)  # the write of the rest of the buffer, started at once
            self.tick()

        def lines(text):
            return [e for e in events if text in e.get("log_format", "")]

        counts = []
        for outage in range(2):
            self.store.runInteraction = hung
            for _ in range(10):
                self.tick()
            self.assertEqual(len(lines("buffer is full")), outage + 1)
            self.assertEqual(lines("buffer is full")[-1]["log_level"], LogLevel.warn)
            self.assertEqual(len(lines("store is back after")), outage)
            recover()
            back = lines("store is back after")
            self.assertEqual(len(back), outage + 1, [(e["rows"], e["dropped"], e["seconds"]) for e in back])
            counts.append(back[-1]["dropped"])
        self.assertGreater(counts[0], 0)
        self.assertEqual(counts[0], counts[1])  # the second count starts from zero
        self.assertEqual(self.monitor.dropped_rows, counts[0] + counts[1])
        self.assertEqual(self.monitor.bufferedRows(), 0)

    def test_hungStoreDoesNotHoldShutdown(self):
        """A store that queues writes for ever (PostgreSQL during an outage) delays stopping by
        at most stop_timeout."""
        from twisted.internet.defer import Deferred

        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.clock.advance(0)
        self.store.runInteraction = lambda *a, **kw: Deferred()
        self.clock.advance(5)
        self.clock.advance(0)
        d = self.monitor.stopService()
        self.assertNoResult(d)
        self.clock.advance(self.monitor.stop_timeout)
        self.assertNoResult(d)  # the flush that was running, then the last one
        self.clock.advance(self.monitor.stop_timeout)
        self.successResultOf(d)

    def test_stopFlushes(self):
        """Stopping the monitor writes what is buffered before the store closes."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.start()
        self.clock.advance(5)  # a tick whose flush has not run yet
        self.successResultOf(self.monitor.stopService())
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM status"), [(2,)])


class QueryTests(MonitorTestMixin, SynchronousTestCase):
    def test_runningInstancesWithLastStatus(self):
        """Running instances come with their newest stored sample; exited ones are left out."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, port=8001)
        self.supervisor.add("web:1", pid=200, port=8002)
        self.start()
        self.sampler.overrides["web:0"] = dict(cpu=7.0)
        self.tick()
        self.supervisor.setState("web:1", "STOPPED")
        self.tick(0)
        running = self.successResultOf(self.monitor.runningInstances())
        self.assertEqual([r["site"] for r in running], ["web:0"])
        self.assertEqual(running[0]["sample"]["timestamp"], 5.0)
        self.assertEqual(running[0]["sample"]["cpu_percent"], 7.0)

    def test_historyBetweenTimes(self):
        """history() gives one instance's samples between two times, oldest first."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100)
        self.supervisor.add("api:0", pid=300)
        self.start()
        for _ in range(5):
            self.tick()
        samples = self.successResultOf(self.monitor.history("web:0", 5.0, 15.0))
        self.assertEqual([s["timestamp"] for s in samples], [5.0, 10.0, 15.0])
        samples = self.successResultOf(self.monitor.history("web:0", 20.0))
        self.assertEqual([s["timestamp"] for s in samples], [20.0, 25.0])
        host = self.successResultOf(self.monitor.hostHistory(20.0))
        self.assertEqual([h["timestamp"] for h in host], [20.0, 25.0])

    def test_leastLoaded(self):
        """The least-loaded RUNNING instance of a deploy by cpu, then rss."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, port=8001)
        self.supervisor.add("web:1", pid=200, port=8002)
        self.supervisor.add("web:2", pid=300, port=8003)
        self.supervisor.add("api:0", pid=400, port=9001)
        self.sampler.overrides.update({"web:0": dict(cpu=50.0), "web:1": dict(cpu=5.0),
                                       "web:2": dict(cpu=1.0), "api:0": dict(cpu=0.0)})
        self.start()
        self.supervisor.setState("web:2", "STOPPING", pid=300)
        self.assertEqual(self.monitor.leastLoaded("web"), "web:1")
        self.assertEqual(self.monitor.leastLoaded("api"), "api:0")
        self.assertIsNone(self.monitor.leastLoaded("nothing"))

    def test_loadSourceByPort(self):
        """The balancer's least-load scheduler reads an instance's cpu by its backend port."""
        self.makeMonitor()
        self.supervisor.add("web:0", pid=100, port=8001)
        self.supervisor.add("web:1", pid=200, port=8002)
        self.sampler.overrides.update({"web:0": dict(cpu=30.0), "web:1": dict(cpu=2.5)})
        self.start()

        class Backend:
            def __init__(self, address, port):
                self.address, self.port = address, port

        source = MonitorLoadSource(self.monitor, addresses=["10.0.0.5"])
        self.assertEqual(source.loadOf(Backend("127.0.0.1", 8001)), 30.0)
        self.assertEqual(source.loadOf(("10.0.0.5", 8002)), 2.5)
        self.assertEqual(source.loadOf({"address": "127.0.0.1", "port": "8002"}), 2.5)
        self.assertIsNone(source.loadOf(Backend("10.9.9.9", 8001)))
        self.assertIsNone(source.loadOf(Backend("127.0.0.1", 9999)))
        self.supervisor.setState("web:0", "STOPPED")
        self.assertIsNone(source.loadOf(Backend("127.0.0.1", 8001)))

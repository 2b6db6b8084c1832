"""One contract suite for L{IMonitor}, run against the real L{MonitorService} (its own store
writes and queries, a sampler that answers what the test sets) and against
L{salvusctl.monitor.testing.FakeMonitor}.

The admin's pages, the CLI's C{monitor top|history} and the balancer's least-load scheduler read
these answers: the fake must give the real keys, the same rows for the same times, and the same
least-loaded choice.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.interfaces import IMonitor
from salvusctl.monitor.service import MonitorService
from salvusctl.monitor.testing import FakeMonitor
from salvusctl.supervisor.testing import FakeSupervisor
from tests.monitor.fakes import FakeSampler, SyncSQLiteStore, inline

INTERVAL = 5.0


class MonitorContract:
    """The behaviour both must share; a subclass makes one over C{self.supervisor} and says how
    one round of samples (C{{name: (cpu_percent, rss)}}) reaches it."""

    def make(self) -> Any:
        raise NotImplementedError

    def sample(self, values: dict[str, tuple[float, int]]) -> None:
        """Advance the clock one interval and sample every RUNNING instance (C{values} for some)."""
        raise NotImplementedError

    def setUp(self):
        self.clock = Clock()
        self.supervisor = FakeSupervisor({"web": 3, "api": 1}, clock=self.clock)
        self.m = self.make()

    def test_providesTheInterface(self):
        verifyObject(IMonitor, self.m)

    def test_latestHasTheRealKeysAndValues(self):
        self.sample({"web:0": (12.5, 4096)})
        latest = self.m.latest()
        self.assertEqual(sorted(latest), ["api:0", "web:0", "web:1", "web:2"])
        entry = latest["web:0"]
        self.assertEqual(set(entry), realKeys()[0])
        info = self.supervisor.instanceInfo("web:0")
        self.assertEqual((entry["name"], entry["group"], entry["state"], entry["pid"], entry["port"]),
                         ("web:0", "web", "RUNNING", info["pid"], info["port"]))
        self.assertEqual((entry["cpu_percent"], entry["rss"], entry["timestamp"]), (12.5, 4096, INTERVAL))

    def test_historyBetweenTimesOldestFirst(self):
        """Bounds are inclusive; rows carry the real columns; an unknown name has no rows."""
        for i in range(5):
            self.sample({"web:0": (float(i), 1000 + i)})
        rows = self.successResultOf(self.m.history("web:0", 10.0, 20.0))
        self.assertEqual([r["timestamp"] for r in rows], [10.0, 15.0, 20.0])
        self.assertEqual([(r["cpu_percent"], r["rss"]) for r in rows],
                         [(1.0, 1001), (2.0, 1002), (3.0, 1003)])
        self.assertEqual(set(rows[0]), realKeys()[1])
        rows = self.successResultOf(self.m.history("web:0", 20.0))
        self.assertEqual([r["timestamp"] for r in rows], [20.0, 25.0])
        self.assertEqual(self.successResultOf(self.m.history("nosuch:0", 0.0)), [])

    def test_leastLoadedIsTheIdlestRunningInstance(self):
        """Lowest cpu, then rss; an instance that stops is no longer a candidate."""
        self.sample({"web:0": (50.0, 10), "web:1": (5.0, 30), "web:2": (5.0, 20), "api:0": (0.0, 1)})
        self.assertEqual(self.m.leastLoaded("web"), "web:2")
        self.assertEqual(self.m.leastLoaded("api"), "api:0")
        self.assertIsNone(self.m.leastLoaded("nothing"))
        self.successResultOf(self.supervisor.stopInstance("web:2"))
        self.assertEqual(self.m.latest()["web:2"]["state"], "STOPPED")
        self.assertEqual(self.m.leastLoaded("web"), "web:1")


class RealMonitorContractTests(MonitorContract, SynchronousTestCase):
    def make(self):
        self.store = SyncSQLiteStore(self.clock)
        self.sampler = FakeSampler()
        monitor = MonitorService(self.clock, self.store, self.supervisor, host_name="h1",
                                 sampler=self.sampler, run=inline, interval=INTERVAL)
        self.successResultOf(self.store.start())
        monitor.startService()
        self.addCleanup(lambda: self.successResultOf(monitor.stopService()) if monitor.running else None)
        return monitor

    def sample(self, values):
        self.sampler.overrides = {name: dict(cpu=cpu, rss=rss) for name, (cpu, rss) in values.items()}
        self.clock.advance(INTERVAL)
        self.clock.advance(0)  # the flush the tick schedules


def realKeys() -> tuple[set[str], set[str]]:
    """The keys of a real monitor's latest() entry and history() row, from a monitor of its own."""
    clock = Clock()
    store = SyncSQLiteStore(clock)
    monitor = MonitorService(clock, store, FakeSupervisor({"web": 1}, clock=clock), host_name="h1",
                             sampler=FakeSampler(), run=inline, interval=INTERVAL)
    store.start()
    monitor.startService()
    clock.advance(INTERVAL)
    clock.advance(0)
    rows: list = []
    monitor.history("web:0", 0.0).addCallback(rows.extend)
    latest = set(monitor.latest()["web:0"])
    monitor.stopService()
    store.close()
    return latest, set(rows[0])


class FakeMonitorContractTests(MonitorContract, SynchronousTestCase):
    def make(self):
        return FakeMonitor(self.supervisor)

    def sample(self, values):
        self.clock.advance(INTERVAL)
        for info in self.supervisor.instanceInfos():
            if info["state"] == "RUNNING":
                cpu, rss = values.get(info["name"], (1.0, 1000))
                self.m.record(info["name"], self.clock.seconds(), cpu, rss)

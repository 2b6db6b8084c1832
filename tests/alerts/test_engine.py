"""Alert rules and the engine: holding for Y seconds, no repeats, recovery notices."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from salvusctl.alerts.actions import RecordAction
from salvusctl.alerts.engine import AlertsService
from salvusctl.alerts.rules import MB, Rule
from salvusctl.errors import ConfigError
from salvusctl.interfaces import IAlertAction
from tests.monitor.fakes import SyncSQLiteStore, hostSample, processSample


@implementer(IAlertAction)
class Collect:
    records = False

    def __init__(self):
        self.alerts = []

    def fire(self, alert):
        self.alerts.append(alert)


def instance(name, now, state="RUNNING", sampled=True, starts=(), **sample):
    entry = dict(name=name, group=name.split(":")[0], state=state, starts=list(starts))
    if sampled:
        entry.update(processSample(100, now, **sample))
        entry["sampled_at"] = now
    return entry


def snapshot(now, instances=(), **host):
    return {"timestamp": now, "host": hostSample(now, **host),
            "instances": {i["name"]: i for i in instances}}


class RuleTests(SynchronousTestCase):
    def test_badRulesAreRefused(self):
        """A rule with a missing or silly parameter is a config error naming the problem."""
        with self.assertRaises(ConfigError) as e:
            Rule("cpux", 5)
        self.assertIn("unknown alert kind", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            Rule("cpu")
        self.assertIn("needs a numeric threshold", str(e.exception))
        with self.assertRaises(ConfigError):
            Rule("flapping", 3)
        with self.assertRaises(ConfigError):
            Rule("host_cpu", 90, deploy="web")
        with self.assertRaises(ConfigError):
            Rule("cpu", 90, seconds=-1)

    def test_eachKind(self):
        """Every kind looks at the right figure of the right subject."""
        now = 100.0
        snap = snapshot(
            now,
            [
                instance("web:0", now, cpu=95.0, rss=600 * MB, threads=500, fds=10),
                instance("web:1", now, state="FATAL", sampled=False, starts=[10, 60, 90, 95]),
                instance("api:0", now - 60, cpu=1.0),
            ],
            cpu=97.0,
            available=100 * MB,
        )
        snap["instances"]["api:0"]["sampled_at"] = 30.0

        def holds(rule):
            return {s for s, (h, _) in rule.evaluate(snap, now, {}).items() if h}

        self.assertEqual(holds(Rule("cpu", 90)), {"web:0"})
        self.assertEqual(holds(Rule("cpu", 90, deploy="api")), set())
        self.assertEqual(holds(Rule("host_cpu", 90)), {"host"})
        self.assertEqual(holds(Rule("host_free_ram", 200)), {"host"})
        self.assertEqual(holds(Rule("host_free_ram", 50)), set())
        self.assertEqual(holds(Rule("rss", 500)), {"web:0"})
        self.assertEqual(holds(Rule("threads", 100)), {"web:0"})
        self.assertEqual(holds(Rule("fds", 100)), set())
        self.assertEqual(holds(Rule("disk", 40)), {"/"})
        self.assertEqual(holds(Rule("fatal")), {"web:1"})
        self.assertEqual(holds(Rule("down")), {"web:1"})
        self.assertEqual(holds(Rule("flapping", 3, seconds=60)), {"web:1"})
        self.assertEqual(holds(Rule("stale", 30)), {"api:0"})
        message = dict(Rule("rss", 500).evaluate(snap, now, {}))["web:0"][1]
        self.assertEqual(message, "web:0 rss 600 MiB (limit 500 MB)")


class EngineTests(SynchronousTestCase):
    def setUp(self):
        self.collect = Collect()

    def engine(self, rules, repeat=3600.0):
        return AlertsService(None, rules, [self.collect], "h1", repeat_interval=repeat)

    def test_cpuForSecondsInARow(self):
        """cpu > X% fires only once it has held for Y seconds without a break."""
        engine = self.engine([Rule("cpu", 80, seconds=15)])
        cpus = [90, 90, 10, 90, 90, 90, 90, 90]
        for i, cpu in enumerate(cpus):
            engine.evaluate(snapshot(i * 5.0, [instance("web:0", i * 5.0, cpu=cpu)]))
        self.assertEqual([(a.subject, a.fired_at) for a in self.collect.alerts], [("web:0", 30.0)])

    def test_noRepeatWithinIntervalAndRecovery(self):
        """A flapping condition notifies once per interval; its clearing sends a recovery notice;
        an alert still firing when the interval is over is notified then."""
        engine = self.engine([Rule("cpu", 80)], repeat=100.0)
        timeline = [(0, 90), (5, 10), (10, 90), (15, 10), (20, 90), (150, 90), (155, 10), (160, 90)]
        for t, cpu in timeline:
            engine.evaluate(snapshot(float(t), [instance("web:0", t, cpu=cpu)]))
        got = [(a.cleared, a.fired_at, a.cleared_at) for a in self.collect.alerts]
        self.assertEqual(got, [(False, 0.0, None), (True, 0.0, 5.0), (False, 20.0, None),
                               (True, 20.0, 155.0)])
        self.assertEqual(len(engine.active()), 1)  # fired again at 160, within the interval

    def test_subjectsAreIndependent(self):
        """The repeat filter is per alert and subject: another instance still notifies."""
        engine = self.engine([Rule("cpu", 80)])
        engine.evaluate(snapshot(0.0, [instance("web:0", 0, cpu=90)]))
        engine.evaluate(snapshot(5.0, [instance("web:0", 5, cpu=90), instance("web:1", 5, cpu=90)]))
        self.assertEqual([a.subject for a in self.collect.alerts], ["web:0", "web:1"])

    def test_vanishedSubjectClears(self):
        """An instance removed while alerting sends its recovery notice instead of firing forever."""
        engine = self.engine([Rule("rss", 1)])
        engine.evaluate(snapshot(0.0, [instance("web:0", 0, rss=5 * MB)]))
        engine.evaluate(snapshot(5.0, []))
        self.assertEqual([a.cleared for a in self.collect.alerts], [False, True])

    def test_recordActionSeesSuppressedFirings(self):
        """The store records every firing, even those kept from e-mail by the repeat filter."""
        clock = Clock()
        store = SyncSQLiteStore(clock)
        from salvusctl.monitor.schema import MONITOR_MIGRATIONS

        store.addMigrations("monitor", MONITOR_MIGRATIONS)
        self.successResultOf(store.start())
        self.addCleanup(store.close)
        record = RecordAction(store)
        verifyObject(IAlertAction, record)
        engine = AlertsService(None, [Rule("fatal", severity="critical")], [record, self.collect],
                               "h1")
        for t, state in [(0, "FATAL"), (5, "RUNNING"), (10, "FATAL")]:
            self.successResultOf(
                engine.evaluate(snapshot(float(t), [instance("web:0", t, state=state, sampled=False)]))
            )
        rows = store.rows("SELECT rule, subject, severity, fired_at, cleared_at FROM alerts ORDER BY id")
        self.assertEqual(rows, [("fatal", "web:0", "critical", 0.0, 5.0),
                                ("fatal", "web:0", "critical", 10.0, None)])
        self.assertEqual(len(self.collect.alerts), 2)  # fired, cleared; the refire was suppressed
        recorded = self.successResultOf(engine.recorded(store, open_only=True))
        self.assertEqual([(r["rule"], r["fired_at"]) for r in recorded], [("fatal", 10.0)])
        self.assertEqual(len(self.successResultOf(engine.recorded(store))), 2)

    def test_brokenActionDoesNotStopOthers(self):
        """One failing action is logged; the others still run."""

        @implementer(IAlertAction)
        class Broken:
            records = False

            def fire(self, alert):
                raise OSError("smtp down")

        engine = AlertsService(None, [Rule("cpu", 1)], [Broken(), self.collect], "h1")
        engine.evaluate(snapshot(0.0, [instance("web:0", 0, cpu=90)]))
        self.assertEqual(len(self.collect.alerts), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_wiredToTheMonitor(self):
        """Started under a monitor, the engine evaluates every sample the monitor takes."""
        from salvusctl.monitor.service import MonitorService
        from tests.monitor.fakes import FakeSampler, FakeSupervisor, inline

        clock = Clock()
        store = SyncSQLiteStore(clock)
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=100)
        sampler = FakeSampler()
        sampler.overrides["web:0"] = dict(threads=900)
        monitor = MonitorService(clock, store, supervisor, host_name="h1", sampler=sampler, run=inline)
        self.successResultOf(store.start())
        engine = AlertsService(monitor, [Rule("threads", 800, seconds=10)], [self.collect], "h1")
        engine.startService()
        monitor.startService()
        clock.advance(5)
        self.assertEqual(self.collect.alerts, [])
        clock.advance(5)
        self.assertEqual([a.message for a in self.collect.alerts], ["web:0 has 900 threads (limit 800)"])
        self.successResultOf(monitor.stopService())
        engine.stopService()


class AlertListTests(SynchronousTestCase):
    def test_alertsForTheAdmin(self):
        """alerts() lists firing alerts, and with include_cleared the recovered ones, newest
        first, as Alert.asDict: what the admin's pages, salvus.alerts and /metrics read."""
        from salvusctl.admin.extensions import IAlertSource

        engine = AlertsService(None, [Rule("cpu", 50)], [], "h1")
        verifyObject(IAlertSource, engine)
        engine.evaluate(snapshot(10.0, [instance("web:0", 10.0, cpu=90), instance("web:1", 10.0, cpu=1)]))
        engine.evaluate(snapshot(20.0, [instance("web:0", 20.0, cpu=90), instance("web:1", 20.0, cpu=95)]))
        self.assertEqual([(a["subject"], a["fired_at"]) for a in engine.alerts()],
                         [("web:1", 20.0), ("web:0", 10.0)])
        engine.evaluate(snapshot(30.0, [instance("web:0", 30.0, cpu=1), instance("web:1", 30.0, cpu=95)]))
        self.assertEqual([a["subject"] for a in engine.alerts()], ["web:1"])
        listed = engine.alerts(include_cleared=True)
        self.assertEqual([(a["subject"], a["cleared"]) for a in listed], [("web:0", True), ("web:1", False)])
        self.assertEqual(listed[0]["cleared_at"], 30.0)
        self.assertEqual(set(listed[0]), {"rule", "kind", "subject", "severity", "message", "host",
                                          "fired_at", "cleared", "cleared_at", "value", "title"})

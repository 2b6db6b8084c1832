"""Reloading the alerts of a running host: rules and actions change, their state does not."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.alerts import reload
from salvusctl.alerts.build import AlertRule, AlertSettings, EmailAlerts, WebhookAlerts, buildAlerts
from salvusctl.alerts.rules import MB
from salvusctl.errors import ConfigError
from salvusctl.monitor.schema import MONITOR_MIGRATIONS
from salvusctl.store.testing import MemoryStore
from tests.alerts.test_engine import Collect, instance, snapshot


class _Monitor:
    """Hands the engine the samples the test makes, at the clock's time."""

    def __init__(self, clock):
        self.clock = clock
        self.observers = []

    def addSampleObserver(self, observer):
        self.observers.append(observer)

    def removeSampleObserver(self, observer):
        self.observers.remove(observer)

    def sample(self, **figures):
        now = self.clock.seconds()
        snap = snapshot(now, [instance(name, now, **values) for name, values in figures.items()])
        for observer in list(self.observers):
            observer(snap)


class AlertsReloadTests(SynchronousTestCase):
    """Through the alerts' own reload module, as the host's reloader calls it."""

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.monitor = _Monitor(self.clock)
        top = MultiService()
        store = MultiService()
        store.setServiceParent(top)
        # Notices go through the outbox in the store: a synchronous one, so they are sent at once.
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("monitor", MONITOR_MIGRATIONS)
        self.store.start()
        self.context = SimpleNamespace(
            reactor=self.clock, services={"monitor": self.monitor, "store": store},
            store=self.store, host=SimpleNamespace(name="h1"),
        )
        self.mail = EmailAlerts("smtp.example.org", "salvus@example.org", ["ops@example.org"])
        self.old = self.rules(100)
        self.service = buildAlerts(self.context, self.old, monitor=self.monitor)
        # The e-mail action sees notifications only; the record action sees every change.
        self.collect, self.records = Collect(), Collect()
        self.records.records = True
        self.service.actions = [self.records, self.collect]
        self.service.notifiers = [(self.mail, self.collect)]
        self.context.services["alerts"] = self.service
        self.service.setServiceParent(top)
        top.startService()
        self.addCleanup(top.stopService)

    def rules(self, threshold, repeat=600, *more):
        """The file's alerts part: the rss rule, the e-mail action, the repeat interval."""
        return [AlertRule("rss", threshold, deploy="web", name="rss-web"), self.mail,
                AlertSettings(repeat_interval=repeat), *more]

    def at(self, seconds, **figures):
        self.clock.advance(seconds - self.clock.seconds())
        self.monitor.sample(**figures)

    def reload(self, new):
        entry = reload.diff(self.context, self.old, new)
        if entry is not None:
            reload.apply(self.context, new, entry)
        self.old = new
        return entry

    def notified(self):
        return [(a.rule, a.subject, a.cleared, a.fired_at) for a in self.collect.alerts]

    def test_stillFiringIsNotSentAgain(self):
        """A rule firing at the reload (changed or not) sends nothing new because of it."""
        self.at(0, **{"web:0": dict(rss=500 * MB)})
        entry = self.reload(self.rules(200))
        self.assertEqual(entry, {"added": [], "changed": ["rss-web"], "removed": []})
        self.at(10, **{"web:0": dict(rss=500 * MB)})
        self.at(20, **{"web:0": dict(rss=500 * MB)})
        self.assertEqual(self.notified(), [("rss-web", "web:0", False, 0.0)])

    def test_withinNoRepeatIntervalDoesNotFireAgainAfterReload(self):
        """Fired at 0, resolved at 10, reloaded at 20 (the rule kept, another added), back at 30:
        still within the 600 s repeat interval of its last notice, so nobody is told again."""
        self.at(0, **{"web:0": dict(rss=500 * MB)})
        self.at(10, **{"web:0": dict(rss=1 * MB)})
        self.clock.advance(10)
        entry = self.reload(self.rules(100, 600, AlertRule("threads", 1000, name="many-threads")))
        self.assertEqual(entry, {"added": ["many-threads"], "changed": [], "removed": []})
        self.at(30, **{"web:0": dict(rss=500 * MB)})
        self.assertEqual(self.notified(), [("rss-web", "web:0", False, 0.0), ("rss-web", "web:0", True, 0.0)])
        self.assertEqual(len(self.service.active()), 1)  # firing, just not re-sent
        self.assertEqual([a.fired_at for a in self.records.alerts if not a.cleared], [0.0, 30.0])
        self.at(700, **{"web:0": dict(rss=500 * MB)})
        self.assertEqual(self.notified()[-1], ("rss-web", "web:0", False, 30.0))  # interval over

    def test_changedThresholdAtTheNextEvaluation(self):
        """A raised threshold clears the firing alert at the next sample; a lowered one fires."""
        self.at(0, **{"web:0": dict(rss=150 * MB)})
        self.reload(self.rules(200))
        self.assertEqual(len(self.service.active()), 1)  # nothing happens until a sample
        self.at(5, **{"web:0": dict(rss=150 * MB)})
        self.assertEqual(self.service.active(), [])
        self.reload(self.rules(100, 0))
        self.at(10, **{"web:0": dict(rss=150 * MB)})
        self.assertEqual([a.fired_at for a in self.service.active()], [10.0])

    def test_removedRuleStopsAndClears(self):
        """A removed rule's firing alert is resolved (its notice goes out) and it fires no more."""
        self.at(0, **{"web:0": dict(rss=500 * MB)})
        self.clock.advance(3)
        entry = self.reload([AlertRule("threads", 1000, name="many-threads"), self.mail])
        self.assertEqual(entry, {"added": ["many-threads"], "changed": ["repeat_interval"],
                                 "removed": ["rss-web"]})
        self.assertEqual(self.notified()[-1], ("rss-web", "web:0", True, 0.0))
        self.assertEqual(self.collect.alerts[-1].cleared_at, 3.0)
        self.assertIn("removed by a reload", self.collect.alerts[-1].message)
        self.at(10, **{"web:0": dict(rss=500 * MB, threads=2000)})
        self.assertEqual([a.rule for a in self.service.active()], ["many-threads"])

    def test_sameFileNoDifference(self):
        """Reading the same rules again is no difference, and nothing is applied."""
        self.assertIsNone(self.reload(self.rules(100)))
        self.assertEqual(self.service.actions, [self.records, self.collect])

    def test_duplicateNamesRefusedBeforeApplying(self):
        """Two rules with one name: a config error from the diff, before anything changes."""
        with self.assertRaises(ConfigError):
            reload.diff(self.context, self.old,
                        [AlertRule("rss", 1, name="x"), AlertRule("cpu", 1, name="x")])
        self.assertEqual([r.label for r in self.service.rules], ["rss-web"])


class ActionsReloadTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        top, store = MultiService(), MultiService()
        store.setServiceParent(top)
        self.context = SimpleNamespace(
            reactor=self.clock, services={"monitor": _Monitor(self.clock), "store": store},
            store=SimpleNamespace(), host=SimpleNamespace(name="h1"),
        )
        self.top = top

    def test_unchangedActionsAreKept(self):
        """An unchanged e-mail action is the same object after the reload; a changed webhook is
        new; the result names the webhook by host, never by its (secret-bearing) URL."""
        mail = EmailAlerts("smtp.example.org", "salvus@example.org", ["ops@example.org"])
        hook = WebhookAlerts("https://hooks.example.org/T0/SECRET")
        old = [AlertRule("fatal"), mail, hook]
        service = buildAlerts(self.context, old, monitor=self.context.services["monitor"])
        self.context.services["alerts"] = service
        email_action = service.actions[1]
        new = [AlertRule("fatal"), EmailAlerts("smtp.example.org", "salvus@example.org", ["ops@example.org"]),
               WebhookAlerts("https://hooks.example.org/T0/OTHER")]
        entry = reload.diff(self.context, old, new)
        self.assertEqual(entry, {"added": [], "changed": ["webhook:hooks.example.org"], "removed": []})
        reload.apply(self.context, new, entry)
        self.assertIs(service.actions[1], email_action)
        self.assertEqual(service.actions[2].url, "https://hooks.example.org/T0/OTHER")
        self.assertTrue(getattr(service.actions[0], "records", False))  # the store's record action stays

    def test_firstRulesStartTheService(self):
        """A host without alerts gets a running alerts service from its first rule, fed by the
        monitor."""
        self.top.startService()
        self.addCleanup(self.top.stopService)
        new = [AlertRule("fatal")]
        entry = reload.diff(self.context, [], new)
        self.assertEqual(entry, {"added": ["fatal"], "changed": [], "removed": []})
        reload.apply(self.context, new, entry)
        service = self.context.services["alerts"]
        self.assertTrue(service.running)
        self.assertEqual(self.context.services["monitor"].observers, [service.evaluate])

    def test_rulesWithoutMonitorNeedARestart(self):
        """No monitor to read samples from: restart, with the reason."""
        del self.context.services["monitor"]
        entry = reload.diff(self.context, [], [AlertRule("fatal")])
        self.assertTrue(entry["restart"])
        self.assertIn("no monitor", entry["reason"])

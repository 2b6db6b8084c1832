"""Alerts through the supervisor: ALERT_FIRED / ALERT_RESOLVED events to listeners, and restarts
(monit's C{then restart}) once per firing; in memory, and on a real supervised process."""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from salvusctl.alerts import AlertRule, RestartAlerts
from salvusctl.alerts.actions import RecordAction
from salvusctl.alerts.engine import Alert, AlertsService
from salvusctl.alerts.rules import Rule
from salvusctl.alerts.supervisoractions import EventAction, RestartAction, alertEvent
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.interfaces import IAlertAction
from salvusctl.monitor.service import MonitorService
from salvusctl.supervisor import Deploy, EventListener
from salvusctl.supervisor.eventlistener import EventHub
from salvusctl.supervisor.events import isA
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.monitor.fakes import FakeSupervisor, SyncSQLiteStore, inline, tempDir
from tests.supervisor import scratch
from tests.supervisor.test_events import LISTENER, readEvents

FIRED = Alert("rss:web", "rss", "web:0", "warning", "web:0 rss 612.0 MiB (limit 500 MB)", "h1",
              1000.0, value=612.0)
CLEARED = Alert("rss:web", "rss", "web:0", "warning", "web:0 rss 20.0 MiB (limit 500 MB)", "h1",
                1000.0, cleared=True, cleared_at=1030.0, value=20.0)


def headers(payload: str) -> tuple[dict[str, str], str]:
    """What C{supervisor.childutils.eventdata} gives a listener, values unquoted."""
    from supervisor import childutils

    head, body = childutils.eventdata(payload + "\n")
    return {k: unquote(v) for k, v in head.items()}, body


class RecordingSupervisor(FakeSupervisor):
    def __init__(self):
        super().__init__()
        self.restarted = []

    def restartInstance(self, name):
        self.restarted.append(name)
        return super().restartInstance(name)


class RestartActionTests(SynchronousTestCase):
    def test_onceWhileFiringAgainAfterClearing(self):
        """A firing alert restarts its instance once, however often the engine re-sends it;
        after it clears, the next firing restarts again.  Other rules' alerts do nothing."""
        supervisor = RecordingSupervisor()
        supervisor.add("web:0")
        action = RestartAction(supervisor, ["rss:web"])
        verifyObject(IAlertAction, action)
        action.fire(FIRED)
        action.fire(FIRED)
        self.assertEqual(supervisor.restarted, ["web:0"])
        action.fire(CLEARED)
        action.fire(FIRED)
        self.assertEqual(supervisor.restarted, ["web:0", "web:0"])
        action.fire(Alert("cpu:web", "cpu", "web:0", "warning", "hot", "h1", 1.0))
        self.assertEqual(supervisor.restarted, ["web:0", "web:0"])

    def test_engineRestartsOnceOverSamplesOnAClock(self):
        """Driven by the engine on a Clock: the rule holds for its seconds, fires, restarts once;
        later samples over the limit (the alert stays firing) restart nothing more."""
        clock = Clock()
        supervisor = RecordingSupervisor()
        supervisor.add("web:0")
        restart = RestartAction(supervisor, ["rss:web"])
        engine = AlertsService(None, [Rule("rss", 500, seconds=10, deploy="web")], [restart], "h1",
                               clock=clock)
        for _ in range(6):
            snap = {"timestamp": clock.seconds(), "instances": {"web:0": {
                "group": "web", "state": "RUNNING", "sampled_at": clock.seconds(), "rss": 600 << 20}}}
            engine.evaluate(snap)
            clock.advance(5)
        self.assertEqual(supervisor.restarted, ["web:0"])
        self.assertEqual(restart.restarts, [("rss:web", "web:0")])


class AlertEventTests(SynchronousTestCase):
    def test_payloadParsesWithChildutils(self):
        """supervisor.childutils splits header tokens on every colon: values are percent-encoded,
        so a listener gets rule, subject and value back with C{unquote}."""
        name, payload = alertEvent(FIRED)
        self.assertEqual(name, "ALERT_FIRED")
        self.assertEqual(payload.split("\n")[0],
                         "rule:rss%3Aweb kind:rss subject:web%3A0 severity:warning host:h1"
                         " groupname:web processname:0 value:612 fired_at:1000")
        got, body = headers(payload)
        self.assertEqual((got["rule"], got["subject"], got["value"]), ("rss:web", "web:0", "612"))
        self.assertEqual(body, "web:0 rss 612.0 MiB (limit 500 MB)\n")
        name, payload = alertEvent(CLEARED)
        self.assertEqual(name, "ALERT_RESOLVED")
        self.assertEqual(headers(payload)[0]["cleared_at"], "1030")

    def test_hostRuleHasNoProcessNames(self):
        alert = Alert("disk", "disk", "/var", "warning", "disk /var 95% used", "h1", 5.0, value=95.2)
        got, _ = headers(alertEvent(alert)[1])
        self.assertEqual((got["subject"], got["value"]), ("/var", "95.2"))
        self.assertNotIn("groupname", got)

    def test_typesAreUnderAlert(self):
        """Subscribing to ALERT hears both; EVENT hears them too."""
        for name in ("ALERT_FIRED", "ALERT_RESOLVED"):
            self.assertTrue(isA(name, "ALERT"))
            self.assertTrue(isA(name, "EVENT"))
        self.assertFalse(isA("ALERT_FIRED", "PROCESS_STATE"))

    def test_eventActionBuildsNothingWithoutListeners(self):
        class Service:
            reactor = Clock()

        hub = EventHub(Service())
        action = EventAction(hub)
        verifyObject(IAlertAction, action)
        action.fire(FIRED)
        got = []
        hub.bus.subscribe(got.append)
        action.fire(FIRED)
        action.fire(CLEARED)
        self.assertEqual([e.name for e in got], ["ALERT_FIRED", "ALERT_RESOLVED"])
        self.assertEqual(got[0].payload, alertEvent(FIRED)[1])

    def test_listenerMaySubscribeToAlerts(self):
        EventListener("lst", [sys.executable], events=["ALERT_FIRED"]).validate()
        EventListener("lst", [sys.executable], events=["ALERT"]).validate()


class DeclarationTests(SynchronousTestCase):
    def host(self) -> Host:
        from salvusctl.monitor import Monitor

        host = Host(name="h1", var=os.path.join(tempDir(self), "var"))
        host.add(Deploy("web", [sys.executable, "-c", "pass"]))
        host.add(Monitor())
        host.add(AlertRule("rss", 500, deploy="web"))
        host.add(AlertRule("disk", 90))
        return host

    def test_builtWithTheSupervisorsActions(self):
        """A host with a supervisor gives its alerts an event action; RestartAlerts adds a
        restart action for its rules."""
        host = self.host()
        host.add(RestartAlerts(["rss:web"]))
        top = host.build(MemoryReactorClock())
        alerts = top.getServiceNamed("alerts")
        self.assertEqual([type(a) for a in alerts.actions], [RecordAction, EventAction, RestartAction])
        self.assertEqual(alerts.actions[2].rules, frozenset({"rss:web"}))

    def test_badRulesAreRefused(self):
        for rules, message in ((["nope"], "no alert rule named 'nope'"),
                               (["disk"], "is about the host"),
                               ([], "needs a list of alert rule names")):
            host = self.host()
            host.add(RestartAlerts(rules))
            with self.assertRaises(ConfigError) as e:
                host.validate()
            self.assertIn(message, str(e.exception))


HOG = ("import time\n"
       "hog = b'x' * (60 * 1024 * 1024)\n"
       "time.sleep(60)\n")


class RealRestartTests(TestCase):
    timeout = 40

    @inlineCallbacks
    def test_ruleOnARealProcessRestartsItOnceAndTellsAListener(self):
        """A real program over its rss limit for the rule's 10 s (monitor samples on a Clock):
        restarted once (a new pid), not again while the alert stays firing on the new process;
        a listener subscribed to ALERT_FIRED gets the rule, subject and value."""
        out = scratch(self) + "-events"
        svc = SupervisorService(reactor, [
            EventListener("lst", [sys.executable, LISTENER, out], events=["ALERT_FIRED"],
                          startsecs=0.2),
            Deploy("hog", [sys.executable, "-c", HOG], startsecs=0.5, depends_on=["lst"]),
        ], runDir=scratch(self), reapInterval=0.2)
        svc.startService()
        self.addCleanup(svc.stopService)

        def running():
            info = svc.instanceInfo("hog:0")
            return info["state"] == "RUNNING" and info["pid"]

        yield waitFor(running, timeout=15)
        first = svc.instanceInfo("hog:0")["pid"]

        clock = Clock()
        store = SyncSQLiteStore(clock)
        monitor = MonitorService(clock, store, svc, host_name="h1", run=inline, interval=5,
                                 mounts=False)
        yield store.start()
        self.addCleanup(store.close)
        restart = RestartAction(svc, ["rss:hog"])
        alerts = AlertsService(monitor, [Rule("rss", 40, seconds=10, deploy="hog")],
                               [EventAction(svc.eventHub), restart], "h1", clock=clock)
        alerts.startService()
        self.addCleanup(alerts.stopService)
        monitor.startService()  # the first sample, at t=0
        self.addCleanup(monitor.stopService)
        clock.advance(5)
        self.assertEqual(restart.restarts, [])  # held 5 s of 10
        clock.advance(5)
        self.assertEqual(restart.restarts, [("rss:hog", "hog:0")])

        yield waitFor(lambda: running() and running() != first, timeout=15)
        second = svc.instanceInfo("hog:0")["pid"]
        for _ in range(3):  # the new process is over the limit too: still the same firing
            clock.advance(5)
        self.assertEqual(restart.restarts, [("rss:hog", "hog:0")])
        self.assertEqual(svc.instanceInfo("hog:0")["pid"], second)
        self.assertEqual(svc.instanceInfo("hog:0")["state"], "RUNNING")

        yield waitFor(lambda: readEvents(out), timeout=10)
        (event,) = readEvents(out)
        self.assertEqual(event["headers"]["eventname"], "ALERT_FIRED")
        got, body = headers(event["payload"])
        self.assertEqual((got["rule"], got["subject"], got["host"]), ("rss:hog", "hog:0", "h1"))
        self.assertGreater(float(got["value"]), 40)
        self.assertIn("limit 40 MB", body)


class ReloadTests(SynchronousTestCase):
    def test_reloadAddsAndRemovesRestarts(self):
        """A reload that adds RestartAlerts reports it and restarts from then on; one that
        removes it restarts nothing; the store's record action and the event action stay."""
        from types import SimpleNamespace

        from twisted.application.service import MultiService

        from salvusctl.alerts import reload
        from salvusctl.alerts.build import buildAlerts
        from salvusctl.monitor.schema import MONITOR_MIGRATIONS
        from salvusctl.store.testing import MemoryStore
        from tests.alerts.test_reload import _Monitor

        clock = MemoryReactorClock()
        monitor = _Monitor(clock)
        store = MemoryStore(clock)
        store.addMigrations("monitor", MONITOR_MIGRATIONS)
        store.start()
        supervisor = RecordingSupervisor()
        supervisor.add("web:0")

        class Service:
            reactor = clock

        supervisor.eventHub = EventHub(Service())
        context = SimpleNamespace(reactor=clock, store=store, host=SimpleNamespace(name="h1"),
                                  services={"monitor": monitor, "store": MultiService(),
                                            "supervisor": supervisor})
        old = [AlertRule("rss", 100, deploy="web")]
        service = context.services["alerts"] = buildAlerts(context, old, monitor=monitor,
                                                                 supervisor=supervisor)
        service.startService()
        self.addCleanup(service.stopService)
        new = old + [RestartAlerts(["rss:web"])]
        entry = reload.diff(context, old, new)
        self.assertEqual(entry["added"], ["restart"])
        reload.apply(context, new, entry)
        self.assertEqual([type(a) for a in service.actions], [RecordAction, EventAction, RestartAction])
        monitor.sample(**{"web:0": {"rss": 200 << 20}})
        self.assertEqual(supervisor.restarted, ["web:0"])
        reload.apply(context, old, reload.diff(context, new, old))
        self.assertEqual([type(a) for a in service.actions], [RecordAction, EventAction])

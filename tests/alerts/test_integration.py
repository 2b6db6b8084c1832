"""Monitor, alerts and a real SMTP server together: one FATAL instance, one e-mail, one recovery."""

from __future__ import annotations

import email

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.alerts.actions import EmailAction, RecordAction
from salvusctl.alerts.engine import AlertsService
from salvusctl.alerts.rules import Rule
from salvusctl.monitor.service import MonitorService
from tests.alerts.test_actions import _Delivery, _SMTPFactory
from tests.monitor.fakes import FakeSampler, FakeSupervisor, SyncSQLiteStore, inline
from tests.monitor.test_memcache import waitFor


class EndToEndTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_fatalInstanceMailsOnceAndRecovers(self):
        """A FATAL instance sends one e-mail, its recovery one more; a relapse within the repeat
        interval is recorded in the store but not mailed again."""
        box = []
        factory = _SMTPFactory(_Delivery(box))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        store = SyncSQLiteStore(reactor)
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=100)
        monitor = MonitorService(reactor, store, supervisor, host_name="h1", sampler=FakeSampler(),
                                 run=inline, interval=3600)
        mail = EmailAction(reactor, "127.0.0.1", "salvus@h1.test", ["ops@x.test"],
                           port=port.getHost().port)
        alerts = AlertsService(monitor, [Rule("fatal", severity="critical")],
                               [RecordAction(store), mail], "h1", repeat_interval=3600)
        yield store.start()
        self.addCleanup(store.close)
        alerts.startService()
        monitor.startService()
        self.addCleanup(monitor.stopService)
        self.addCleanup(alerts.stopService)

        supervisor.setState("web:0", "FATAL")
        yield monitor.sampleOnce()
        yield waitFor(lambda: len(box) == 1)
        supervisor.setState("web:0", "RUNNING", pid=101)
        yield monitor.sampleOnce()
        yield waitFor(lambda: len(box) == 2)
        supervisor.setState("web:0", "FATAL")
        yield monitor.sampleOnce()
        yield monitor.flush()
        subjects = [email.message_from_bytes(m)["Subject"] for _, m in box]
        self.assertEqual(subjects, ["[salvus] FIRING critical: fatal web:0 on h1",
                                    "[salvus] RESOLVED: fatal web:0 on h1"])
        self.assertEqual(store.rows("SELECT COUNT(*), COUNT(cleared_at) FROM alerts"), [(2, 1)])
        yield waitFor(lambda: all(d.called for d in factory.closed))

"""A notice that is not delivered is visible: the /alerts page, C{salvus.alertNotifications},
C{salvusctl alerts} (exit 1, one line on stderr) and C{/metrics}.  The real alerts service and
outbox on the in-memory store, behind the real admin pages driven in memory."""

from __future__ import annotations

import io
import os
from argparse import Namespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.alerts.actions import RecordAction
from salvusctl.alerts.engine import AlertsService
from salvusctl.alerts.outbox import NotificationOutbox
from salvusctl.alerts.rules import Rule
from salvusctl.cli.main import ExitCode, Output, cmdAlerts
from salvusctl.monitor.schema import MONITOR_MIGRATIONS
from salvusctl.store.testing import MemoryStore
from tests.admin.helpers import Harness, tempDir
from tests.alerts.test_engine import instance, snapshot
from tests.alerts.test_outbox import Flaky


class UndeliveredNoticeTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()  # the harness sets it to 1,700,000,000
        tmp = tempDir(self)
        os.makedirs(tmp, exist_ok=True)
        self.h = Harness(tmp, services={}, clock=self.clock)
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("monitor", MONITOR_MIGRATIONS)
        self.store.start()
        self.hook = Flaky("webhook:hooks.example.org:0123456789ab", failures=10**6)
        self.service = AlertsService(None, [Rule("fatal", severity="critical")],
                                     [RecordAction(self.store), self.hook], "testhost", clock=self.clock)
        self.service.outbox = NotificationOutbox(self.clock, self.store, "testhost",
                                                 self.service.notificationActions)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        now = self.clock.seconds()
        self.service.evaluate(snapshot(now, [instance("web:0", now, state="FATAL")]))
        self.h.services["alerts"] = self.service

    def test_rpcListsTheRetryingNotice(self):
        [notice] = self.h.rpc(self, "salvus.alertNotifications")
        self.assertEqual(notice["state"], "retrying")
        self.assertEqual(notice["action"], self.hook.key)
        self.assertEqual(notice["title"], "[salvus] FIRING critical: fatal web:0 on testhost")
        self.assertIn("receiver down", notice["last_error"])
        self.assertEqual(notice["delivered_at"], 0.0)

    def test_pageShowsIt(self):
        response, body = self.h.request(self, "GET", "/alerts")
        self.assertEqual(response.code, 200)
        page = body.decode()
        self.assertIn("<h2>Notifications</h2>", page)
        self.assertIn("retrying", page)
        self.assertIn("receiver down", page)

    def test_metricsCountFailedAttemptsAndGivenUp(self):
        self.clock.pump([600] * 200)  # past the default day: given up
        response, body = self.h.request(self, "GET", "/metrics")
        values = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        self.assertEqual(values["salvus_alert_notifications_expired_total"], 1.0)
        self.assertGreater(values["salvus_alert_notifications_failed_attempts_total"], 5.0)
        self.assertEqual(values["salvus_alert_notifications_pending"], 0.0)
        self.assertEqual(values["salvus_alert_notifications_delivered_total"], 0.0)

    def test_salvusctlAlertsSaysSoAndExitsOne(self):
        out, err = io.StringIO(), io.StringIO()

        def remote(method, *params):
            return self.h.rpc(self, method, *params)

        code = cmdAlerts(remote, Namespace(all=False), Output(0, out, err))
        self.assertEqual(code, ExitCode.FAILED)
        self.assertIn("notifications not delivered:", out.getvalue())
        self.assertIn("retrying", out.getvalue())
        self.assertEqual(err.getvalue(), "salvusctl: 1 alert notifications not delivered (0 given up)\n")

"""The notification outbox: notices queued in the store, retried with backoff on a Clock, in order
per action, until delivered or expired — and, with a real SMTP server and a real webhook server
that are down when the alert fires, FIRING then RESOLVED arrive once each when they come up."""

from __future__ import annotations

import email
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site

from salvusctl.alerts.actions import EmailAction, RecordAction, WebhookAction
from salvusctl.alerts.engine import Alert, AlertsService
from salvusctl.alerts.outbox import NotificationOutbox
from salvusctl.alerts.rules import Rule
from salvusctl.monitor.schema import MONITOR_MIGRATIONS
from salvusctl.store import makeStore
from salvusctl.store.sqlite import SQLiteStore
from salvusctl.store.testing import MemoryStore
from tests.alerts.test_actions import _Delivery, _SMTPFactory
from tests.alerts.test_engine import instance, snapshot
from tests.helpers import freePort, waitFor
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

FIRING = Alert("fatal", "fatal", "web:0", "critical", "web:0 is FATAL", "h1", 100.0)
RESOLVED = Alert("fatal", "fatal", "web:0", "critical", "web:0 is RUNNING", "h1", 100.0,
                 cleared=True, cleared_at=160.0)


class Flaky:
    """An action that fails its first C{failures} calls, then takes every notice."""

    records = False

    def __init__(self, key: str = "flaky", failures: int = 0):
        self.key = key
        self.failures = failures
        self.calls = 0
        self.got: list[Alert] = []

    def fire(self, alert):
        self.calls += 1
        if self.calls <= self.failures:
            return fail(ConnectionRefusedError("receiver down"))
        self.got.append(alert)
        return succeed(None)


class OutboxUnitTests(SynchronousTestCase):
    """On a Clock and the synchronous in-memory store."""

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("monitor", MONITOR_MIGRATIONS)
        self.store.start()
        self.actions: dict[str, Flaky] = {}

    def outbox(self, **options) -> NotificationOutbox:
        box = NotificationOutbox(self.clock, self.store, "h1", lambda: self.actions, **options)
        box.start()
        self.addCleanup(box.stop)
        return box

    def rows(self):
        return self.successResultOf(self.store.runQuery(
            "SELECT action, title, attempts, delivered_at IS NOT NULL, expired_at IS NOT NULL"
            " FROM alert_notifications ORDER BY id"))

    def test_deliveredAtOnceWhenTheReceiverIsUp(self):
        action = self.actions["a"] = Flaky("a")
        box = self.outbox()
        self.successResultOf(box.enqueue(action, FIRING))
        self.assertEqual(action.got, [FIRING])
        self.assertEqual(self.rows(), [("a", FIRING.title, 1, 1, 0)])
        self.assertEqual(box.stats()["delivered"], 1)

    def test_retriedWithDoublingBackoffUntilDelivered(self):
        """A receiver down for a while gets the notice at the first retry after it is back:
        attempts at 0, 5, 15, 35 s (5 s doubling), none in between."""
        action = self.actions["a"] = Flaky("a", failures=3)
        box = self.outbox(retry_initial=5, retry_max=300)
        self.successResultOf(box.enqueue(action, FIRING))
        attempts_at, seen = [], action.calls
        for _ in range(40):
            self.clock.advance(1)
            if action.calls != seen:
                attempts_at.append(self.clock.seconds())
                seen = action.calls
        self.assertEqual(attempts_at, [5.0, 15.0, 35.0])
        self.assertEqual(action.got, [FIRING])
        self.assertEqual(self.rows(), [("a", FIRING.title, 4, 1, 0)])
        self.assertEqual(box.stats(), {"delivered": 1, "failed_attempts": 3, "expired": 0,
                                       "pending": 0, "retrying": 0})

    def test_resolvedWaitsBehindItsFiring(self):
        """Per action, nothing overtakes a notice still being retried: RESOLVED is never read
        before FIRING; another action is not held up."""
        slow = self.actions["slow"] = Flaky("slow", failures=2)
        fine = self.actions["fine"] = Flaky("fine")
        box = self.outbox(retry_initial=5)
        for alert in (FIRING, RESOLVED):
            self.successResultOf(box.enqueue(slow, alert))
            self.successResultOf(box.enqueue(fine, alert))
        self.assertEqual(fine.got, [FIRING, RESOLVED])
        self.assertEqual(slow.got, [])
        self.assertEqual(slow.calls, 1)  # RESOLVED not even tried
        self.clock.advance(5)
        self.assertEqual(slow.got, [])
        self.clock.advance(10)
        self.assertEqual(slow.got, [FIRING, RESOLVED])
        self.clock.advance(3600)
        self.assertEqual((slow.got, fine.got), ([FIRING, RESOLVED], [FIRING, RESOLVED]))

    def test_expiresAfterItsLifetimeAndSaysSo(self):
        """A receiver that never comes back: the notice is given up after C{expire_after},
        marked expired with the last error, counted; the next notice is tried after it."""
        action = self.actions["a"] = Flaky("a", failures=10**6)
        box = self.outbox(retry_initial=5, retry_max=60, expire_after=600)
        self.successResultOf(box.enqueue(action, FIRING))
        self.clock.pump([30] * 30)
        self.assertEqual(self.rows()[0][3:], (0, 1))
        self.assertEqual(box.stats()["expired"], 1)
        [notice] = self.successResultOf(box.notifications())
        self.assertEqual(notice["state"], "expired")
        self.assertIn("receiver down", notice["last_error"])
        self.assertLess(action.calls, 20)  # backoff, not a busy loop
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_queuedNoticesSurviveARestart(self):
        """What one run queued and could not send, the next run of the host sends."""
        down = self.actions["a"] = Flaky("a", failures=10**6)
        first = self.outbox()
        self.successResultOf(first.enqueue(down, FIRING))
        self.successResultOf(first.stop())
        self.actions["a"] = up = Flaky("a")
        self.outbox()
        self.clock.advance(5)  # its next retry, as the first run had scheduled it
        self.assertEqual(up.got, [FIRING])

    def test_noticeOfARemovedActionExpires(self):
        action = self.actions["a"] = Flaky("a", failures=1)
        box = self.outbox()
        self.successResultOf(box.enqueue(action, FIRING))
        del self.actions["a"]
        self.clock.advance(5)
        [notice] = self.successResultOf(box.notifications())
        self.assertEqual((notice["state"], notice["last_error"]),
                         ("expired", "this action is no longer configured"))

    def test_notificationsListsWhatIsNotDelivered(self):
        action = self.actions["a"] = Flaky("a", failures=1)
        box = self.outbox()
        self.successResultOf(box.enqueue(action, FIRING))
        [notice] = self.successResultOf(box.notifications())
        self.assertEqual((notice["state"], notice["attempts"], notice["action"]), ("retrying", 1, "a"))
        self.assertIn("receiver down", notice["last_error"])
        self.assertEqual(box.stats()["retrying"], 1)
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(box.notifications()), [])
        [done] = self.successResultOf(box.notifications(include_delivered=True))
        self.assertEqual(done["state"], "delivered")


class _Hook(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.got = []

    def render_POST(self, request):
        self.got.append(json.loads(request.content.read()))
        return b"ok"


class RealReceiversTests(TestCase):
    """A real SMTP server (twisted.mail) and a real webhook server, both down at first; the
    outbox in a real SQLite store (and, below, the real PostgreSQL)."""

    timeout = 60

    def makeStore(self):
        return SQLiteStore(reactor, os.path.abspath(self.mktemp()))

    @inlineCallbacks
    def test_firingThenResolvedArriveOnceEachWhenTheReceiversComeUp(self):
        """Both receivers are down when the alert fires and when it clears; each is started
        later, and at the next retry (driven by a Clock) each gets FIRING then RESOLVED, once."""
        store = self.makeStore()
        store.addMigrations("monitor", MONITOR_MIGRATIONS)
        yield store.start()
        self.addCleanup(store.close)
        smtp_port, hook_port = freePort(), freePort()
        mail = EmailAction(reactor, "127.0.0.1", "salvus@h1.test", ["ops@x.test"], port=smtp_port,
                           timeout=10)
        hook = WebhookAction(Agent(reactor), f"http://127.0.0.1:{hook_port}/hook")
        clock = Clock()
        service = AlertsService(None, [Rule("fatal", severity="critical")],
                                [RecordAction(store), mail, hook], "h1", repeat_interval=0, clock=clock)
        outbox = service.outbox = NotificationOutbox(clock, store, "h1", service.notificationActions,
                                                     retry_initial=5, retry_max=60)
        service.startService()
        self.addCleanup(service.stopService)

        def idle():
            return outbox._pumping is None

        yield service.evaluate(snapshot(100.0, [instance("web:0", 100.0, state="FATAL")]))
        yield waitFor(lambda: idle() and outbox.stats()["retrying"] == 2)
        yield service.evaluate(snapshot(160.0, [instance("web:0", 160.0, state="RUNNING")]))
        yield waitFor(lambda: idle() and outbox.stats()["pending"] == 4)
        self.assertEqual(outbox.stats()["failed_attempts"], 2)  # RESOLVED waits, untried

        box = []
        smtp = reactor.listenTCP(smtp_port, _SMTPFactory(_Delivery(box)), interface="127.0.0.1")
        self.addCleanup(smtp.stopListening)
        resource = _Hook()
        web = reactor.listenTCP(hook_port, Site(resource), interface="127.0.0.1")
        self.addCleanup(web.stopListening)

        clock.advance(5)
        yield waitFor(lambda: idle() and len(box) == 2 and len(resource.got) == 2)
        for _ in range(5):
            clock.advance(600)
            yield waitFor(idle)
        subjects = [email.message_from_bytes(m)["Subject"] for _, m in box]
        self.assertEqual(subjects, ["[salvus] FIRING critical: fatal web:0 on h1",
                                    "[salvus] RESOLVED: fatal web:0 on h1"])
        self.assertEqual([(h["title"], h["cleared"]) for h in resource.got],
                         [("[salvus] FIRING critical: fatal web:0 on h1", False),
                          ("[salvus] RESOLVED: fatal web:0 on h1", True)])
        self.assertEqual(outbox.stats(), {"delivered": 4, "failed_attempts": 2, "expired": 0,
                                          "pending": 0, "retrying": 0})
        notices = yield outbox.notifications(include_delivered=True)
        self.assertEqual(sorted((n["title"].split(":")[0], n["attempts"], n["state"]) for n in notices),
                         [("[salvus] FIRING critical", 2, "delivered")] * 2
                         + [("[salvus] RESOLVED", 1, "delivered")] * 2)
        yield service.stopService()


class PostgresRealReceiversTests(RealReceiversTests):
    skip = POSTGRES_SKIP

    def makeStore(self):
        db = TempDatabase().create()
        self.addCleanup(db.drop)
        return makeStore(db.url, reactor)

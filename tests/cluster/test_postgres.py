"""Cluster members on a real PostgreSQL: two or three hosts in one process, each with its own
store and name, as separate machines would be — heartbeats, down detection, LISTEN/NOTIFY
wake-ups, messages once and in order, across a receiver's restart and a dead database.

Each test works in its own throw-away database (C{tests.store.pgtemp}); outages are made with a
TCP proxy between one member's store and the server, never by touching the shared server.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.cluster.service import ClusterService
from salvusctl.store.postgres import PostgresStore
from salvusctl.store.url import parseStoreURL
from tests.helpers import freePort
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase, waitUntil
from tests.store.test_postgres_outage import FAST, Proxy

HEARTBEAT = 0.2
MISSED = 2


class ClusterOnPostgresTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 60

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.got: dict[str, list] = {}

    def member(self, name: str, url: str | None = None, **options) -> ClusterService:
        store = PostgresStore(reactor, parseStoreURL(url or self.db.url), pool_size=2,
                              reconnect_delays=FAST, close_timeout=5)
        options.setdefault("heartbeat", HEARTBEAT)
        options.setdefault("missed", MISSED)
        service = ClusterService(reactor, store, name, address="127.0.0.1", store_ready=store.start,
                                 **options)
        got = self.got.setdefault(name, [])
        service.addHandler("note", lambda m: got.append((m.sender, m.body)) or len(got))

        @inlineCallbacks
        def stop():
            if service.running:
                yield service.stopService()
            yield store.close()

        self.addCleanup(stop)
        service.store_close = stop
        service.startService()
        return service

    def states(self, member) -> dict[str, str]:
        return {name: peer.state for name, peer in member.membership.peers.items()}

    @inlineCallbacks
    def test_membershipAndDownDetection(self):
        """Three hosts see each other up; one that stops beating is down for the others within
        C{missed} heartbeats; one that stops cleanly is left."""
        a, b, c = self.member("a"), self.member("b"), self.member("c")
        yield gatherResults([a.joined, b.joined, c.joined])
        everyone = {"a": "up", "b": "up", "c": "up"}
        ok = yield waitUntil(reactor, lambda: all(self.states(m) == everyone for m in (a, b, c)))
        self.assertTrue(ok, [self.states(m) for m in (a, b, c)])
        self.assertTrue(a.shared)
        c._loop.stop()  # c hangs: no more heartbeats
        ok = yield waitUntil(reactor, lambda: self.states(a).get("c") == self.states(b).get("c") == "down")
        self.assertTrue(ok)
        yield b.stopService()
        ok = yield waitUntil(reactor, lambda: self.states(a).get("b") == "left")
        self.assertTrue(ok)
        rows = self.db.query("SELECT name, state FROM cluster_hosts ORDER BY name")
        self.assertEqual(rows, [("a", "up"), ("b", "left"), ("c", "up")])

    @inlineCallbacks
    def test_messagesOnceAndInOrder(self):
        """Forty messages from two senders, sent in one burst: each handled once by the
        receiver, each sender's in the order it sent them; a broadcast reaches all three."""
        a, b, c = self.member("a"), self.member("b"), self.member("c")
        yield gatherResults([a.joined, b.joined, c.joined])
        yield gatherResults([a.membership.refresh(), c.membership.refresh()])
        sends = []
        for i in range(20):
            sends.append(a.send("b", "note", i))
            sends.append(c.send("b", "note", 100 + i))
        sends.append(a.send("*", "note", "all"))
        yield gatherResults(sends)
        ok = yield waitUntil(reactor, lambda: len(self.got["b"]) == 41 and self.got["a"] and self.got["c"])
        self.assertTrue(ok, self.got)
        fromA = [body for sender, body in self.got["b"] if sender == "a"]
        fromC = [body for sender, body in self.got["b"] if sender == "c"]
        self.assertEqual(fromA, list(range(20)) + ["all"])
        self.assertEqual(fromC, [100 + i for i in range(20)])
        self.assertEqual(self.got["a"], [("a", "all")])
        self.assertEqual(self.got["c"], [("a", "all")])
        yield b.mailbox.poll()  # looking again handles nothing twice
        self.assertEqual(len(self.got["b"]), 41)
        rows = self.db.query("SELECT host, state, COUNT(*) FROM cluster_deliveries GROUP BY host, state"
                             " ORDER BY host")
        self.assertEqual(rows, [("a", "acked", 1), ("b", "acked", 41), ("c", "acked", 1)])

    @inlineCallbacks
    def test_notifyWakesTheReceiverBeforeItsHeartbeat(self):
        """With a long heartbeat, a message is still handled at once: NOTIFY wakes the receiver."""
        a = self.member("a", heartbeat=30)
        b = self.member("b", heartbeat=30)
        yield gatherResults([a.joined, b.joined])
        yield a.membership.refresh()
        started = reactor.seconds()
        rtt = yield a.ping("b", timeout=10)
        self.assertLess(rtt, 5)
        self.assertLess(reactor.seconds() - started, 5)

    @inlineCallbacks
    def test_deliveredAfterTheReceiverRestarts(self):
        """Messages sent while the receiver is stopped are handled, in order, by its next run."""
        a, b = self.member("a"), self.member("b")
        yield gatherResults([a.joined, b.joined])
        yield a.membership.refresh()
        yield b.store_close()
        for i in range(5):
            yield a.send("b", "note", i)
        self.got["b"].clear()
        again = self.member("b")
        yield again.joined
        ok = yield waitUntil(reactor, lambda: len(self.got["b"]) == 5)
        self.assertTrue(ok, self.got["b"])
        self.assertEqual([body for _, body in self.got["b"]], [0, 1, 2, 3, 4])

    @inlineCallbacks
    def test_deadDatabaseLosesNoQueuedMessage(self):
        """The sender's database connection dies: its messages wait in the store's queue and are
        all delivered, in order, once it is back.  Then the receiver's dies: it reads its
        mailbox again when it is back."""
        proxy = Proxy(self.db.host, self.db.port, freePort())
        proxy.up()
        self.addCleanup(lambda: proxy.down() if proxy.port is not None else None)
        a = self.member("a", url=self.db.urlOnPort(proxy.listen_port))
        b = self.member("b")
        yield gatherResults([a.joined, b.joined])
        yield a.membership.refresh()
        yield proxy.down()
        outage = yield waitUntil(reactor, lambda: a.store.stats()["outage"])
        self.assertTrue(outage)
        sent: list = []
        sends = [a.send("b", "note", i).addCallback(lambda r: sent.append(r) or r) for i in range(10)]
        self.assertEqual(sent, [])
        proxy.up()
        yield gatherResults(sends)
        ok = yield waitUntil(reactor, lambda: len(self.got["b"]) == 10)
        self.assertTrue(ok, self.got["b"])
        self.assertEqual([body for _, body in self.got["b"]], list(range(10)))
        # Now the receiver is the one cut off.
        self.got["a"].clear()
        yield proxy.down()
        outage = yield waitUntil(reactor, lambda: a.store.stats()["outage"])
        self.assertTrue(outage)
        for i in range(3):
            yield b.send("a", "note", i)
        proxy.up()
        ok = yield waitUntil(reactor, lambda: len(self.got["a"]) == 3)
        self.assertTrue(ok, self.got["a"])
        self.assertEqual([body for _, body in self.got["a"]], [0, 1, 2])
        self.flushLoggedErrors()

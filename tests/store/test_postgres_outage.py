"""The PostgreSQL store through server restarts and outages: no write lost, reads fail fast.

Outages are made two ways without touching the shared server's process: C{pg_terminate_backend}
on the store's own backends (what a restart does to clients), and a TCP proxy between the store
and the server that is stopped and restarted (the server unreachable, then back).
"""

from __future__ import annotations

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from salvusctl.store.errors import QueueFull, StoreClosed, StoreUnavailable
from salvusctl.store.migrations import Migration
from salvusctl.store.postgres import PostgresStore, backoff
from salvusctl.store.url import parseStoreURL
from tests.helpers import freePort
from tests.store.pgcluster import CLUSTER_SKIP, PrivateCluster
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase, waitUntil

WRITES = Migration(1, "writes", "CREATE TABLE writes (seq BIGSERIAL, k INTEGER NOT NULL)")


def firstOccurrences(values):
    seen: set = set()
    return [v for v in values if not (v in seen or seen.add(v))]


FAST = backoff(0.05, 2.0, 0.2)


class _TrackingProxyServer(portforward.ProxyServer):
    def connectionMade(self):
        self.factory.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.live.discard(self)
        super().connectionLost(reason)


class Proxy:
    """A TCP forwarder to the PostgreSQL server that can be cut and brought back on one port."""

    def __init__(self, host: str, port: int, listen_port: int):
        self.factory = portforward.ProxyFactory(host, port)
        self.factory.protocol = _TrackingProxyServer
        self.factory.live = set()
        self.listen_port = listen_port
        self.port = None

    def up(self) -> None:
        self.port = _reactor.listenTCP(self.listen_port, self.factory, interface="127.0.0.1")

    def down(self) -> Deferred:
        """Stop listening and cut every forwarded connection (the server 'goes away')."""
        for proto in list(self.factory.live):
            proto.transport.abortConnection()
            if proto.peer is not None:
                proto.peer.transport.abortConnection()
        d = self.port.stopListening() if self.port is not None else None
        self.port = None
        return d


class LogCapture:
    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def formats(self) -> list[str]:
        return [e.get("log_format") or "" for e in self.events]


class PostgresOutageTests(TestCase):
    """What a host sees while its PostgreSQL restarts or cannot be reached."""

    skip = POSTGRES_SKIP
    timeout = 60

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)

    def newStore(self, url: str | None = None, **kw) -> PostgresStore:
        kw.setdefault("reconnect_delays", FAST)
        store = PostgresStore(_reactor, parseStoreURL(url or self.db.url), **kw)
        store.addMigrations("test", [WRITES])
        self.addCleanup(store.close)
        return store

    def proxy(self) -> Proxy:
        proxy = Proxy(self.db.host, self.db.port, freePort())
        self.addCleanup(lambda: proxy.down() if proxy.port is not None else None)
        return proxy

    @inlineCallbacks
    def test_terminated_backends_under_a_write_stream_lose_no_write(self):
        """pg_terminate_backend on every pool connection, three times, while writes stream in:
        every write still lands (replayed on the reconnected pool)."""
        store = self.newStore(pool_size=4)
        yield store.start()
        pending = []
        ticks, per_tick = 30, 20
        killed = 0
        k = 0
        for tick in range(ticks):
            for _ in range(per_tick):
                if k % 3 == 0:

                    @inlineCallbacks
                    def two(cursor, k=k):
                        yield cursor.execute("INSERT INTO writes (k) VALUES (?)", (k,))
                        yield cursor.execute("INSERT INTO writes (k) VALUES (?)", (-k - 1,))

                    pending.append(store.runInteraction(two))
                else:
                    pending.append(store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)))
                k += 1
            if tick in (5, 12, 20):
                killed += self.db.terminate()
            yield deferLater(_reactor, 0.01, lambda: None)
        self.assertGreaterEqual(killed, 3)
        results = yield DeferredList(pending, consumeErrors=True)
        failures = [r for ok, r in results if not ok]
        self.assertEqual(failures, [])
        rows = self.db.query("SELECT k FROM writes WHERE k >= 0 ORDER BY seq")
        # All there, and applied in the order they were made (a write whose commit was
        # acknowledged by a dying connection may appear twice: delivery is at-least-once).
        self.assertEqual(firstOccurrences([r[0] for r in rows]), list(range(k)))
        negatives = self.db.query("SELECT count(DISTINCT k) FROM writes WHERE k < 0")
        self.assertEqual(negatives[0][0], len(range(0, k, 3)))
        self.assertGreaterEqual(store.stats()["reconnects"], 3)
        self.assertGreater(store.stats()["replayed"], 0)  # writes really died in flight
        # txpostgres would log an "Unhandled Error" for each connection the server ends; the
        # store reports those as connection loss instead, so there is nothing to flush.
        self.assertEqual(self.flushLoggedErrors(), [])
        allUp = yield waitUntil(_reactor, lambda: store.stats()["up"] == 4)
        self.assertTrue(allUp)

    @inlineCallbacks
    def test_unreachable_at_start_queues_writes_and_flushes_them_when_back(self):
        """A host that starts before its database: writes wait, reads fail fast, and once the
        server answers the schema is migrated and the queued writes land in order."""
        proxy = self.proxy()
        store = self.newStore(self.db.urlOnPort(proxy.listen_port))
        logs = LogCapture(self)
        ready = store.start()
        writes = [store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)) for k in range(20)]
        outage = yield waitUntil(_reactor, lambda: store.stats()["outage"])
        self.assertTrue(outage)
        self.assertFalse(ready.called)
        self.assertEqual(store.stats()["queued_writes"], 20)
        yield self.assertFailure(store.runQuery("SELECT 1"), StoreUnavailable)
        self.assertTrue(any("unreachable" in f for f in logs.formats()))

        proxy.up()
        yield ready
        yield gatherResults(writes)
        rows = yield store.runQuery("SELECT k FROM writes ORDER BY seq")
        self.assertEqual([r[0] for r in rows], list(range(20)))
        self.assertFalse(store.stats()["outage"])

    @inlineCallbacks
    def test_full_queue_drops_the_oldest_write_with_a_log_line(self):
        """The outage queue is bounded: the oldest write is dropped, says so, and fails."""
        store = self.newStore(self.db.urlOnPort(freePort()), queue_limit=3, close_timeout=0.1)
        logs = LogCapture(self)
        ready = store.start()
        self.assertFailure(ready, StoreClosed)
        outage = yield waitUntil(_reactor, lambda: store.stats()["outage"])
        self.assertTrue(outage)
        writes = [store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)) for k in range(5)]
        yield self.assertFailure(writes[0], QueueFull)
        yield self.assertFailure(writes[1], QueueFull)
        self.assertEqual([w.called for w in writes[2:]], [False] * 3)
        self.assertEqual(store.stats()["queued_writes"], 3)
        dropped = [f for f in logs.formats() if "dropped the oldest" in f]
        self.assertEqual(len(dropped), 1)  # one line, not one per dropped write
        yield store.close()
        for w in writes[2:]:
            yield self.assertFailure(w, StoreClosed)
        yield ready
        self.assertTrue(any("not written" in f for f in logs.formats()))

    @inlineCallbacks
    def test_server_gone_and_back_replays_writes_and_relistens(self):
        """Mid-run outage: reads fail at once, writes queue, and after the server returns the
        writes land and LISTEN works again without the caller re-subscribing."""
        proxy = self.proxy()
        proxy.up()
        store = self.newStore(self.db.urlOnPort(proxy.listen_port), pool_size=2)
        yield store.start()
        heard = []
        waiters: list[Deferred] = []

        def onEvent(payload):
            heard.append(payload)
            while waiters:
                waiters.pop().callback(payload)

        yield store.listen("salvus_events", onEvent)
        self.assertEqual(store.stats()["listening"], ["salvus_events"])
        yield store.runOperation("INSERT INTO writes (k) VALUES (?)", (0,))

        yield proxy.down()
        # The pool notices on its next use (or when the socket closes) and goes into outage.
        first = store.runOperation("INSERT INTO writes (k) VALUES (?)", (1,))
        outage = yield waitUntil(_reactor, lambda: store.stats()["outage"])
        self.assertTrue(outage)
        yield self.assertFailure(store.runQuery("SELECT 1"), StoreUnavailable)
        later = [store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)) for k in (2, 3)]

        proxy.up()
        yield gatherResults([first] + later)
        rows = yield store.runQuery("SELECT k FROM writes ORDER BY seq")
        self.assertEqual([r[0] for r in rows], [0, 1, 2, 3])

        # The listener connection was cut too; it must have re-LISTENed by itself.
        listening = yield waitUntil(_reactor, lambda: "salvus_events" in store.stats()["listening"])
        self.assertTrue(listening)
        waiter: Deferred = Deferred()
        waiters.append(waiter)
        yield store.notify("salvus_events", "after")
        payload = yield waiter
        self.assertEqual(payload, "after")

    @inlineCallbacks
    def blockedRead(self, store):
        """Start a read that waits on a lock this test holds; fire with (read, its pid, release)."""
        import psycopg2

        blocker = psycopg2.connect(self.db.url)
        blocker.autocommit = True
        self.addCleanup(blocker.close)
        blocker.cursor().execute("SELECT pg_advisory_lock(42)")
        read = store.runQuery("SELECT 7 FROM (SELECT pg_advisory_xact_lock_shared(42)) AS held")
        waiting: list = []

        def readerWaits():
            waiting[:] = self.db.query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'SELECT 7 FROM%' AND wait_event_type = 'Lock'"
            )
            return bool(waiting)

        found = yield waitUntil(_reactor, readerWaits)
        self.assertTrue(found)
        return read, waiting[0][0], lambda: blocker.cursor().execute("SELECT pg_advisory_unlock(42)")

    @inlineCallbacks
    def test_read_whose_connection_dies_is_retried_on_another(self):
        """A read in flight on a connection the server ends is run again on a live one."""
        store = self.newStore(pool_size=2)
        yield store.start()
        read, pid, release = yield self.blockedRead(store)
        self.db.query("SELECT pg_terminate_backend(%s)", (pid,))
        release()
        rows = yield read
        self.assertEqual(rows, [(7,)])
        self.assertEqual(store.stats()["replayed"], 1)

    @inlineCallbacks
    def test_read_in_flight_when_every_connection_dies_fails_fast(self):
        """With no live connection left a read is not held back: it fails with a clear error."""
        proxy = self.proxy()
        proxy.up()
        store = self.newStore(self.db.urlOnPort(proxy.listen_port), pool_size=2)
        yield store.start()
        # start() fires once migrated; the rest of the pool may still be connecting.
        yield waitUntil(_reactor, lambda: store.stats()["up"] == 2)
        read, pid, release = yield self.blockedRead(store)
        yield proxy.down()  # every connection cut, and no reconnecting until it is back
        release()
        failure = yield self.assertFailure(read, StoreUnavailable)
        self.assertIn("unreachable", str(failure))
        proxy.up()
        back = yield waitUntil(_reactor, lambda: not store.stats()["outage"])
        self.assertTrue(back)
        again = yield store.runQuery("SELECT 8")
        self.assertEqual(again, [(8,)])

    @inlineCallbacks
    def test_close_during_an_outage_waits_for_the_server_within_its_bound(self):
        """Ctrl-C while the server restarts: close() waits (bounded) and the queue still lands."""
        proxy = self.proxy()
        proxy.up()
        store = self.newStore(self.db.urlOnPort(proxy.listen_port), close_timeout=20)
        yield store.start()
        yield proxy.down()
        writes = [store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)) for k in range(10)]
        outage = yield waitUntil(_reactor, lambda: store.stats()["outage"])
        self.assertTrue(outage)
        closing = store.close()
        yield self.assertFailure(store.runOperation("SELECT 1"), StoreClosed)
        self.assertFalse(closing.called)
        proxy.up()
        yield closing
        yield gatherResults(writes)
        rows = self.db.query("SELECT k FROM writes ORDER BY seq")
        self.assertEqual([r[0] for r in rows], list(range(10)))
        left = yield waitUntil(_reactor, lambda: not self.db.backends())
        self.assertTrue(left)


class PostgresServerRestartTests(TestCase):
    """A real server restart (a private cluster, never the shared server) under a write stream."""

    skip = CLUSTER_SKIP
    timeout = 90

    @inlineCallbacks
    def setUp(self):
        self.cluster = PrivateCluster(_reactor)
        self.addCleanup(self.cluster.destroy)
        yield self.cluster.start()

    @inlineCallbacks
    def test_server_restart_under_writes_loses_none_and_relistens(self):
        """pg_ctl restart while writes stream in: every write lands, in order, and LISTEN
        is back without the listener doing anything."""
        store = PostgresStore(_reactor, parseStoreURL(self.cluster.url), reconnect_delays=FAST)
        store.addMigrations("test", [WRITES])
        self.addCleanup(store.close)
        yield store.start()
        heard: list[str] = []
        yield store.listen("salvus_restart", heard.append)

        writes = []
        restarted = self.cluster.restart()
        k = 0
        duringOutage = 0
        while not restarted.called or k < 50:
            writes.append(store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)))
            duringOutage += store.stats()["outage"]
            k += 1
            yield deferLater(_reactor, 0.005, lambda: None)
        yield restarted
        for _ in range(20):
            writes.append(store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)))
            k += 1
        results = yield DeferredList(writes, consumeErrors=True)
        self.assertEqual([r for ok, r in results if not ok], [])
        rows = yield store.runQuery("SELECT k FROM writes ORDER BY seq")
        self.assertEqual(firstOccurrences([r[0] for r in rows]), list(range(k)))
        self.assertGreater(store.stats()["reconnects"], 0)
        self.assertGreater(duringOutage, 0)  # some writes were made while it was down

        listening = yield waitUntil(_reactor, lambda: store.stats()["listening"] == ["salvus_restart"])
        self.assertTrue(listening)
        yield store.notify("salvus_restart", "after")
        arrived = yield waitUntil(_reactor, lambda: heard == ["after"])
        self.assertTrue(arrived)

    @inlineCallbacks
    def test_crash_restart_under_mixed_load(self):
        """pg_ctl restart -m immediate (a crash: no goodbye to clients, WAL recovery on the way
        up) under writes, interactions and reads: no write lost, reads either answer or fail
        with StoreUnavailable, nothing else."""
        store = PostgresStore(_reactor, parseStoreURL(self.cluster.url), reconnect_delays=FAST)
        store.addMigrations("test", [WRITES])
        self.addCleanup(store.close)
        yield store.start()

        @inlineCallbacks
        def pair(cursor, k):
            yield cursor.execute("INSERT INTO writes (k) VALUES (?)", (k,))
            yield cursor.execute("INSERT INTO writes (k) VALUES (?)", (-k - 1,))

        writes, reads = [], []
        restarted = self.cluster.restart("immediate")
        k = 0
        while not restarted.called or k < 60:
            if k % 4 == 0:
                writes.append(store.runInteraction(pair, k))
            else:
                writes.append(store.runOperation("INSERT INTO writes (k) VALUES (?)", (k,)))
            reads.append(store.runQuery("SELECT count(*) FROM writes"))
            k += 1
            yield deferLater(_reactor, 0.005, lambda: None)
        yield restarted
        results = yield DeferredList(writes, consumeErrors=True)
        self.assertEqual([r for ok, r in results if not ok], [])
        answered = yield DeferredList(reads, consumeErrors=True)
        for ok, result in answered:
            if not ok:
                result.trap(StoreUnavailable)
        self.assertGreater(sum(not ok for ok, _ in answered), 0)  # the outage was real
        rows = yield store.runQuery("SELECT k FROM writes WHERE k >= 0 ORDER BY seq")
        self.assertEqual(firstOccurrences([r[0] for r in rows]), list(range(k)))
        pairs = yield store.runQuery("SELECT count(DISTINCT k) FROM writes WHERE k < 0")
        self.assertEqual(pairs[0][0], len(range(0, k, 4)))
        self.assertGreater(store.stats()["reconnects"], 0)

    @inlineCallbacks
    def test_close_while_the_server_crashes_under_a_query(self):
        """Ctrl-C while the database crashes with a query in flight: the query fails, close()
        finishes within its bound, and nothing is logged as an unhandled error."""
        store = PostgresStore(
            _reactor, parseStoreURL(self.cluster.url), reconnect_delays=FAST, close_timeout=0.5
        )
        self.addCleanup(store.close)
        yield store.start()
        slow = store.runQuery("SELECT pg_sleep(30)")
        restarted = self.cluster.restart("immediate")
        self.addCleanup(lambda: restarted)
        outage = yield waitUntil(_reactor, lambda: store.stats()["outage"])
        self.assertTrue(outage)
        yield store.close()
        failure = yield self.assertFailure(slow, Exception)
        self.assertIsInstance(failure, (StoreUnavailable, StoreClosed))
        self.assertEqual(self.flushLoggedErrors(), [])

"""The PostgreSQL store's queue on a Clock, with scripted connections: ordering, replay after a
connection dies, the outage bound, shared transactions and close — step by step, no server."""

from __future__ import annotations

import psycopg2
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.store.errors import QueueFull, StoreClosed, StoreUnavailable
from salvusctl.store.pgconnection import backoff
from salvusctl.store.postgres import PostgresStore
from salvusctl.store.url import parseStoreURL


class Raw:
    """Stands for the psycopg2 connection: open, closed, or with its socket gone."""

    closed = 0

    def fileno(self):
        return -1 if self.closed else 5


class RecordingCursor:
    def __init__(self):
        self.statements = []

    rowcount = 1

    def execute(self, sql, params=None):
        self.statements.append((sql, params))
        return succeed(self)

    def fetchall(self):
        return []  # no migration applied yet


class Call:
    def __init__(self, kind, payload):
        self.kind = kind
        self.payload = payload
        self.d: Deferred = Deferred()
        self.cursor = RecordingCursor()

    def finish(self, result=None):
        if self.kind == "interaction":
            d = maybeDeferred(self.payload, self.cursor)
            d.chainDeferred(self.d)
        else:
            self.d.callback(result)

    def fail(self, exc):
        self.d.errback(Failure(exc))


class ScriptedConnection:
    """A txpostgres Connection whose every step the test performs by hand."""

    def __init__(self, reactor, cooperator, detector):
        self.detector = detector
        self._connection = None
        self.calls: list[Call] = []
        self.connecting: Deferred | None = None

    def connect(self, **kw):
        self.detector.setReconnectable(self, **kw)
        self.connecting = Deferred()
        return self.connecting

    def up(self):
        self._connection = Raw()
        d, self.connecting = self.connecting, None
        d.callback(self)

    def close(self):
        if self._connection is not None:
            self._connection.closed = 1

    def die(self):
        """The server ends the connection: every call it holds fails, the detector notices."""
        self._connection.closed = 2
        pending = [c for c in self.calls if not c.d.called]
        if not pending:
            self.detector.checkForDeadConnection(Failure(psycopg2.OperationalError("gone")))
        for call in pending:
            call.fail(psycopg2.OperationalError("server closed the connection unexpectedly"))

    def _do(self, kind, payload):
        call = Call(kind, payload)

        def start():
            self.calls.append(call)
            return call.d

        return self.detector.callChecking(start)

    def runQuery(self, sql, params=None):
        return self._do("query", (sql, params))

    def runOperation(self, sql, params=None):
        return self._do("operation", (sql, params))

    def runInteraction(self, fn, *args, **kwargs):
        return self._do("interaction", lambda cursor: fn(cursor, *args, **kwargs))

    def addNotifyObserver(self, observer):
        pass

    def pending(self):
        return [c for c in self.calls if not c.d.called]


class QueueTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.conns: list[ScriptedConnection] = []
        self.logs: list[dict] = []
        globalLogPublisher.addObserver(self.logs.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logs.append)

    def makeStore(self, pool_size=1, **kw):
        kw.setdefault("reconnect_delays", backoff(1.0, 2.0, 4.0))
        store = PostgresStore(self.clock, parseStoreURL("postgresql://u@h/db"), pool_size=pool_size, **kw)

        def factory(reactor, cooperator, detector):
            conn = ScriptedConnection(reactor, cooperator, detector)
            self.conns.append(conn)
            return conn

        store.connectionFactory = factory
        return store

    def startedStore(self, pool_size=1, **kw):
        store = self.makeStore(pool_size, **kw)
        ready = store.start()
        for conn in self.conns:
            conn.up()
        migration = self.conns[0].pending()
        self.assertEqual([c.kind for c in migration], ["interaction"])
        migration[0].finish()
        self.successResultOf(ready)
        self.addCleanup(self.shut, store)
        return store

    def shut(self, store):
        d = store.close()
        self.clock.advance(store.close_timeout)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def messages(self, fragment):
        return [e for e in self.logs if fragment in (e.get("log_format") or "")]

    def test_migrations_lock_before_anything(self):
        """The first statement of the migration transaction takes the advisory lock."""
        self.startedStore()
        statements = self.conns[0].calls[0].cursor.statements
        self.assertIn("pg_advisory_xact_lock", statements[0][0])
        self.assertIn("CREATE TABLE IF NOT EXISTS salvus_migrations", statements[1][0])

    def test_writes_in_order_on_one_connection_reads_on_another(self):
        """Writes keep their order by sharing one connection; reads do not wait behind them."""
        store = self.startedStore(pool_size=2)
        first = store.runInteraction(lambda c: "a")
        second = store.runInteraction(lambda c: "b")
        read = store.runQuery("SELECT 1")
        writer = [c for c in self.conns if c.pending() and c.pending()[0].kind == "interaction"][0]
        reader = [c for c in self.conns if c is not writer][0]
        self.assertEqual([c.kind for c in writer.pending()], ["interaction", "interaction"])
        self.assertEqual([c.payload for c in reader.pending()], [("SELECT 1", None)])
        for call in writer.pending():
            call.finish()
        reader.pending()[0].finish([(1,)])
        self.assertEqual(self.successResultOf(first), "a")
        self.assertEqual(self.successResultOf(second), "b")
        self.assertEqual(self.successResultOf(read), [(1,)])

    def test_writes_held_by_a_dying_connection_are_replayed_in_order(self):
        """Nothing is lost and nothing overtakes: the dead connection's writes go back in their
        places and run again, in order, once it reconnects."""
        store = self.startedStore()
        writes = [store.runInteraction(lambda c, i=i: i) for i in range(3)]
        conn = self.conns[0]
        self.assertEqual(len(conn.pending()), 3)
        conn.die()
        self.assertTrue(store.stats()["outage"])
        self.assertEqual(store.stats()["queued_writes"], 3)
        self.assertEqual(len(self.messages("unreachable")), 1)
        self.failureResultOf(store.runQuery("SELECT 1"), StoreUnavailable)
        later = store.runInteraction(lambda c: 3)

        self.clock.advance(0)  # the first reconnection attempt
        conn.up()
        replayed = conn.pending()
        self.assertEqual(len(replayed), 4)
        for call in replayed:
            call.finish()
        self.assertEqual([self.successResultOf(d) for d in writes + [later]], [0, 1, 2, 3])
        self.assertEqual(store.stats()["replayed"], 3)
        self.assertEqual(store.stats()["reconnects"], 1)
        self.assertEqual(len(self.messages("reachable again")), 1)

    def test_full_outage_queue_drops_the_oldest(self):
        """Bounded memory while the database is away: the oldest write goes, with one log line."""
        store = self.startedStore(queue_limit=2)
        self.conns[0].die()
        writes = [store.runInteraction(lambda c, i=i: i) for i in range(4)]
        self.failureResultOf(writes[0], QueueFull)
        self.failureResultOf(writes[1], QueueFull)
        self.assertNoResult(writes[2])
        self.assertEqual(len(self.messages("dropped the oldest")), 1)
        self.clock.advance(0)
        self.conns[0].up()
        for call in self.conns[0].pending():
            call.finish()
        self.assertEqual([self.successResultOf(w) for w in writes[2:]], [2, 3])

    def test_backlog_of_operations_shares_a_transaction(self):
        """A replayed backlog of single statements commits together (one flush, not one each)."""
        store = self.startedStore()
        conn = self.conns[0]
        conn.die()
        ops = [store.runOperation("INSERT INTO t VALUES (?)", (i,)) for i in range(5)]
        self.clock.advance(0)
        conn.up()
        [batch] = conn.pending()
        self.assertEqual(batch.kind, "interaction")
        batch.finish()
        self.assertEqual(batch.cursor.statements, [("INSERT INTO t VALUES (%s)", (i,)) for i in range(5)])
        for op in ops:
            self.assertIsNone(self.successResultOf(op))

    def test_a_failing_shared_transaction_is_retried_one_by_one(self):
        """Only the faulty statement fails; the others still commit, in order."""
        store = self.startedStore()
        conn = self.conns[0]
        conn.die()
        ops = [store.runOperation("INSERT INTO t VALUES (?)", (i,)) for i in range(4)]
        self.clock.advance(0)
        conn.up()
        [batch] = conn.pending()
        batch.fail(psycopg2.ProgrammingError("relation does not exist"))
        singles = conn.pending()
        self.assertEqual([c.kind for c in singles], ["operation"] * 4)
        self.assertEqual([c.payload[1] for c in singles], [(0,), (1,), (2,), (3,)])
        for i, call in enumerate(singles):
            if i == 2:
                call.fail(psycopg2.ProgrammingError("bad row"))
            else:
                call.finish()
        self.successResultOf(ops[0])
        self.successResultOf(ops[1])
        self.failureResultOf(ops[2], psycopg2.ProgrammingError)
        self.successResultOf(ops[3])
        self.assertEqual(store.stats()["replayed"], 0)  # not a lost connection

    def test_close_waits_for_the_queue_within_its_bound(self):
        """Ctrl-C during an outage: close() waits close_timeout, then gives up on what is left
        and leaves no timer behind."""
        store = self.makeStore(close_timeout=5)
        self.successResultOf(self.start(store))
        self.conns[0].die()
        write = store.runInteraction(lambda c: 1)
        closing = store.close()
        self.clock.advance(4.9)
        self.assertNoResult(closing)
        self.clock.advance(0.1)
        self.successResultOf(closing)
        self.failureResultOf(write, StoreClosed)
        self.assertEqual(len(self.messages("not written")), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def start(self, store):
        ready = store.start()
        for conn in self.conns:
            conn.up()
        self.conns[0].pending()[0].finish()
        return ready

    def test_reads_fail_fast_only_when_no_connection_is_up(self):
        """One dead connection of two: a read in flight on it is retried on the live one."""
        store = self.startedStore(pool_size=2)
        read = store.runQuery("SELECT 2")
        [holder] = [c for c in self.conns if c.pending()]
        other = [c for c in self.conns if c is not holder][0]
        holder.die()
        self.assertFalse(store.stats()["outage"])
        [retried] = other.pending()
        retried.finish([(2,)])
        self.assertEqual(self.successResultOf(read), [(2,)])

"""The PostgreSQL store's parts that need no server: reconnection timing on a Clock, the
interaction cursor, the classification of connection errors."""

from __future__ import annotations

from itertools import islice

import psycopg2
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txpostgres import reconnection

from salvusctl.store.errors import StoreError
from salvusctl.store.pgconnection import Detector, backoff, isPermanent
from salvusctl.store.pgcursor import InteractionCursor


class BackoffTests(SynchronousTestCase):
    def test_first_attempt_at_once_then_doubling_to_the_cap(self):
        """A restart is usually short: try at once, then back off so a long outage costs little."""
        self.assertEqual(list(islice(backoff(0.1, 2.0, 0.5)(), 6)), [0.0, 0.1, 0.2, 0.4, 0.5, 0.5])


class FakeRaw:
    closed = 0
    fd = 7

    def fileno(self):
        return self.fd


class FakeReconnectable:
    """Stands where a txpostgres Connection would: connect() fails until told otherwise."""

    def __init__(self):
        self._connection = None
        self.attempts = 0
        self.succeedFrom = None
        self.closed = 0

    def connect(self, *args, **kwargs):
        self.attempts += 1
        if self.succeedFrom is not None and self.attempts >= self.succeedFrom:
            self._connection = FakeRaw()
            return succeed(self)
        return fail(psycopg2.OperationalError("could not connect to server: Connection refused"))

    def close(self):
        self.closed += 1


class DetectorTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.events = []
        self.detector = Detector(
            self.clock,
            backoff(0.1, 2.0, 0.4),
            lambda f: self.events.append("down"),
            lambda: self.events.append("up"),
            "test#0",
        )
        self.conn = FakeReconnectable()
        self.detector.setReconnectable(self.conn)

    def die(self):
        return self.detector.checkForDeadConnection(
            Failure(psycopg2.OperationalError("server closed the connection unexpectedly"))
        )

    def test_reconnects_on_the_injected_clock_with_backoff(self):
        """Retries follow the backoff on the given reactor, and recovery is reported once."""
        self.conn.succeedFrom = 4
        self.die()
        self.assertEqual(self.events, ["down"])
        self.assertTrue(self.detector.connectionIsDead)
        self.clock.advance(0)
        self.assertEqual(self.conn.attempts, 1)
        self.clock.advance(0.1)
        self.assertEqual(self.conn.attempts, 2)
        self.clock.advance(0.19)
        self.assertEqual(self.conn.attempts, 2)
        self.clock.advance(0.01)
        self.assertEqual(self.conn.attempts, 3)
        self.clock.advance(0.4)
        self.assertEqual(self.conn.attempts, 4)
        self.assertEqual(self.events, ["down", "up"])
        self.assertFalse(self.detector.connectionIsDead)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_leaves_no_timer(self):
        """A closed store must not keep a reconnection timer in the reactor."""
        self.die()
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.detector.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.conn.attempts, 1)

    def test_only_a_closed_connection_is_dead(self):
        """A statement timeout is an OperationalError too, but the connection is fine."""
        self.conn._connection = FakeRaw()
        self.detector.checkForDeadConnection(
            Failure(psycopg2.extensions.QueryCanceledError("canceling statement"))
        )
        self.assertFalse(self.detector.connectionIsDead)
        self.conn._connection.closed = 2
        self.die()
        self.assertTrue(self.detector.connectionIsDead)
        self.assertEqual(self.events, ["down"])
        self.detector.stop()

    def test_a_dropped_socket_is_dead_even_if_not_marked_closed(self):
        """libpq may drop the socket of a connection psycopg2 has not marked closed yet."""
        self.conn._connection = FakeRaw()
        self.conn._connection.fd = -1
        self.die()
        self.assertTrue(self.detector.connectionIsDead)
        self.detector.stop()

    def test_ConnectionDead_and_rollback_failures_are_death(self):
        """txpostgres's own signals of a dead connection are taken as such."""
        self.conn._connection = FakeRaw()
        self.detector.checkForDeadConnection(Failure(reconnection.ConnectionDead()))
        self.assertTrue(self.detector.connectionIsDead)
        self.detector.stop()


class PermanentErrorTests(SynchronousTestCase):
    def test_refusals_are_permanent_unreachability_is_not(self):
        """A missing database fails start at once; a server not up yet is waited for."""

        def op(text):
            return Failure(psycopg2.OperationalError(text))

        self.assertTrue(isPermanent(op('FATAL:  database "x" does not exist')))
        self.assertTrue(isPermanent(op('FATAL:  password authentication failed for user "u"')))
        self.assertFalse(isPermanent(op("could not connect to server: Connection refused")))
        self.assertFalse(isPermanent(op("timeout expired")))
        self.assertFalse(isPermanent(Failure(ValueError("does not exist"))))


class FakeTxCursor:
    """A txpostgres cursor whose statements finish when the test says so."""

    def __init__(self):
        self.sent = []
        self.pending: list[Deferred] = []
        self.rowcount = -1
        self.rows = []

    def execute(self, sql, params=None):
        self.sent.append((sql, params))
        d = Deferred()
        self.pending.append(d)
        return d

    def finish(self, rowcount=1, rows=()):
        self.rowcount = rowcount
        self.rows = list(rows)
        self.pending.pop(0).callback(self)

    def failNext(self, exc):
        self.pending.pop(0).errback(exc)

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows

    def mogrify(self, template, row):
        return (template % tuple(repr(v) for v in row)).encode()


class CursorTests(SynchronousTestCase):
    def setUp(self):
        self.tx = FakeTxCursor()
        self.cursor = InteractionCursor(self.tx)

    def test_statements_run_one_after_another(self):
        """A second execute is not sent before the first finished (one connection, one query)."""
        self.cursor.execute("INSERT INTO t VALUES (?)", (1,))
        self.cursor.execute("INSERT INTO t VALUES (?)", (2,))
        self.assertEqual(self.tx.sent, [("INSERT INTO t VALUES (%s)", (1,))])
        self.tx.finish()
        self.assertEqual(len(self.tx.sent), 2)
        self.tx.finish()
        result = self.cursor._settle("ok")
        self.assertEqual(self.successResultOf(result), "ok")

    def test_no_args_sends_text_untouched(self):
        """Without parameters psycopg2 does no %-formatting, so the text is sent as written."""
        self.cursor.execute("SELECT '100%', '?'")
        self.assertEqual(self.tx.sent, [("SELECT '100%', '?'", None)])

    def test_fetch_before_finish_says_how_to_fix_it(self):
        """Plain sqlite3-style code on PostgreSQL gets an error that says what to change."""
        self.cursor.execute("SELECT 1")
        error = self.assertRaises(StoreError, self.cursor.fetchone)
        self.assertIn("yield cursor.execute", str(error))
        self.tx.finish(rows=[(1,)])
        self.assertEqual(self.cursor.fetchone(), (1,))

    def test_first_failure_skips_the_rest_and_rolls_back(self):
        """After an error PostgreSQL ignores the transaction's statements: do not send them."""
        first = self.cursor.execute("INSERT 1")
        second = self.cursor.execute("INSERT 2")
        self.tx.failNext(psycopg2.IntegrityError("duplicate"))
        self.failureResultOf(first, psycopg2.IntegrityError)
        self.failureResultOf(second, psycopg2.IntegrityError)
        self.assertEqual(len(self.tx.sent), 1)
        settled = self.cursor._settle("would commit")
        self.failureResultOf(settled, psycopg2.IntegrityError)

    def test_unobserved_failure_still_fails_the_interaction(self):
        """Plain-style code that ignored execute's result cannot commit a half-done change."""
        self.cursor.execute("INSERT 1")
        self.tx.failNext(psycopg2.DataError("bad value"))
        self.failureResultOf(self.cursor._settle(None), psycopg2.DataError)

    def test_executemany_plain_insert_is_batched(self):
        """Many rows of a plain INSERT go in one round trip, values quoted by psycopg2."""
        rows = [(i, f"n{i}") for i in range(3)]
        d = self.cursor.executemany("INSERT INTO t (a, b) VALUES (?, ?)", rows)
        self.assertEqual(len(self.tx.sent), 1)
        sql, params = self.tx.sent[0]
        self.assertIsNone(params)
        self.assertEqual(sql, b"INSERT INTO t (a, b) VALUES (0, 'n0'),(1, 'n1'),(2, 'n2')")
        self.tx.finish(rowcount=3)
        self.successResultOf(d)
        self.assertEqual(self.cursor.rowcount, 3)

    def test_executemany_other_statements_run_per_row(self):
        """Statements that cannot be merged still run, one per row, rowcount summed."""
        d = self.cursor.executemany("UPDATE t SET a = ? WHERE b = ?", [(1, "x"), (2, "y")])
        self.tx.finish(rowcount=1)
        self.tx.finish(rowcount=0)
        self.successResultOf(d)
        self.assertEqual(
            self.tx.sent,
            [("UPDATE t SET a = %s WHERE b = %s", (1, "x")), ("UPDATE t SET a = %s WHERE b = %s", (2, "y"))],
        )
        self.assertEqual(self.cursor.rowcount, 1)

    def test_lastrowid_is_none(self):
        """PostgreSQL has no lastrowid: None, not a misleading oid (use RETURNING)."""
        self.assertIsNone(self.cursor.lastrowid)

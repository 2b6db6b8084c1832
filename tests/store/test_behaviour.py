"""One behaviour suite, run against both stores: what a host may rely on whichever URL it names.

SQLite runs on a temporary file; PostgreSQL on a temporary database of the server
C{SALVUS_TEST_POSTGRES} names (skipped, loudly, when unset).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from salvusctl.interfaces import IStore
from salvusctl.store import makeStore
from salvusctl.store.errors import StoreClosed, StoreError
from salvusctl.store.migrations import Migration
from salvusctl.store.postgres import backoff
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase, waitUntil

MONITOR_V1 = Migration(1, "samples", "CREATE TABLE samples (k INTEGER NOT NULL, note TEXT)")
MONITOR_V2 = Migration(2, "samples index", "CREATE INDEX samples_k ON samples (k)")


def status(service_id, timestamp, load=0.0):
    return {
        "service_id": service_id,
        "timestamp": timestamp,
        "load": load,
        "percent_mem": 1.5,
        "percent_cpu": 2.5,
        "cputime": 3.0,
        "walltime": 4.0,
        "virtual_size": 5 * 2**30,
        "resident_size": 6000,
    }


class StoreBehaviour:
    """The tests; a subclass says how to make a store on a fresh database."""

    timeout = 60

    def storeURL(self) -> str:
        """The URL of this test's database."""
        raise NotImplementedError

    def newStore(self, **kw):
        """A store (not started) on this test's database; closed at the end of the test."""
        raise NotImplementedError

    def leftoverConnections(self) -> Deferred:
        """Fires with how many database connections the stores of this test still hold."""
        raise NotImplementedError

    def tempDir(self) -> str:
        """A fresh directory outside the source tree, removed after the test."""
        path = tempfile.mkdtemp(prefix="salvus-store-test-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    @inlineCallbacks
    def started(self, **kw):
        store = self.newStore(**kw)
        yield store.start()
        return store

    # -- the interface -----------------------------------------------------------------------

    def test_provides_IStore(self):
        """Both stores can stand where an IStore is expected."""
        store = self.newStore()
        self.assertTrue(verifyObject(IStore, store))
        self.assertIn(store.dialect, ("sqlite", "postgresql"))

    @inlineCallbacks
    def test_stats_shared_keys(self):
        """The admin can show either store's state with the same keys."""
        store = yield self.started()
        yield store.listen("salvus_s", lambda p: None)
        stats = store.stats()
        for key in ("url", "connections", "up", "queued_reads", "queued_writes", "outage"):
            self.assertIn(key, stats)
        self.assertFalse(stats["outage"])
        self.assertGreaterEqual(stats["up"], 1)
        self.assertEqual(stats["url"], store.url)

    # -- migrations --------------------------------------------------------------------------

    @inlineCallbacks
    def test_starting_twice_applies_migrations_once(self):
        """A host restarted on the same database must not fail on tables that exist."""
        first = self.newStore()
        first.addMigrations("monitor", [MONITOR_V1])
        yield first.start()
        yield first.runOperation("INSERT INTO samples (k) VALUES (?)", (1,))
        yield first.close()

        second = self.newStore()
        second.addMigrations("monitor", [MONITOR_V1, MONITOR_V2])
        yield second.start()
        rows = yield second.runQuery(
            "SELECT component, version FROM salvus_migrations ORDER BY component, version"
        )
        self.assertEqual([tuple(r) for r in rows], [("core", 1), ("monitor", 1), ("monitor", 2)])
        rows = yield second.runQuery("SELECT k FROM samples")
        self.assertEqual([tuple(r) for r in rows], [(1,)])

    @inlineCallbacks
    def test_two_stores_starting_at_once(self):
        """Two hosts starting together on one database: both start, each step applied once."""
        stores = [self.newStore() for _ in range(2)]
        for store in stores:
            store.addMigrations("monitor", [MONITOR_V1])
        yield gatherResults([store.start() for store in stores], consumeErrors=True)
        rows = yield stores[1].runQuery("SELECT count(*) FROM salvus_migrations")
        self.assertEqual(rows[0][0], 2)

    @inlineCallbacks
    def test_broken_migration_fails_start_and_applies_nothing(self):
        """A bad step names its component and version; the steps with it are rolled back."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1, Migration(2, "typo", "CREATE TABLEE oops (a INTEGER)")])
        failure = yield self.assertFailure(store.start(), StoreError)
        self.assertIn("migration monitor 2 (typo) failed", str(failure))
        yield store.close()
        again = yield self.started()
        rows = yield again.runQuery("SELECT component FROM salvus_migrations")
        self.assertEqual([r[0] for r in rows], ["core"])

    def test_addMigrations_after_start_refused(self):
        """Steps registered too late would silently never run: refuse them."""
        store = self.newStore()
        d = store.start()

        def check(_):
            self.assertRaises(StoreError, store.addMigrations, "late", [MONITOR_V1])

        return d.addCallback(check)

    # -- the foundation tables ---------------------------------------------------------------

    @inlineCallbacks
    def test_services_round_trip(self):
        """recordServiceStart gives an id; recordServiceExit marks the row stopped."""
        store = yield self.started()
        sid = yield store.recordServiceStart("web", "site1", "127.0.0.1", 8080, "www", 42, 7)
        other = yield store.recordServiceStart("db", None, None, None, None, None, None)
        self.assertNotEqual(sid, other)
        rows = yield store.runQuery(
            'SELECT type, site, address, port, running, "user", pid, monitor_pid FROM services WHERE id = ?',
            (sid,),
        )
        row = tuple(rows[0])
        self.assertEqual(
            row[:4] + (bool(row[4]),) + row[5:],
            (
                "web",
                "site1",
                "127.0.0.1",
                8080,
                True,
                "www",
                42,
                7,
            ),
        )
        yield store.recordServiceExit(sid)
        rows = yield store.runQuery("SELECT running FROM services WHERE id = ?", (sid,))
        self.assertFalse(rows[0][0])

    @inlineCallbacks
    def test_latestStatus_gives_newest_row_of_running_services(self):
        """The admin's overview: one row per running service, its newest sample."""
        store = yield self.started()
        a = yield store.recordServiceStart("a", None, None, None, None, 1, None)
        b = yield store.recordServiceStart("b", None, None, None, None, 2, None)
        gone = yield store.recordServiceStart("gone", None, None, None, None, 3, None)
        n = yield store.writeStatus(
            [status(a, 10.0, 0.1), status(a, 30.0, 0.3), status(a, 20.0, 0.2)]
            + [status(b, 5.0, 1.0), status(gone, 50.0, 9.0)]
        )
        self.assertEqual(n, 5)
        n = yield store.writeStatus([])
        self.assertEqual(n, 0)
        yield store.recordServiceExit(gone)
        latest = yield store.latestStatus()
        self.assertEqual(
            [(r["service_id"], r["timestamp"], r["load"]) for r in latest],
            [
                (a, 30.0, 0.3),
                (b, 5.0, 1.0),
            ],
        )
        self.assertEqual(latest[0]["virtual_size"], 5 * 2**30)

    @inlineCallbacks
    def test_statusHistory_range_oldest_first(self):
        """One service's samples between two times, in time order, bounds included."""
        store = yield self.started()
        a = yield store.recordServiceStart("a", None, None, None, None, 1, None)
        b = yield store.recordServiceStart("b", None, None, None, None, 2, None)
        yield store.writeStatus([status(a, float(t)) for t in (5, 1, 4, 2, 3)] + [status(b, 3.0)])
        history = yield store.statusHistory(a, 2.0, 4.0)
        self.assertEqual([r["timestamp"] for r in history], [2.0, 3.0, 4.0])
        history = yield store.statusHistory(a, 3.0)
        self.assertEqual([r["timestamp"] for r in history], [3.0, 4.0, 5.0])
        history = yield store.statusHistory(a, 6.0)
        self.assertEqual(history, [])

    # -- primitives ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_runInteraction_rolls_back_on_error(self):
        """A failing interaction leaves nothing behind and reports its own error."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()

        @inlineCallbacks
        def halfDone(cursor, k):
            yield cursor.execute("INSERT INTO samples (k) VALUES (?)", (k,))
            raise ValueError("changed my mind")

        yield self.assertFailure(store.runInteraction(halfDone, 1), ValueError)
        rows = yield store.runQuery("SELECT count(*) FROM samples")
        self.assertEqual(rows[0][0], 0)

    @inlineCallbacks
    def test_runInteraction_result_args_and_rowcount(self):
        """One interaction written once runs on both stores: args, rowcount, fetchall, result."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()

        @inlineCallbacks
        def work(cursor, first, *, note):
            yield cursor.executemany(
                "INSERT INTO samples (k, note) VALUES (?, ?)", [(first + i, note) for i in range(3)]
            )
            self.assertEqual(cursor.rowcount, 3)
            yield cursor.execute("UPDATE samples SET note = ? WHERE k > ?", ("big", first))
            updated = cursor.rowcount
            yield cursor.execute("SELECT k, note FROM samples ORDER BY k")
            return updated, [tuple(r) for r in cursor.fetchall()]

        updated, rows = yield store.runInteraction(work, 10, note="n")
        self.assertEqual(updated, 2)
        self.assertEqual(rows, [(10, "n"), (11, "big"), (12, "big")])

    @inlineCallbacks
    def test_executemany_large_batches_and_updates(self):
        """Many rows in one call: batched INSERTs past the batch size, and per-row UPDATEs."""
        store = yield self.started()
        sid = yield store.recordServiceStart("a", None, None, None, None, 1, None)
        n = yield store.writeStatus([status(sid, float(t), t / 10) for t in range(1201)])
        self.assertEqual(n, 1201)
        rows = yield store.runQuery("SELECT count(*), sum(load) FROM status")
        self.assertEqual(rows[0][0], 1201)
        self.assertAlmostEqual(rows[0][1], sum(t / 10 for t in range(1201)), places=3)

        @inlineCallbacks
        def bump(cursor):
            yield cursor.executemany(
                "UPDATE status SET load = ? WHERE timestamp = ?", [(-1.0, 3.0), (-2.0, 4.0)]
            )
            return cursor.rowcount

        changed = yield store.runInteraction(bump)
        self.assertEqual(changed, 2)
        history = yield store.statusHistory(sid, 3.0, 4.0)
        self.assertEqual([r["load"] for r in history], [-1.0, -2.0])

    @inlineCallbacks
    def test_interaction_statements_run_even_when_not_yielded(self):
        """Writes-only interactions in plain style (no yield) commit every statement, in order."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()

        def plain(cursor):
            cursor.execute("INSERT INTO samples (k) VALUES (?)", (1,))
            cursor.execute("UPDATE samples SET note = ? WHERE k = ?", ("seen", 1))
            return "done"

        result = yield store.runInteraction(plain)
        self.assertEqual(result, "done")
        rows = yield store.runQuery("SELECT k, note FROM samples")
        self.assertEqual([tuple(r) for r in rows], [(1, "seen")])

    @inlineCallbacks
    def test_a_bad_write_among_many_fails_alone(self):
        """Writes made back to back may share a transaction; a faulty one must not take the
        others down with it, and the rest still land in order."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()
        writes = []
        for k in range(30):
            if k == 17:
                writes.append(store.runOperation("INSERT INTO nowhere (k) VALUES (?)", (k,)))
            else:
                writes.append(store.runOperation("INSERT INTO samples (k) VALUES (?)", (k,)))
        results = yield DeferredList(writes, consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [k != 17 for k in range(30)])
        rows = yield store.runQuery("SELECT k FROM samples")
        self.assertEqual(sorted(r[0] for r in rows), [k for k in range(30) if k != 17])

    @inlineCallbacks
    def test_sql_error_is_reported_and_store_keeps_working(self):
        """A bad statement fails its own call only; it is neither retried nor fatal."""
        store = yield self.started()
        yield self.assertFailure(store.runQuery("SELECT nope FROM nowhere"), Exception)
        yield self.assertFailure(store.runOperation("INSERT INTO nowhere VALUES (?)", (1,)), Exception)
        rows = yield store.runQuery("SELECT count(*) FROM services")
        self.assertEqual(rows[0][0], 0)

    @inlineCallbacks
    def test_wrong_argument_count_fails_the_call(self):
        """A statement given the wrong number of arguments fails that call, clearly."""
        store = yield self.started()
        failure = yield self.assertFailure(
            store.runQuery("SELECT ? + ?", (1,)), StoreError, sqlite3.ProgrammingError
        )
        self.assertIn("2", str(failure))
        rows = yield store.runQuery("SELECT ? + ?", (1, 2))
        self.assertEqual(rows[0][0], 3)

    @inlineCallbacks
    def test_question_marks_and_percent_signs(self):
        """C{?} is the placeholder on both; C{%} and C{?} inside string literals stay text."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()
        yield store.runOperation("INSERT INTO samples (k, note) VALUES (?, ?)", (1, "100% sure? yes"))
        yield store.runOperation("INSERT INTO samples (k, note) VALUES (2, 'what? 50%')")
        rows = yield store.runQuery("SELECT k FROM samples WHERE note LIKE '%?%' AND k >= ? ORDER BY k", (1,))
        self.assertEqual([r[0] for r in rows], [1, 2])
        rows = yield store.runQuery("SELECT note FROM samples WHERE note LIKE '%50!%' ESCAPE '!'")
        self.assertEqual([r[0] for r in rows], ["what? 50%"])

    # -- notifications -----------------------------------------------------------------------

    @inlineCallbacks
    def test_notify_reaches_listeners(self):
        """notify() reaches every listener of that channel, and only of that channel."""
        store = yield self.started()
        got: dict[str, list[str]] = {"a": [], "b": []}
        arrived: Deferred = Deferred()

        def onA(payload):
            got["a"].append(payload)
            if len(got["a"]) == 2:
                arrived.callback(None)

        yield store.listen("salvus_a", onA)
        yield store.listen("salvus_b", got["b"].append)
        yield store.notify("salvus_a", "one")
        yield store.notify("salvus_a", "two")
        yield arrived
        self.assertEqual(got, {"a": ["one", "two"], "b": []})

    @inlineCallbacks
    def test_listen_before_start(self):
        """Components subscribe while the host is being built, before the store starts."""
        store = self.newStore()
        arrived: Deferred = Deferred()
        yield store.listen("salvus_early", arrived.callback)
        yield store.start()
        yield store.notify("salvus_early", "hello")
        payload = yield arrived
        self.assertEqual(payload, "hello")

    def test_bad_channel_name_refused(self):
        """A channel name that PostgreSQL would not take is refused on both stores."""
        store = self.newStore()
        self.assertRaises(StoreError, store.listen, "no spaces", lambda p: None)
        self.assertRaises(StoreError, store.notify, "1abc", "x")

    # -- shutdown ------------------------------------------------------------------------------

    @inlineCallbacks
    def test_close_leaves_no_thread_or_connection(self):
        """A host's Ctrl-C must leave no store thread and no database connection behind."""
        before = set(threading.enumerate())
        store = yield self.started()
        yield store.listen("salvus_x", lambda p: None)
        yield store.recordServiceStart("a", None, None, None, None, 1, None)
        yield store.close()
        self.assertEqual(set(threading.enumerate()) - before, set())
        left = yield self.leftoverConnections()
        self.assertEqual(left, 0)

    @inlineCallbacks
    def test_host_stop_closes_its_store(self):
        """A host built on this store's URL starts it first and, stopped, leaves nothing open."""
        from salvusctl.host import Host

        before = set(threading.enumerate())
        host = Host(name="t", store=self.storeURL(), var=os.path.join(self.tempDir(), "var"))
        service = host.build(_reactor)
        service.startService()
        yield service.getServiceNamed("store").ready
        yield host.context.store.recordServiceStart("web", None, None, None, None, 1, None)
        yield service.stopService()
        self.assertEqual(set(threading.enumerate()) - before, set())
        left = yield self.leftoverConnections()
        self.assertEqual(left, 0)

    @inlineCallbacks
    def test_calls_after_close_fail_clearly(self):
        """Calls on a closed store fail with StoreClosed instead of hanging."""
        store = yield self.started()
        yield store.close()
        yield self.assertFailure(store.runQuery("SELECT 1"), StoreClosed)
        yield self.assertFailure(store.runOperation("SELECT 1"), StoreClosed)
        yield store.close()  # twice is fine

    @inlineCallbacks
    def test_close_flushes_writes_in_flight(self):
        """Writes made just before close() are written, not dropped."""
        store = self.newStore()
        store.addMigrations("monitor", [MONITOR_V1])
        yield store.start()
        writes = [store.runOperation("INSERT INTO samples (k) VALUES (?)", (k,)) for k in range(50)]
        yield store.close()
        yield gatherResults(writes)
        again = yield self.started()
        rows = yield again.runQuery("SELECT count(*) FROM samples")
        self.assertEqual(rows[0][0], 50)


class SQLiteStoreTests(StoreBehaviour, TestCase):
    """The embedded default store on a temporary file."""

    def setUp(self):
        self.path = os.path.join(self.tempDir(), "var", "salvus.db")

    def storeURL(self):
        return f"sqlite:{self.path}"

    def newStore(self, **kw):
        store = makeStore(self.storeURL(), _reactor)
        self.addCleanup(store.close)
        return store

    def leftoverConnections(self):
        from twisted.internet.defer import succeed

        return succeed(0)

    @inlineCallbacks
    def test_in_memory_store_for_tests(self):
        """sqlite::memory: is a real, private store: handy in other components' tests."""
        store = makeStore("sqlite::memory:", _reactor)
        self.addCleanup(store.close)
        yield store.start()
        sid = yield store.recordServiceStart("a", None, None, None, None, 1, None)
        yield store.writeStatus([status(sid, 1.0)])
        latest = yield store.latestStatus()
        self.assertEqual(len(latest), 1)

    @inlineCallbacks
    def test_store_file_in_wal_mode(self):
        """WAL lets readers and the writer not block each other."""
        store = yield self.started()
        rows = yield store.runQuery("PRAGMA journal_mode")
        self.assertEqual(rows[0][0].lower(), "wal")
        self.assertTrue(os.path.exists(self.path))

    @inlineCallbacks
    def test_plain_interaction_with_results(self):
        """Code written for sqlite3's cursor (execute, then fetch) keeps working on SQLite."""
        store = yield self.started()

        def plain(cursor):
            cursor.execute("SELECT 40 + ?", (2,))
            return cursor.fetchone()[0], cursor.execute("SELECT 1").fetchall()

        result = yield store.runInteraction(plain)
        self.assertEqual(result, (42, [(1,)]))

    @inlineCallbacks
    def test_unopenable_file_fails_start_clearly(self):
        """A path that cannot be a database (here: a directory) fails start with the path."""
        os.makedirs(self.path)
        store = self.newStore()
        failure = yield self.assertFailure(store.start(), StoreError)
        self.assertIn(self.path, str(failure))
        self.assertFalse(store.running)

    @inlineCallbacks
    def test_interaction_waiting_on_other_things_refused(self):
        """On SQLite an interaction runs in the store's thread: it may only wait on its cursor."""
        store = yield self.started()

        def waits(cursor):
            return Deferred()

        yield self.assertFailure(store.runInteraction(waits), StoreError)


class PostgresStoreTests(StoreBehaviour, TestCase):
    """The fleet store on a temporary database of the test server."""

    skip = POSTGRES_SKIP

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)

    def storeURL(self):
        return self.db.url

    def newStore(self, **kw):
        kw.setdefault("reconnect_delays", backoff(0.05, 2.0, 0.2))
        from salvusctl.store.postgres import PostgresStore
        from salvusctl.store.url import parseStoreURL

        store = PostgresStore(_reactor, parseStoreURL(self.db.url), **kw)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def leftoverConnections(self):
        # The server ends a backend a moment after its client closed the socket.
        yield waitUntil(_reactor, lambda: not self.db.backends())
        return len(self.db.backends())

    @inlineCallbacks
    def test_makeStore_selects_postgres(self):
        """A postgresql:// URL gives the PostgreSQL store, password kept out of its url."""
        store = makeStore(
            self.db.url.replace("://", "://postgres:secret@", 1) if "@" not in self.db.url else self.db.url,
            _reactor,
        )
        self.assertEqual(store.dialect, "postgresql")
        self.assertNotIn("secret", store.url)
        yield store.close()

    @inlineCallbacks
    def test_missing_database_fails_start_clearly(self):
        """A URL naming no existing database fails start() with one line naming it."""
        from salvusctl.store.postgres import PostgresStore
        from salvusctl.store.url import parseStoreURL

        url = self.db.url.rsplit("/", 1)[0] + "/salvus_t_nonexistent"
        store = PostgresStore(_reactor, parseStoreURL(url))
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.start(), StoreError)
        self.assertIn("salvus_t_nonexistent", str(failure))
        self.assertIn("does not exist", str(failure))
        yield self.assertFailure(store.runOperation("SELECT 1"), StoreError)

    @inlineCallbacks
    def test_statement_timeout_is_an_error_not_an_outage(self):
        """A cancelled statement fails its own call; the pool does not think the server died."""
        from twisted.internet.defer import CancelledError

        store = yield self.started()

        @inlineCallbacks
        def slow(cursor):
            yield cursor.execute("SET LOCAL statement_timeout = 50")
            yield cursor.execute("SELECT pg_sleep(5)")

        # txpostgres reports a cancelled statement as CancelledError.
        yield self.assertFailure(store.runInteraction(slow), CancelledError)
        self.assertEqual(store.stats()["reconnects"], 0)
        self.assertEqual(store.stats()["replayed"], 0)
        rows = yield store.runQuery("SELECT 1")
        self.assertEqual(rows, [(1,)])

    @inlineCallbacks
    def test_fetch_before_the_statement_finished_is_a_clear_error(self):
        """Reading a result without waiting for it is a mistake that must say how to fix it."""
        store = yield self.started()

        def hasty(cursor):
            cursor.execute("SELECT 1")
            return cursor.fetchone()

        failure = yield self.assertFailure(store.runInteraction(hasty), StoreError)
        self.assertIn("yield cursor.execute", str(failure))

    @inlineCallbacks
    def test_migrations_hold_the_advisory_lock(self):
        """While one host migrates, another waits on the lock instead of racing it."""
        import psycopg2

        from salvusctl.store.postgres import MIGRATION_LOCK_KEY

        blocker = psycopg2.connect(self.db.url)
        self.addCleanup(blocker.close)
        cur = blocker.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        store = self.newStore()
        ready = store.start()
        waiting = yield waitUntil(
            _reactor,
            lambda: self.db.query(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'salvus' AND wait_event_type = 'Lock'"
            ),
        )
        self.assertTrue(waiting)
        self.assertFalse(ready.called)
        blocker.commit()
        yield ready


class MemoryStoreTests(StoreBehaviour, TestCase):
    """The tests' L{MemoryStore}: the behaviour other components' tests rely on through it.

    Its database lives and dies with the store object: the two tests that reopen a database
    through a second store are the only ones it cannot run.
    """

    def test_starting_twice_applies_migrations_once(self):
        raise SkipTest("a MemoryStore's database is private to it: nothing to reopen")

    def test_close_flushes_writes_in_flight(self):
        raise SkipTest("a MemoryStore's database is private to it: nothing to reopen")

    def storeURL(self):
        return "sqlite::memory:"

    def newStore(self, **kw):
        from salvusctl.store.testing import MemoryStore

        store = MemoryStore()
        self.addCleanup(store.close)
        return store

    def leftoverConnections(self):
        from twisted.internet.defer import succeed

        return succeed(0)

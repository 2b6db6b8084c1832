"""A tick written twice is stored once, on the real PostgreSQL (and SQLite).

The PostgreSQL store replays a write whose connection died before the server's acknowledgement
arrived, and the server may well have committed it: the tick's rows then arrive a second time.
Each sample table has a unique key per tick and the monitor inserts with C{ON CONFLICT DO NOTHING},
so the second copy adds nothing.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.monitor.schema import MONITOR_MIGRATIONS
from salvusctl.monitor.service import MonitorService
from salvusctl.store import makeStore
from salvusctl.store.dialects import POSTGRESQL
from tests.monitor.fakes import FakeSampler, FakeSupervisor, inline
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

TABLES = ("status", "process_status", "host_status", "disk_status")


class _Idempotence:
    """Shared by both stores: C{url()} and C{rows(sql)} come from the subclass."""

    timeout = 60

    def monitor(self, store):
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=100, port=8001)
        supervisor.add("web:1", pid=200, port=8002)
        sampler = FakeSampler()
        sampler.overrides["web:0"] = dict(children=2, cpu=4.0)
        return MonitorService(reactor, store, supervisor, host_name="h1", sampler=sampler,
                              run=inline, interval=3600)

    def counts(self) -> dict[str, int]:
        return {t: self.rows(f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}

    @inlineCallbacks
    def test_sameBatchTwiceIsStoredOnce(self):
        """The same tick's batch written a second time (what a replay after a lost commit
        acknowledgement does) leaves exactly one copy of every row."""
        store = makeStore(self.url(), reactor)
        monitor = self.monitor(store)
        yield store.start()
        self.addCleanup(store.close)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        yield monitor.flush()  # the services rows and the start tick
        yield monitor.sampleOnce()
        batch = list(monitor._buffer)
        self.assertTrue(any(b.kind == "status" for b in batch))
        yield monitor.flush()
        once = self.counts()
        self.assertGreater(once["status"], 0)
        self.assertGreater(once["process_status"], 0)
        self.assertGreater(once["host_status"], 0)
        yield store.runInteraction(monitor._writeBatch, batch, [], reactor.seconds())
        self.assertEqual(self.counts(), once)
        yield store.runInteraction(monitor._writeBatch, batch + batch, [], reactor.seconds())
        self.assertEqual(self.counts(), once)

    @inlineCallbacks
    def test_upgradeKeepsOneCopyOfStoredDuplicates(self):
        """Duplicates stored before the unique keys existed are reduced to one copy by the
        migration that adds them, which then applies (instead of failing the start)."""
        url = self.url()
        store = makeStore(url, reactor)
        store.addMigrations("monitor", MONITOR_MIGRATIONS[:4])
        yield store.start()
        sid = yield store.recordServiceStart("web", "web:0", "127.0.0.1", 8001, None, 100, 1, "h1")
        for _ in range(3):
            yield store.runOperation("INSERT INTO status (service_id, timestamp, load) VALUES (?, ?, ?)",
                                     (sid, 10.0, 0.5))
            yield store.runOperation("INSERT INTO host_status (host, timestamp) VALUES (?, ?)",
                                     ("h1", 10.0))
        yield store.runOperation("INSERT INTO status (service_id, timestamp, load) VALUES (?, ?, ?)",
                                 (sid, 11.0, 0.5))
        yield store.close()
        store = makeStore(url, reactor)
        self.monitor(store)  # every migration, the unique keys among them
        yield store.start()
        self.addCleanup(store.close)
        self.assertEqual(self.rows("SELECT timestamp FROM status ORDER BY timestamp"), [(10.0,), (11.0,)])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM host_status"), [(1,)])


class PostgresIdempotenceTests(_Idempotence, TestCase):
    skip = POSTGRES_SKIP

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)

    def url(self) -> str:
        return self.db.url

    def rows(self, sql: str) -> list[tuple]:
        return self.db.query(sql)


class SQLiteIdempotenceTests(_Idempotence, TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())

    def url(self) -> str:
        return "sqlite:" + self.path

    def rows(self, sql: str) -> list[tuple]:
        import sqlite3

        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


class _RecordingCursor:
    """Takes each statement of an interaction and answers at once (the PostgreSQL cursor's API)."""

    def __init__(self):
        self.statements: list[str] = []

    def execute(self, sql, args=()):
        from twisted.internet.defer import succeed

        self.statements.append(sql)
        return succeed(self)


class SynchronousCommitTests(TestCase):
    def batchStatements(self, **options) -> list[str]:
        class PG:
            dialect = "postgresql"
            sql = POSTGRESQL

            def addMigrations(self, component, steps):
                pass

        monitor = MonitorService(reactor, PG(), None, host_name="h1", **options)
        cursor = _RecordingCursor()
        self.successResultOf(monitor._writeBatch(cursor, [], [], 0.0))
        return cursor.statements

    def test_samplesSkipTheWALFlushByDefault(self):
        """By default a tick's commit does not wait for the server's disk (documented trade)."""
        self.assertIn("SET LOCAL synchronous_commit TO OFF", self.batchStatements())

    def test_synchronousCommitWaitsForTheDisk(self):
        """C{Monitor(synchronous_commit=True)} leaves the server's durable default alone."""
        self.assertEqual(self.batchStatements(synchronous_commit=True), [])

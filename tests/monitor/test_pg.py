"""The monitor's SQL on the real PostgreSQL store: batched writes, LATERAL latest, day partitions
of the log table and their retention, alert records.  Each test has its own temporary database."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.alerts.actions import RecordAction
from salvusctl.alerts.engine import Alert
from salvusctl.monitor.logs import partitionName
from salvusctl.monitor.retention import RetentionPolicy
from salvusctl.monitor.schema import DAY
from salvusctl.monitor.service import MonitorService
from salvusctl.store import makeStore
from tests.monitor.fakes import FakeSampler, FakeSupervisor, inline
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase


class PostgresMonitorTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.store = makeStore(self.db.url, reactor)
        self.supervisor = FakeSupervisor()
        self.supervisor.add("web:0", pid=100, port=8001)
        self.supervisor.add("web:1", pid=200, port=8002)
        self.sampler = FakeSampler()
        self.sampler.overrides["web:0"] = dict(children=2, cpu=4.0)
        self.monitor = MonitorService(reactor, self.store, self.supervisor, host_name="h1",
                                      sampler=self.sampler, run=inline, interval=3600)
        yield self.store.start()
        self.addCleanup(self.store.close)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    @inlineCallbacks
    def test_writesAndQueries(self):
        """A tick's rows land in one transaction; latest (LATERAL) and history read them back."""
        for _ in range(3):
            yield self.monitor.sampleOnce()
        yield self.monitor.flush()
        [(status, processes)] = self.db.query(
            "SELECT (SELECT COUNT(*) FROM status), (SELECT COUNT(*) FROM process_status)")
        self.assertEqual((status, processes), (8, 16))  # start tick + 3, two instances
        running = yield self.monitor.runningInstances()
        self.assertEqual([r["site"] for r in running], ["web:0", "web:1"])
        self.assertEqual(running[0]["sample"]["nprocs"], 3)
        self.assertEqual(running[0]["sample"]["cpu_percent"], 12.0)
        samples = yield self.monitor.history("web:0", 0.0)
        self.assertEqual(len(samples), 4)
        self.assertEqual(samples, sorted(samples, key=lambda s: s["timestamp"]))
        self.supervisor.setState("web:1", "FATAL")
        yield self.monitor.flush()
        life = yield self.monitor.instanceHistory("web:1")
        self.assertEqual([e["event"] for e in life["events"]], ["start", "exit"])

    @inlineCallbacks
    def test_logPartitionsAndRetention(self):
        """Log lines go to day partitions created on demand; retention drops old partitions whole;
        search (with a literal %) works the same as on SQLite."""
        now = reactor.seconds()
        self.monitor.logLine("web:0", "stderr", "error", "old failure at 100% disk", now - 3 * DAY)
        self.monitor.logLine("web:0", "stdout", "info", "fresh line", now)
        yield self.monitor.flush()
        parts = self.db.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'logs' ORDER BY 1")
        today, old = int(now // DAY), int((now - 3 * DAY) // DAY)
        self.assertEqual([p for (p,) in parts], [partitionName(old), partitionName(today)])
        found = yield self.monitor.searchLogs(text="100%")
        self.assertEqual([r["text"] for r in found], ["old failure at 100% disk"])
        found = yield self.monitor.searchLogs(deploy="web", level="info", since=now - 60)
        self.assertEqual([r["text"] for r in found], ["fresh line"])

        self.monitor.retention = {"logs": RetentionPolicy(max_age=DAY)}
        removed = yield self.monitor.runRetention()
        self.assertGreaterEqual(removed["logs"], 1)
        parts = self.db.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'logs'")
        self.assertEqual([p for (p,) in parts], [partitionName(today)])
        # A late line for a dropped day re-creates its partition rather than failing the batch.
        self.monitor.logLine("web:0", "stdout", "info", "late", now - 3 * DAY)
        yield self.monitor.flush()
        self.assertEqual(self.db.query("SELECT COUNT(*) FROM logs"), [(2,)])

    @inlineCallbacks
    def test_rowCapAndServicesCleanup(self):
        """Row-count caps and old services cleanup run on PostgreSQL too."""
        for _ in range(4):
            yield self.monitor.sampleOnce()
        self.supervisor.setState("web:1", "EXITED")
        yield self.monitor.flush()
        self.monitor.retention = {"status": RetentionPolicy(max_rows=3)}
        yield self.monitor.runRetention()
        # The two instances share each tick's timestamp: the cap keeps whole ticks.
        self.assertEqual(self.db.query("SELECT COUNT(*) FROM status"), [(4,)])
        self.monitor.retention = {"status": RetentionPolicy(max_age=1e-6),
                                  "services": RetentionPolicy(max_age=1e-6)}
        removed = yield self.monitor.runRetention(now=reactor.seconds() + 1)
        self.assertEqual(removed["services"], 1)
        self.assertEqual(self.db.query("SELECT site FROM services"), [("web:0",)])

    @inlineCallbacks
    def test_alertRecords(self):
        """Alert records open and close on PostgreSQL."""
        action = RecordAction(self.store)
        alert = Alert("cpu", "cpu", "web:0", "warning", "hot", "h1", 10.0)
        yield action.fire(alert)
        from dataclasses import replace

        yield action.fire(replace(alert, cleared=True, cleared_at=20.0))
        self.assertEqual(self.db.query("SELECT subject, fired_at, cleared_at FROM alerts"),
                         [("web:0", 10.0, 20.0)])


class PostgresStartRetentionTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 60

    @inlineCallbacks
    def test_prunesSoonAfterStartInBatches(self):
        """On PostgreSQL, on a Clock: old rows go one batch per run right after start, without
        waiting a full retention_interval (the bounded DELETE keys rows by tableoid and ctid)."""
        from twisted.internet.task import Clock

        db = TempDatabase().create()
        self.addCleanup(db.drop)
        store = makeStore(db.url, reactor)
        clock = Clock()
        clock.advance(10 * DAY)
        monitor = MonitorService(clock, store, FakeSupervisor(), host_name="h1",
                                 sampler=FakeSampler(), run=inline, interval=3600,
                                 retention={"host_status": RetentionPolicy(max_age=DAY),
                                            "logs": RetentionPolicy(max_age=DAY)},
                                 retention_batch=3, retention_start_delay=10.0)
        yield store.start()
        self.addCleanup(store.close)
        for t in range(7):
            yield store.runOperation(
                "INSERT INTO host_status (host, timestamp) VALUES ('h1', ?)", (float(t),))
        monitor.startService()
        self.addCleanup(monitor.stopService)

        def count(cursor):
            d = cursor.execute("SELECT COUNT(*) FROM host_status WHERE timestamp < ?", (9 * DAY,))
            return d.addCallback(lambda _: cursor.fetchone()[0])

        # Writes are applied in order: this interaction runs after the retention before it.
        self.assertEqual((yield store.runInteraction(count)), 7)
        clock.advance(10)
        self.assertEqual((yield store.runInteraction(count)), 4)
        clock.advance(10)
        self.assertEqual((yield store.runInteraction(count)), 1)
        clock.advance(10)
        self.assertEqual((yield store.runInteraction(count)), 0)
        self.assertFalse(monitor._retentionSoon)  # the backlog is gone: next run at the interval


class PostgresOutageTests(TestCase):
    """The monitor over the real PostgreSQL store while the server goes away and comes back."""

    skip = POSTGRES_SKIP
    timeout = 60

    @inlineCallbacks
    def test_noSampleLostAcrossAnOutage(self):
        """Sampling and latest() go on while the database is unreachable; when it returns every
        sample taken meanwhile is in the status table."""
        from salvusctl.store.postgres import PostgresStore, backoff
        from salvusctl.store.url import parseStoreURL
        from tests.monitor.test_memcache import waitFor
        from tests.store.test_postgres_outage import Proxy, freePort

        db = TempDatabase().create()
        self.addCleanup(db.drop)
        proxy = Proxy("127.0.0.1", int(db.port), freePort())
        proxy.up()
        self.addCleanup(lambda: proxy.down() if proxy.port is not None else None)
        store = PostgresStore(reactor, parseStoreURL(db.urlOnPort(proxy.listen_port)),
                              reconnect_delays=backoff(0.05, 2.0, 0.2))
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=100)
        supervisor.add("web:1", pid=200)
        monitor = MonitorService(reactor, store, supervisor, host_name="h1", sampler=FakeSampler(),
                                 run=inline, interval=3600)
        yield store.start()
        self.addCleanup(store.close)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        for _ in range(2):
            yield monitor.sampleOnce()
        yield monitor.flush()
        self.assertEqual(db.query("SELECT COUNT(*) FROM status"), [(6,)])

        yield proxy.down()
        taken = []
        for _ in range(3):
            snapshot = yield monitor.sampleOnce()
            taken.append(snapshot["timestamp"])
            self.assertEqual(monitor.latest()["web:0"]["sampled_at"], snapshot["timestamp"])
        proxy.up()
        yield waitFor(lambda: db.query("SELECT COUNT(*) FROM status") == [(12,)], timeout=20)
        stored = {t for (t,) in db.query("SELECT DISTINCT timestamp FROM status")}
        self.assertTrue(set(taken) <= stored)
        self.flushLoggedErrors()

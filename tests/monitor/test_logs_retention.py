"""Deploy log lines in the store, and cap_table-style retention (SQLite; PostgreSQL in test_pg)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.monitor.retention import RetentionPolicy, applyRetention
from salvusctl.monitor.schema import DAY
from tests.monitor.test_service import MonitorTestMixin


class LogTests(MonitorTestMixin, SynchronousTestCase):
    def fill(self):
        self.makeMonitor()
        self.start()
        hook = self.monitor.logLine
        hook("web:0", "stdout", "info", "listening on 8001", 100.0)
        hook("web:0", "stderr", "error", "Traceback: KeyError 'user_id'", 200.0)
        hook("web:1", "stdout", "debug", "noise", 250.0)
        hook("api:0", "stderr", "warn", "slow query 100% of budget", 300.0)
        hook("api:0", "stdout", "info", "GET /users_list 200", 400.0)
        self.tick()

    def test_hookStoresLinesWithReceiveAndRecordTimes(self):
        """Each non-debug line is stored with the time it was received and the time it was
        written."""
        self.fill()
        rows = self.store.rows("SELECT instance, deploy, level, received_at, recorded_at FROM logs"
                               " ORDER BY received_at")
        self.assertEqual(rows, [("web:0", "web", "info", 100.0, 5.0), ("web:0", "web", "error", 200.0, 5.0),
                                ("api:0", "api", "warn", 300.0, 5.0), ("api:0", "api", "info", 400.0, 5.0)])

    def test_search(self):
        """By deploy, level(s), time range and text, newest first."""
        self.fill()

        def texts(**kw):
            return [r["text"] for r in self.successResultOf(self.monitor.searchLogs(**kw))]

        self.assertEqual(texts(deploy="web"), ["Traceback: KeyError 'user_id'", "listening on 8001"])
        self.assertEqual(texts(level=["error", "WARN"]),
                         ["slow query 100% of budget", "Traceback: KeyError 'user_id'"])
        self.assertEqual(texts(since=150, until=350), ["slow query 100% of budget",
                                                        "Traceback: KeyError 'user_id'"])
        self.assertEqual(texts(text="keyerror"), ["Traceback: KeyError 'user_id'"])
        # Wildcards in the search text match themselves.
        self.assertEqual(texts(text="100%"), ["slow query 100% of budget"])
        self.assertEqual(texts(text="users_"), ["GET /users_list 200"])
        self.assertEqual(texts(text="user_"), ["Traceback: KeyError 'user_id'"])
        self.assertEqual(texts(instance="api:0", limit=1), ["GET /users_list 200"])
        with self.assertRaises(ValueError):
            self.monitor.searchLogs(limit=0)

    def test_burstFlushesEarly(self):
        """A burst of lines is written without waiting for the next tick."""
        self.makeMonitor()
        self.start()
        self.clock.advance(0)
        for i in range(1000):
            self.monitor.logLine("web:0", "stdout", "info", f"line {i}", float(i))
        self.clock.advance(0)
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM logs"), [(1000,)])

    def test_badLine(self):
        """A line without an instance name is refused at the hook, not at write time."""
        self.makeMonitor()
        with self.assertRaises(ValueError):
            self.monitor.logLine("", "stdout", "info", "x", 1.0)

    def test_bytesAndHugeLines(self):
        """Binary garbage is decoded with replacement and a huge line is cut, never an error."""
        self.makeMonitor()
        self.start()
        self.monitor.logLine("web:0", "stdout", "info", b"\xff\xfe ok", 1.0)
        self.monitor.logLine("web:0", "stdout", "info", "x" * 1_000_000, 2.0)
        self.tick()
        rows = self.store.rows("SELECT LENGTH(text) FROM logs ORDER BY received_at")
        self.assertEqual(rows, [(5,), (8192,)])


class RetentionTests(MonitorTestMixin, SynchronousTestCase):
    def test_byAgeAndByRowCount(self):
        """Old rows go by age; then the oldest beyond the row cap; services whose samples are all
        gone and that stopped long ago go too."""
        self.makeMonitor(retention={})
        self.supervisor.add("web:0", pid=100)
        self.supervisor.add("web:1", pid=200)
        self.start()
        for _ in range(9):
            self.tick(DAY / 4)
        self.supervisor.setState("web:1", "EXITED")
        self.tick(0)
        for _ in range(8):
            self.tick(DAY / 4)
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM status"), [(28,)])
        policies = {"status": RetentionPolicy(max_age=2 * DAY, max_rows=5),
                    "host_status": RetentionPolicy(max_age=DAY),
                    "services": RetentionPolicy(max_age=DAY)}
        self.monitor.retention = policies
        removed = self.successResultOf(self.monitor.runRetention())
        self.assertEqual(removed["status"], 23)
        self.assertEqual(removed["services"], 1)
        self.assertEqual(self.store.rows("SELECT MIN(timestamp) FROM status"), [(3.25 * DAY,)])
        self.assertEqual(self.store.rows("SELECT COUNT(*) FROM host_status"), [(5,)])
        self.assertEqual(self.store.rows("SELECT site FROM services"), [("web:0",)])

    def test_periodic(self):
        """Retention also runs by itself every retention_interval."""
        self.makeMonitor(retention={"host_status": RetentionPolicy(max_rows=2)}, retention_interval=60.0)
        self.start()
        for _ in range(12):
            self.tick()
        # Thirteen samples were taken; retention at 60 s kept two (plus the 60 s sample, whose
        # flush ran after it).
        [(count,)] = self.store.rows("SELECT COUNT(*) FROM host_status")
        self.assertLessEqual(count, 3)

    def test_prunesSoonAfterStartInBatches(self):
        """Rows older than the retention go right after start, a batch per run, without waiting a
        full retention_interval: a host restarted hourly still prunes (SQLite store)."""
        self.makeMonitor(retention={"host_status": RetentionPolicy(max_age=DAY)},
                         retention_batch=3, retention_start_delay=10.0)
        self.clock.advance(10 * DAY)
        self.successResultOf(self.store.runInteraction(
            lambda c: c.executemany("INSERT INTO host_status (host, timestamp) VALUES ('h1', ?)",
                                    [(float(t),) for t in range(7)])))
        self.start()
        self.tick(0)

        def old():
            return self.store.rows("SELECT COUNT(*) FROM host_status WHERE timestamp < ?",
                                   (9 * DAY,))[0][0]

        self.assertEqual(old(), 7)
        self.clock.advance(10)
        self.assertEqual(old(), 4)  # one batch per run
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(old(), 0)
        self.assertGreater(self.store.rows("SELECT COUNT(*) FROM host_status")[0][0], 0)
        self.assertEqual(self.clock.seconds() - 10 * DAY, 30)  # far less than the hourly interval
        # The backlog is gone: no further run until the interval.
        self.assertEqual([c for c in self.clock.getDelayedCalls()
                          if c.func == self.monitor._retentionTick], [])

    def test_unknownTable(self):
        self.makeMonitor()
        self.failureResultOf(
            applyRetention(None, "sqlite", {"nope": RetentionPolicy(max_age=1)}, 0.0), ValueError
        )
        with self.assertRaises(ValueError):
            RetentionPolicy(max_rows=0)

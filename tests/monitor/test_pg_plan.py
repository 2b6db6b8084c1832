"""The history query's plan on a live-shaped PostgreSQL table: interleaved, unvacuumed, with
statistics that lag the last hour.  The plan is checked (EXPLAIN), never a time.

A monitor writes one row per instance per tick, so one instance's hour is spread over as many heap
pages as it has rows, autovacuum has not yet visited the newest pages, and the statistics were
gathered before the hour asked for was written.  Given a bare C{timestamp >= ?}, PostgreSQL then
walks the index on C{timestamp} alone and filters out every other instance's rows (≈ 30 ms at
200 instances instead of ≈ 3 ms): the history must probe C{(service_id, timestamp)}.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.monitor import queries
from salvusctl.monitor.service import MonitorService
from salvusctl.store import makeStore
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

SERVICES = 100
OLD_TICKS = 1500
HOUR_TICKS = 720  # one hour at 5 s
NOW = 2_000_000_000.0

FILL = (
    "INSERT INTO status (service_id, timestamp, load, percent_mem, percent_cpu, cputime, walltime,"
    " virtual_size, resident_size, threads, fds, state, nprocs)"
    " SELECT sv.id, %s + i * 5.0, 0.5, 0.1, 10.0, i, i, 1, 1, 4, 12, 'sleeping', 1"
    " FROM generate_series(%s, %s - 1) i CROSS JOIN services sv ORDER BY i, sv.id"
)


def _scans(plan: dict) -> list[tuple[str, str | None]]:
    """(node type, index name) of every node of the plan that reads C{status} or its indexes."""
    out = []
    if plan.get("Relation Name") == "status" or str(plan.get("Index Name", "")).startswith("status"):
        out.append((plan["Node Type"], plan.get("Index Name")))
    for child in plan.get("Plans", ()):
        out.extend(_scans(child))
    return out


class HistoryPlanTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 120

    db: TempDatabase | None = None
    filled = False

    @classmethod
    def setUpClass(cls):
        # One table for the class: filling it is most of the time these tests take.
        if not POSTGRES_SKIP:
            cls.db = TempDatabase().create()

    @classmethod
    def tearDownClass(cls):
        if cls.db is not None:
            cls.db.drop()

    @inlineCallbacks
    def setUp(self):
        self.store = makeStore(self.db.url, reactor)
        MonitorService(reactor, self.store, None, host_name="h1")  # its migrations
        yield self.store.start()
        self.addCleanup(self.store.close)
        start = NOW - (OLD_TICKS + HOUR_TICKS) * 5.0
        if not HistoryPlanTests.filled:
            HistoryPlanTests.filled = True
            self.db.query("ALTER TABLE status SET (autovacuum_enabled = false)")
            self.db.query(
                "INSERT INTO services (type, site, port, running, pid, host, started_at)"
                " SELECT 'web', 'web:' || g, 10000 + g, TRUE, 1000 + g, 'h1', %s"
                " FROM generate_series(0, %s - 1) g", (start, SERVICES))
            self.db.query(FILL, (start, 0, OLD_TICKS))
            self.db.query("ANALYZE")  # what autovacuum saw, before the last hour was written
            self.db.query(FILL, (start, OLD_TICKS, OLD_TICKS + HOUR_TICKS))
        self.since = NOW - 3600.0
        [(self.life,)] = self.db.query("SELECT id FROM services WHERE site = 'web:7'")
        self.statusIndexes = {
            name: definition for name, definition in self.db.query(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'status'")
        }

    def explain(self, sql: str, args: tuple) -> list[tuple[str, str | None]]:
        [(plan,)] = self.db.query("EXPLAIN (FORMAT JSON) " + sql.replace("?", "%s"), args)
        if isinstance(plan, str):
            plan = json.loads(plan)
        return _scans(plan[0]["Plan"])

    def assertProbesServiceTime(self, scans):
        self.assertTrue(scans)
        for node, index in scans:
            self.assertIn(node, ("Index Scan", "Index Only Scan", "Bitmap Index Scan",
                                 "Bitmap Heap Scan"), scans)
            if index is not None:
                self.assertIn("(service_id, \"timestamp\"", self.statusIndexes[index], scans)

    def test_bareTimeRangeWalksTheTimeIndex(self):
        """The fixture is the trap: the former query (lives as a subquery, a bare time range)
        walks C{status_time} on this table."""
        sql = ("SELECT timestamp FROM status WHERE service_id = ANY(ARRAY(SELECT id FROM services"
               " WHERE site = 'web:7' AND host = 'h1')) AND timestamp >= %s AND timestamp <= %s"
               " ORDER BY timestamp")
        scans = self.explain(sql, (self.since, 1e18))
        self.assertIn(("Index Scan", "status_time"), scans)

    def test_historyOfOneLifeProbesServiceAndTime(self):
        """One life: every read of status goes through a (service_id, timestamp) index."""
        args = (self.life, self.life, self.since, self.life, 1e18)
        self.assertProbesServiceTime(self.explain(queries.historySQL(1), args))

    def test_historyOfSeveralLivesProbesServiceAndTime(self):
        """Three lives in the range (restarts): one probe each, still never the time index."""
        args = ()
        for life in (self.life, self.life + 1, self.life + 2):
            args += (life, life, self.since, life, 1e18)
        scans = self.explain(queries.historySQL(3), args)
        self.assertProbesServiceTime(scans)
        self.assertGreaterEqual(len(scans), 3)

    @inlineCallbacks
    def test_historyReadsExactlyTheInstancesHour(self):
        """The row comparison selects this life's rows in the range and nothing else."""
        samples = yield queries.history(self.store, "h1", "web:7", self.since)
        self.assertEqual(len(samples), HOUR_TICKS)
        times = [s["timestamp"] for s in samples]
        self.assertEqual(times, sorted(times))
        self.assertGreaterEqual(times[0], self.since)
        [(count,)] = self.db.query(
            "SELECT COUNT(*) FROM status WHERE service_id = %s AND timestamp >= %s",
            (self.life, self.since))
        self.assertEqual(count, HOUR_TICKS)

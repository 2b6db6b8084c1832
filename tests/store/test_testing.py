"""MemoryStore: the synchronous in-memory store other components' unit tests use."""

from __future__ import annotations

import threading

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.interfaces import IStore
from salvusctl.store.errors import StoreClosed, StoreUnavailable
from salvusctl.store.migrations import Migration
from salvusctl.store.testing import MemoryStore


class MemoryStoreTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("monitor", [Migration(1, "m", "CREATE TABLE m (k INTEGER)")])
        self.successResultOf(self.store.start())
        self.addCleanup(self.store.close)

    def test_is_an_IStore(self):
        """The fake cannot drift from the interface the real stores provide."""
        self.assertTrue(verifyObject(IStore, self.store))

    def test_answers_synchronously_without_threads(self):
        """Results are there at once: no reactor needs to run, and no thread was started."""
        before = threading.active_count()
        sid = self.successResultOf(self.store.recordServiceStart("a", None, None, None, None, 1, 2))
        self.successResultOf(
            self.store.writeStatus([{"service_id": sid, "timestamp": self.clock.seconds(), "load": 0.5}])
        )
        latest = self.successResultOf(self.store.latestStatus())
        self.assertEqual([(r["service_id"], r["timestamp"], r["load"]) for r in latest], [(sid, 1000.0, 0.5)])
        rows = self.successResultOf(self.store.runQuery("SELECT started_at FROM services"))
        self.assertEqual(rows, [(1000.0,)])  # timestamps come from the injected clock
        self.assertEqual(threading.active_count(), before)

    def test_component_migrations_applied(self):
        """Components' own tables exist, as with the real stores."""
        self.successResultOf(self.store.runOperation("INSERT INTO m (k) VALUES (?)", (1,)))
        self.assertEqual(self.successResultOf(self.store.runQuery("SELECT k FROM m")), [(1,)])

    def test_simulated_outage(self):
        """Reads fail fast, writes wait and are replayed in order: the real stores' contract."""
        self.store.unreachable = True
        self.failureResultOf(self.store.runQuery("SELECT 1"), StoreUnavailable)
        first = self.store.runOperation("INSERT INTO m (k) VALUES (?)", (1,))
        second = self.store.runInteraction(lambda c: c.execute("INSERT INTO m (k) VALUES (2)"))
        self.assertNoResult(first)
        self.assertEqual(self.store.stats()["queued_writes"], 2)
        self.store.unreachable = False
        self.store.flushQueued()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.successResultOf(self.store.runQuery("SELECT k FROM m")), [(1,), (2,)])

    def test_close_fails_queued_writes_and_later_calls(self):
        """After close nothing hangs: waiting writes and new calls fail with StoreClosed."""
        self.store.unreachable = True
        pending = self.store.runOperation("INSERT INTO m (k) VALUES (1)")
        self.successResultOf(self.store.close())
        self.failureResultOf(pending, StoreClosed)
        self.failureResultOf(self.store.runQuery("SELECT 1"), StoreClosed)

    def test_notifications(self):
        """listen/notify deliver in-process, at once."""
        heard = []
        self.successResultOf(self.store.listen("salvus_t", heard.append))
        self.successResultOf(self.store.notify("salvus_t", "x"))
        self.assertEqual(heard, ["x"])

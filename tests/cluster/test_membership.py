"""Membership on a Clock and a MemoryStore: join, heartbeat, down detection, clean leave."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.cluster.tables import ClusterTables
from salvusctl.interfaces import ICluster, IClusterStore
from tests.cluster.helpers import MemoryCluster


class MembershipTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.a = self.cluster.member("a")
        self.b = self.cluster.member("b")

    def tearDown(self):
        self.cluster.stopAll(self)

    def states(self, member):
        return {name: peer.state for name, peer in member.membership.peers.items()}

    def test_interfaces(self):
        """The service and the tables are what the admin and other services rely on."""
        verifyObject(ICluster, self.a)
        verifyObject(IClusterStore, ClusterTables(self.cluster.store, migrate=False))

    def test_joinWritesTheHostRow(self):
        rows = self.cluster.rows("SELECT name, address, state, version, heartbeat, missed FROM cluster_hosts"
                                 " ORDER BY name")
        self.assertEqual(rows, [("a", "10.9.0.1", "up", "0.1.0", 5.0, 3),
                                ("b", "10.9.0.2", "up", "0.1.0", 5.0, 3)])
        self.assertTrue(self.a.joined.called)

    def test_heartbeatsKeepPeersUp(self):
        self.cluster.advance(60)
        self.assertEqual(self.states(self.a), {"a": "up", "b": "up"})
        seen = self.cluster.rows("SELECT last_seen FROM cluster_hosts WHERE name = 'b'")[0][0]
        self.assertEqual(seen, self.cluster.clock.seconds())

    def test_crashedPeerIsMarkedDownOnce(self):
        """A host that stops beating without leaving (a crash, a cut network) is down after
        C{missed} heartbeats, reported once, and up again when it beats again."""
        changes = []
        self.a.membership.addObserver(lambda name, old, new, peer: changes.append((name, old, new)))
        self.b._loop.stop()  # b freezes: no more heartbeats, no leave
        self.cluster.advance(15)
        self.assertEqual(self.states(self.a)["b"], "up")
        self.cluster.advance(5)
        self.assertEqual(self.states(self.a)["b"], "down")
        self.cluster.advance(30)
        self.assertEqual(changes, [("b", "up", "down")])
        self.b._loop.start(5.0, now=True)
        self.cluster.advance(5)
        self.assertEqual(self.states(self.a)["b"], "up")
        self.assertEqual(changes, [("b", "up", "down"), ("b", "down", "up")])

    def test_ownOutageMarksNoPeerDown(self):
        """A reader that could not read the store for longer than the down threshold does not
        drop every peer on its first read after it: their beats may still be in their queues."""
        changes = []
        self.a.membership.addObserver(lambda name, old, new, peer: changes.append((name, old, new)))
        store = self.cluster.store
        store.unreachable = True
        self.b._loop.stop()  # b's beats are not written until well after a's first read
        self.cluster.advance(30)
        self.assertEqual(self.states(self.a)["b"], "up")  # the last view is kept
        store.unreachable = False
        store.flushQueued()
        self.cluster.advance(5)
        self.assertEqual(self.states(self.a)["b"], "up")
        self.assertEqual(changes, [])
        # The grace is the threshold, counted from the end of the outage: then b is down.
        self.cluster.advance(15)
        self.assertEqual(self.states(self.a)["b"], "down")

    def test_cleanStopMarksLeft(self):
        """A stopped host is reported as left, not down, and its restart joins again."""
        self.successResultOf(self.b.stopService())
        self.cluster.advance(5)
        self.assertEqual(self.states(self.a)["b"], "left")
        self.cluster.advance(600)
        self.assertEqual(self.states(self.a)["b"], "left")
        again = self.cluster.member("b")
        self.cluster.advance(5)
        self.assertEqual(self.states(self.a)["b"], "up")
        self.assertTrue(again.joined.called)

    def test_hostsAsData(self):
        hosts = self.successResultOf(self.a.hosts())
        self.assertEqual([h["name"] for h in hosts], ["a", "b"])
        self.assertEqual(hosts[1]["state"], "up")
        self.assertEqual(hosts[1]["address"], "10.9.0.2")

    def test_unreachableStoreDoesNotPileUpHeartbeats(self):
        """While the store is down, one heartbeat waits in the write queue, not one per beat;
        when it returns the host beats again and peers see it up."""
        store = self.cluster.store
        store.unreachable = True
        self.cluster.advance(60)
        self.assertLessEqual(len(store._queued), 3)
        store.unreachable = False
        store.flushQueued()
        self.cluster.advance(10)  # a full beat of each, in whichever order their timers run
        self.assertEqual(self.states(self.a), {"a": "up", "b": "up"})

    def test_hostsFromMemoryWhenUnreachable(self):
        """The admin still shows the last view when the store cannot be read."""
        self.cluster.store.unreachable = True
        hosts = self.successResultOf(self.a.hosts())
        self.assertEqual([h["name"] for h in hosts], ["a", "b"])
        self.cluster.store.unreachable = False

    def test_viewReadNowIsFresh(self):
        hosts = self.successResultOf(self.a.hosts())
        self.assertEqual({(h["stale"], h["view_age"], h["stale_reason"]) for h in hosts}, {(False, 0.0, "")})

    def test_viewFromMemoryIsMarkedStaleWithItsAge(self):
        """During an outage the last view says it is stale and how old it is, and each host's
        last heartbeat is at least that old: never "seen 0.5 s ago" from a view of 30 s ago."""
        before = {h["name"]: h["age"] for h in self.successResultOf(self.a.hosts())}
        self.cluster.store.unreachable = True
        self.cluster.advance(30)
        hosts = self.successResultOf(self.a.hosts())
        self.cluster.store.unreachable = False
        self.assertTrue(all(h["stale"] for h in hosts), hosts)
        self.assertTrue(hosts[0]["stale_reason"].startswith("the store did not answer"), hosts[0])
        self.assertGreaterEqual(hosts[0]["view_age"], 25.0)
        for h in hosts:
            self.assertGreaterEqual(h["age"], before[h["name"]] + 25.0)
            self.assertEqual(h["state"], "up")  # as of the last read, which is what stale says

    def test_lastViewOlderThanTwoHeartbeatsIsStale(self):
        """The view the balancer feed and pages read without a refresh goes stale on its own."""
        self.cluster.store.unreachable = True
        self.cluster.advance(11)
        view = self.a.lastView()
        self.cluster.store.unreachable = False
        self.assertTrue(view[0]["stale"])
        self.assertIn("last read", view[0]["stale_reason"])

    def test_clusterOfOneOnSQLite(self):
        """On the SQLite store a host works as a cluster of one and says so."""
        self.assertFalse(self.a.shared)
        self.assertFalse(self.a.info()["shared"])

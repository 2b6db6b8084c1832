"""Reloading a running cluster member on a Clock: retention and drain live, identity on restart."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.cluster import reload
from salvusctl.cluster.declare import Cluster
from salvusctl.errors import ConfigError
from tests.cluster.helpers import MemoryCluster


def _handler(message):
    return None


class ClusterReloadTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.member = self.cluster.member("alpha", prune_interval=100.0, retention=1000.0)
        self.addCleanup(self.cluster.stopAll, self)
        self.context = SimpleNamespace(services={"cluster": self.member})
        self.old = [Cluster(prune_interval=100.0, retention=1000.0, handlers={"x": _handler})]

    def test_sameDeclarationIsNoChange(self):
        again = [Cluster(prune_interval=100.0, retention=1000.0, handlers={"x": _handler})]
        self.assertEqual(reload.entries(self.context, self.old, again), {})

    def test_retentionAndDrainApplyLive(self):
        new = [Cluster(prune_interval=10.0, retention=50.0, max_messages=3, drain_delay=0.0,
                       handlers={"x": _handler})]
        live = reload.entries(self.context, self.old, new)
        self.assertEqual(live, {"cluster": {"added": [], "removed": [],
                                            "changed": ["drain_delay", "max_messages", "prune_interval",
                                                        "retention"]}})
        changed = reload.applyEntries(self.context, new, live)
        self.assertEqual(sorted(changed), ["max_messages", "prune_interval", "retention"])
        self.assertEqual((self.member.retention, self.member.max_messages), (50.0, 3))
        runs: list[float] = []
        self.member._prune = lambda: runs.append(self.cluster.clock.seconds())
        self.member._pruneLoop.f = self.member._prune
        start = self.cluster.clock.seconds()
        self.cluster.advance(25)
        self.assertEqual([t - start for t in runs], [10.0, 20.0])

    def test_identityNeedsARestart(self):
        new = [Cluster(address="10.1.1.1", retention=5.0, prune_interval=100.0, handlers={"x": _handler})]
        entry = reload.entries(self.context, self.old, new)["cluster"]
        self.assertEqual(entry["changed"], ["address", "retention"])
        self.assertTrue(entry["restart"])
        self.assertIn("address", entry["reason"])

    def test_anotherHandlerNeedsARestart(self):
        new = [Cluster(prune_interval=100.0, retention=1000.0, handlers={"y": _handler})]
        self.assertTrue(reload.entries(self.context, self.old, new)["cluster"]["restart"])

    def test_addedOrRemovedNeedsARestart(self):
        added = reload.entries(self.context, [], self.old)["cluster"]
        self.assertEqual((added["added"], added["restart"]), (["cluster"], True))
        removed = reload.entries(self.context, self.old, [])["cluster"]
        self.assertEqual((removed["removed"], removed["restart"]), (["cluster"], True))

    def test_twoDeclarationsAreRefused(self):
        self.assertRaises(ConfigError, reload.entries, self.context, self.old, self.old * 2)

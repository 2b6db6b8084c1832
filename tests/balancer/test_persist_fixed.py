"""A group that follows this host's deploy and also lists servers: the listed servers' states are
kept across a restart, its instances' are not (a drain caught mid-restart would fall on the next
run's instance)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer import persist
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.balancer.service import BalancedService
from salvusctl.store.testing import MemoryStore


def decl() -> Balanced:
    return Balanced("web", listen=[], groups=[Group("workers", [Server("10.0.0.9:80")], deploy="worker")])


class FixedServersOfADeployGroupTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("balancer", persist.MIGRATIONS)
        self.successResultOf(self.store.start())

    def service(self) -> BalancedService:
        svc = BalancedService(self.clock, decl())
        svc.addHost("workers", "127.0.0.1", 8001, name="worker:0")  # as the deploy pool adds it
        return svc

    def test_fixedServerStateIsRestoredInstanceStateIsNot(self):
        svc = self.service()
        svc.host("workers", "10.0.0.9:80").setAdmin("drain")
        svc.host("workers", "10.0.0.9:80").setWeight(4)
        svc.host("workers", "worker:0").setAdmin("drain")
        self.successResultOf(persist.saveState(self.store, {"web": svc}, 1.0))
        hosts, groups = self.successResultOf(persist.loadState(self.store))
        self.assertEqual([h["host"] for h in hosts], ["10.0.0.9:80"])

        fresh = self.service()
        self.assertEqual(persist.applyState({"web": fresh}, hosts, groups), 1)
        fixed = fresh.host("workers", "10.0.0.9:80")
        self.assertEqual((fixed.admin, fixed.weight), ("drain", 4))
        self.assertEqual(fresh.host("workers", "worker:0").admin, "up")

"""The live operations API (IBalancerControl and the rest), on a running balancer."""

from __future__ import annotations

import json
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.interfaces import IBalancerControl
from tests.balancer.helpers import address, balanced, deadPort, fetch, startBackend


class OpsUnitTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        decl = Balanced("web", listen=["tcp:0"], groups=[
            Group("blue", [Server("10.0.0.1:80", name="a"), Server("10.0.0.2:80", name="b", weight=2)]),
            Group("green", [Server("10.0.0.3:80", name="c")], scheduler="leastconns"),
        ])
        self.decl = decl
        self.balancer = BalancerService(self.reactor, [decl])
        self.balancer.startService()
        self.addCleanup(self.balancer.stopService)

    def test_provides_the_interface(self):
        verifyObject(IBalancerControl, self.balancer)

    def test_snapshot_is_plain_data(self):
        """The snapshot survives a JSON round trip (what XML-RPC and pages need)."""
        snap = self.balancer.snapshot()
        self.assertEqual(json.loads(json.dumps(snap)), snap)
        web = snap["services"]["web"]
        self.assertEqual(web["active"], "blue")
        self.assertEqual([h["name"] for h in web["groups"]["blue"]["hosts"]], ["a", "b"])
        self.assertEqual(web["counters"]["open"], 0)
        for key in ("active", "total", "bytes_in", "bytes_out", "connect_failures", "retries",
                    "health_changes", "down_since", "down_reason", "next_check", "faults", "state"):
            self.assertIn(key, web["groups"]["blue"]["hosts"][0])

    def test_host_verbs(self):
        b = self.balancer
        self.assertEqual(b.addHost("web", "blue", "10.0.0.9", 81, weight=3, name="z"), "z")
        group = b.balanced["web"].groups["blue"]
        self.assertEqual([h.name for h in group.rotation], ["a", "b", "z"])
        b.drain("web", "blue", "a")
        b.disable("web", "blue", "b")
        self.assertEqual([h.name for h in group.rotation], ["z"])
        self.assertEqual((group.hosts["a"].state, group.hosts["b"].state), ("drain", "maint"))
        b.enable("web", "blue", "b")
        b.setWeight("web", "blue", "z", 5)
        self.assertEqual(group.hosts["z"].weight, 5)
        self.assertRaises(ValueError, b.setWeight, "web", "blue", "z", 0)
        self.assertRaises(ValueError, b.setHostState, "web", "blue", "z", "sideways")
        b.removeHost("web", "blue", "z")
        self.assertNotIn("z", group.hosts)
        self.assertEqual(b.removeAllHosts("web", "blue"), 2)
        self.assertEqual(group.rotation, [])
        e = self.assertRaises(KeyError, b.removeHost, "web", "blue", "nope")
        self.assertIn("no host 'nope'", str(e))
        self.assertRaises(KeyError, b.addHost, "nosuch", "blue", "10.0.0.1", 80)
        self.assertRaises(ValueError, b.addHost, "web", "blue", "10.0.0.1", 80, weight=0)

    def test_group_verbs(self):
        b = self.balancer
        b.setActiveGroup("web", "green")
        self.assertEqual(b.balanced["web"].active_group.name, "green")
        b.addGroup("web", "canary", "weighted")
        b.addHost("web", "canary", "10.0.0.7", 80)
        self.assertRaises(ValueError, b.removeGroup, "web", "green")
        b.removeGroup("web", "blue")
        self.assertEqual(sorted(b.balanced["web"].groups), ["canary", "green"])
        b.setScheduler("web", "canary", "sticky", {"ttl": 10})
        self.assertEqual(b.balanced["web"].groups["canary"].scheduler.name, "sticky")
        self.assertRaises(ValueError, b.setScheduler, "web", "canary", "nope")

    def test_dump_diff_reconcile(self):
        """The running config diverges through live ops; diff names each change; reconcile undoes it."""
        b = self.balancer
        self.assertEqual(b.diff(), [])
        b.addHost("web", "blue", "10.0.0.9", 80, name="z")
        b.setWeight("web", "blue", "a", 4)
        b.drain("web", "blue", "b")
        b.setScheduler("web", "green", "roundrobin")
        b.setActiveGroup("web", "green")
        b.addGroup("web", "extra")
        dump = b.dumpConfig()
        self.assertEqual(dump["web"]["groups"]["blue"]["hosts"]["a"]["weight"], 4)
        ops = {(op["op"], op.get("group"), op.get("host")) for op in b.diff()}
        self.assertEqual(ops, {
            ("remove-host", "blue", "z"), ("set-weight", "blue", "a"), ("set-state", "blue", "b"),
            ("set-scheduler", "green", None), ("set-active", "blue", None), ("remove-group", "extra", None),
        })
        applied = self.successResultOf(b.reconcile())
        self.assertEqual(len(applied), 6)
        self.assertEqual(b.diff(), [])
        self.assertEqual(b.dumpConfig()["web"], self.decl.asData())

    def test_reconcile_to_a_new_declaration(self):
        b = self.balancer
        new = Balanced("web", listen=["tcp:0"], groups=[Group("blue", [Server("10.0.0.1:80", name="a")])])
        other = Balanced("api", listen=["tcp:0"], groups=[Group("g", [Server("10.0.1.1:80")])])
        self.successResultOf(b.reconcile([new, other]))
        self.assertEqual(sorted(b.balanced), ["api", "web"])
        self.assertEqual(list(b.balanced["web"].groups), ["blue"])
        self.assertEqual(b.diff(), [])


class OpsSocketTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_switch_active_group_live(self):
        a = startBackend(self, b"a")
        c = startBackend(self, b"c")
        decl = Balanced("web", listen=["tcp:0:interface=127.0.0.1"], groups=[
            Group("blue", [Server(address(a))], health=HealthCheck(interval=60)),
            Group("green", [Server(address(c))], health=HealthCheck(interval=60)),
        ])
        b = BalancerService(reactor, [decl])
        b.startService()
        self.addCleanup(b.stopService)
        svc = b.balanced["web"]
        yield svc.listening
        port = svc.ports[0].getHost().port
        data, _ = yield fetch(port)
        self.assertEqual(data, b"a:hello")
        b.setActiveGroup("web", "green")
        data, _ = yield fetch(port)
        self.assertEqual(data, b"c:hello")

    @inlineCallbacks
    def test_retry_bad_host_now(self):
        """retryHost checks at once and readmits on one good check (no waiting for rise)."""
        a = startBackend(self, b"a")
        b = BalancerService(reactor, [balanced([address(a)], health=HealthCheck(interval=60, rise=5))])
        b.startService()
        self.addCleanup(b.stopService)
        host = b.balanced["svc"].groups["main"].hosts[address(a)]
        host.markDown("connect failed")
        ok = yield b.retryHost("svc", "main", address(a))
        self.assertTrue(ok)
        self.assertEqual(host.state, "up")

    @inlineCallbacks
    def test_retry_dead_host_stays_down(self):
        dead = f"127.0.0.1:{deadPort()}"
        b = BalancerService(reactor, [balanced([dead])])
        b.startService()
        self.addCleanup(b.stopService)
        host = b.balanced["svc"].groups["main"].hosts[dead]
        host.markDown("connect failed")
        ok = yield b.retryHost("svc", "main", dead)
        self.assertFalse(ok)
        self.assertEqual(host.state, "down")
        self.assertIn("connect failed", host.last_check)

    @inlineCallbacks
    def test_add_and_remove_service_live(self):
        a = startBackend(self, b"a")
        b = BalancerService(reactor, [])
        b.startService()
        self.addCleanup(b.stopService)
        ports = yield b.addBalancedService(balanced([address(a)], name="late"))
        data, _ = yield fetch(ports[0].getHost().port)
        self.assertEqual(data, b"a:hello")
        yield b.removeBalancedService("late")
        self.assertEqual(b.snapshot()["services"], {})
        self.assertRaises(KeyError, b.removeBalancedService, "late")

    @inlineCallbacks
    def test_adopted_listening_socket(self):
        """A service accepts on an inherited, already-bound socket (the hand-over seam)."""
        a = startBackend(self, b"a")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        port_number = sock.getsockname()[1]
        decl = balanced([address(a)])
        b = BalancerService(reactor, [decl])
        svc = b.balanced["svc"]
        svc.autoListen = False
        svc.adoptSocket(sock.fileno(), socket.AF_INET)
        sock.close()  # adoptStreamPort duplicated the descriptor
        b.startService()
        self.addCleanup(b.stopService)
        data, _ = yield fetch(port_number)
        self.assertEqual(data, b"a:hello")
        self.assertEqual(len(svc.ports), 1)


class HousekeepingTests(SynchronousTestCase):
    def test_sticky_cache_cleaned_periodically(self):
        """The balancer's housekeeping expires sticky entries, so an idle cache shrinks to nothing."""
        from twisted.internet.address import IPv4Address

        r = MemoryReactorClock()
        decl = Balanced("web", listen=["tcp:0"], groups=[
            Group("g", [Server("10.0.0.1:80"), Server("10.0.0.2:80")], scheduler="sticky",
                  scheduler_options={"ttl": 30}, health=HealthCheck(interval=1000))])
        b = BalancerService(r, [decl], housekeeping=10)
        b.startService()
        self.addCleanup(b.stopService)
        group = b.balanced["web"].groups["g"]
        for i in range(50):
            group.scheduler.choose(group.rotation, IPv4Address("TCP", f"10.1.0.{i}", 1))
        self.assertEqual(len(group.scheduler), 50)
        r.advance(20)
        self.assertEqual(len(group.scheduler), 50)
        r.advance(20)
        self.assertEqual(len(group.scheduler), 0)

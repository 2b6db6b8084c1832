"""One contract suite for the balancer's control surface, run against the real L{BalancerService}
and against L{salvusctl.balancer.testing.FakeBalancer}.

The admin's and the CLI's tests use the fake: whatever they assert must be what the real balancer
does (the scheduler names it takes, the errors it raises, the shape of its snapshot, what diff and
reconcile answer).  C{verifyObject} checks only method names; this suite checks behaviour.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.balancer.schedulers import SCHEDULERS, makeScheduler
from salvusctl.balancer.testing import FakeBalancer
from salvusctl.errors import ConfigError
from salvusctl.interfaces import IBalancerControl

#: service -> group -> backends, the layout every test starts from
LAYOUT = {"www": {"web": [("127.0.0.1", 8000), ("127.0.0.1", 8001)], "spare": [("127.0.0.1", 8100)]}}


def realBalancer(layout: dict[str, dict[str, list[tuple[str, int]]]]) -> BalancerService:
    """A started real balancer declaring C{layout}, on a memory reactor (it listens on nothing)."""
    reactor = MemoryReactorClock()
    declarations = [
        Balanced(service, listen=["tcp:8080"], groups=[
            Group(group, [Server(f"{address}:{port}") for address, port in hosts])
            for group, hosts in groups.items()])
        for service, groups in layout.items()
    ]
    balancer = BalancerService(reactor, declarations)
    balancer.startService()
    return balancer


def keys(value: Any, path: str = "") -> set[str]:
    """Every key path of a nested answer (lists by their first element)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}"
            out.add(here)
            out |= keys(v, here)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out |= keys(value[0], path + "[]")
    return out


def needsOptions(scheduler: str) -> bool:
    try:
        makeScheduler(scheduler, Clock())
    except ConfigError:
        return True
    return False


def opKeys(ops: list[dict]) -> list[tuple]:
    return sorted((o["op"], o["service"], o.get("group", ""), o.get("host", "")) for o in ops)


class BalancerContract:
    """The behaviour both must share; a subclass says how to make one from L{LAYOUT}."""

    def make(self, layout: dict | None = None) -> Any:
        raise NotImplementedError

    def setUp(self):
        self.b = self.make(LAYOUT)

    def group(self, name: str = "web", service: str = "www") -> dict:
        return self.b.snapshot()["services"][service]["groups"][name]

    def hostInfo(self, host: str, group: str = "web") -> dict:
        return next(h for h in self.group(group)["hosts"] if h["name"] == host)

    def test_providesTheInterface(self):
        verifyObject(IBalancerControl, self.b)

    def test_snapshotHasTheRealShape(self):
        """Plain data (it crosses XML-RPC) with exactly the real balancer's keys."""
        snapshot = self.b.snapshot()
        self.assertEqual(json.loads(json.dumps(snapshot)), snapshot)
        self.assertEqual(keys(snapshot), keys(realBalancer(LAYOUT).snapshot()))
        www = snapshot["services"]["www"]
        self.assertEqual((www["name"], www["active"], www["listen"]), ("www", "web", ["tcp:8080"]))
        self.assertEqual([h["name"] for h in www["groups"]["web"]["hosts"]],
                         ["127.0.0.1:8000", "127.0.0.1:8001"])
        self.assertEqual({(h["state"], h["admin"], h["weight"]) for h in www["groups"]["web"]["hosts"]},
                         {("up", "up", 1)})

    def test_dumpConfigHasTheRealShape(self):
        self.assertEqual(keys(self.b.dumpConfig()), keys(realBalancer(LAYOUT).dumpConfig()))

    def test_everyRealSchedulerIsAccepted(self):
        """The names the real balancer knows, and only those, live and for a new group (one that
        needs options, leastload's load source, is refused without them)."""
        for name in SCHEDULERS:
            if needsOptions(name):
                self.assertRaises(ValueError, self.b.setScheduler, "www", "web", name)
                self.assertRaises(ValueError, self.b.addGroup, "www", f"g-{name}", name)
                continue
            self.b.setScheduler("www", "web", name)
            self.assertEqual(self.group()["scheduler"], name)
            self.b.addGroup("www", f"g-{name}", name)
            self.assertEqual(self.group(f"g-{name}")["scheduler"], name)
        for name in ("leastconn", "random", "nosuch", ""):
            e = self.assertRaises(ValueError, self.b.setScheduler, "www", "web", name)
            self.assertIn("unknown scheduler", str(e))
            self.assertRaises(ValueError, self.b.addGroup, "www", "other", name)
        self.assertEqual(self.group()["scheduler"], [n for n in SCHEDULERS if not needsOptions(n)][-1])
        self.b.setScheduler("www", "web", "sticky", {"ttl": 10})
        self.assertEqual(self.group()["scheduler_options"], {"ttl": 10})
        self.assertNotIn("other", self.b.snapshot()["services"]["www"]["groups"])

    def test_addAndRemoveHosts(self):
        self.assertEqual(self.b.addHost("www", "web", "10.0.0.5", 80), "10.0.0.5:80")
        self.assertEqual(self.b.addHost("www", "web", "10.0.0.6", 80, weight=3, name="big"), "big")
        self.assertEqual(self.hostInfo("big")["weight"], 3)
        self.assertEqual(self.hostInfo("big")["address"], "10.0.0.6")
        self.b.removeHost("www", "web", "big")
        self.assertEqual([h["name"] for h in self.group()["hosts"]],
                         ["127.0.0.1:8000", "127.0.0.1:8001", "10.0.0.5:80"])
        self.assertEqual(self.b.removeAllHosts("www", "web"), 3)
        self.assertEqual(self.group()["hosts"], [])

    def test_badHostsAreRefused(self):
        """A duplicate name, a bad port or weight: refused, nothing added."""
        before = self.b.snapshot()
        self.assertRaises(KeyError, self.b.addHost, "www", "web", "10.0.0.9", 1, name="127.0.0.1:8000")
        for port in (0, 70000):
            self.assertRaises(ValueError, self.b.addHost, "www", "web", "10.0.0.9", port)
        for weight in (0, -1):
            self.assertRaises(ValueError, self.b.addHost, "www", "web", "10.0.0.9", 80, weight=weight)
        self.assertEqual(self.b.snapshot(), before)

    def test_unknownNamesAreKeyErrors(self):
        """An unknown service, group or host is a KeyError naming it (the admin's BAD_NAME)."""
        for call, args in ((self.b.addHost, ("nosuch", "web", "10.0.0.1", 80)),
                           (self.b.addHost, ("www", "nosuch", "10.0.0.1", 80)),
                           (self.b.removeHost, ("www", "web", "nosuch")),
                           (self.b.setHostState, ("www", "web", "nosuch", "drain")),
                           (self.b.setWeight, ("www", "web", "nosuch", 2)),
                           (self.b.setScheduler, ("www", "nosuch", "roundrobin")),
                           (self.b.removeAllHosts, ("www", "nosuch")),
                           (self.b.setActiveGroup, ("www", "nosuch")),
                           (self.b.removeGroup, ("www", "nosuch")),
                           (self.b.retryHost, ("www", "web", "nosuch"))):
            e = self.assertRaises(KeyError, call, *args)
            self.assertIn("nosuch", str(e), call)

    def test_hostStates(self):
        """drain/disable/enable and setHostState: the admin state and the effective state."""
        self.b.drain("www", "web", "127.0.0.1:8000")
        self.assertEqual((self.hostInfo("127.0.0.1:8000")["admin"], self.hostInfo("127.0.0.1:8000")["state"]),
                         ("drain", "drain"))
        self.b.disable("www", "web", "127.0.0.1:8000")
        self.assertEqual(self.hostInfo("127.0.0.1:8000")["state"], "maint")
        self.b.enable("www", "web", "127.0.0.1:8000")
        self.assertEqual(self.hostInfo("127.0.0.1:8000")["state"], "up")
        self.b.setHostState("www", "web", "127.0.0.1:8001", "maint")
        self.assertEqual(self.hostInfo("127.0.0.1:8001")["admin"], "maint")
        for state in ("down", "sideways", ""):
            self.assertRaises(ValueError, self.b.setHostState, "www", "web", "127.0.0.1:8001", state)

    def test_weights(self):
        self.b.setWeight("www", "web", "127.0.0.1:8000", 7)
        self.assertEqual(self.hostInfo("127.0.0.1:8000")["weight"], 7)
        for weight in (0, -3):
            self.assertRaises(ValueError, self.b.setWeight, "www", "web", "127.0.0.1:8000", weight)
        self.assertEqual(self.hostInfo("127.0.0.1:8000")["weight"], 7)

    def test_groups(self):
        """A new group is empty; the active group switches; the active one cannot be removed."""
        self.b.addGroup("www", "canary")
        canary = self.group("canary")
        self.assertEqual((canary["hosts"], canary["scheduler"]), ([], "roundrobin"))
        self.assertRaises(KeyError, self.b.addGroup, "www", "canary")
        self.assertRaises(KeyError, self.b.addGroup, "nosuch", "canary")
        self.b.setActiveGroup("www", "spare")
        self.assertEqual(self.b.snapshot()["services"]["www"]["active"], "spare")
        self.assertRaises(ValueError, self.b.removeGroup, "www", "spare")
        self.b.removeGroup("www", "web")
        self.assertEqual(sorted(self.b.snapshot()["services"]["www"]["groups"]), ["canary", "spare"])

    def test_retryHostFiresWithABoolean(self):
        d = self.b.retryHost("www", "web", "127.0.0.1:8000")
        self.assertIsInstance(self.successResultOf(d) if d.called else True, bool)
        d.addErrback(lambda f: None)

    def test_diffAndReconcileFollowTheDeclaration(self):
        """Hosts removed, added, reweighted or drained live show in diff(); reconcile() undoes
        them, answers the same operations, and leaves nothing to diff."""
        self.assertEqual(self.b.diff(), [])
        self.b.removeHost("www", "web", "127.0.0.1:8001")
        self.b.addHost("www", "spare", "10.0.0.5", 80)
        self.b.setWeight("www", "web", "127.0.0.1:8000", 4)
        self.b.drain("www", "spare", "127.0.0.1:8100")
        expected = [("add-host", "www", "web", "127.0.0.1:8001"),
                    ("remove-host", "www", "spare", "10.0.0.5:80"),
                    ("set-state", "www", "spare", "127.0.0.1:8100"),
                    ("set-weight", "www", "web", "127.0.0.1:8000")]
        self.assertEqual(opKeys(self.b.diff()), expected)
        ops = self.successResultOf(self.b.reconcile())
        self.assertEqual(opKeys(ops), expected)
        self.assertEqual(self.b.diff(), [])
        self.assertEqual(self.b.snapshot(), self.make(LAYOUT).snapshot())

    def test_reconcileToANewDeclaration(self):
        """A reload's declaration: diff(declared) shows what it changes, reconcile(declared) applies
        it and makes it the declaration."""
        new = [Balanced("www", listen=["tcp:8080"], groups=[
            Group("web", [Server("127.0.0.1:8000", weight=3), Server("127.0.0.1:8002")]),
            Group("spare", [Server("127.0.0.1:8100")])])]
        expected = [("add-host", "www", "web", "127.0.0.1:8002"),
                    ("remove-host", "www", "web", "127.0.0.1:8001"),
                    ("set-weight", "www", "web", "127.0.0.1:8000")]
        self.assertEqual(opKeys(self.b.diff(new)), expected)
        self.assertEqual(opKeys(self.successResultOf(self.b.reconcile(new))), expected)
        self.assertEqual(self.b.diff(), [])
        self.assertEqual([(h["name"], h["weight"]) for h in self.group()["hosts"]],
                         [("127.0.0.1:8000", 3), ("127.0.0.1:8002", 1)])

    def test_balancedServicesComeAndGo(self):
        """addBalancedService takes a declaration (validated first); removeBalancedService forgets it."""
        declaration = Balanced("api", listen=["tcp:8081"], groups=[Group("default")])
        self.successResultOf(self.b.addBalancedService(declaration))
        api = self.b.snapshot()["services"]["api"]
        self.assertEqual((api["active"], list(api["groups"]), api["listen"]),
                         ("default", ["default"], ["tcp:8081"]))
        self.assertRaises(ValueError, self.b.addBalancedService, Balanced("api", listen=["tcp:8082"],
                                                                          groups=[Group("default")]))
        self.assertRaises(ValueError, self.b.addBalancedService, Balanced("bad", listen=["nonsense:"],
                                                                          groups=[Group("default")]))
        self.assertNotIn("bad", self.b.snapshot()["services"])
        self.successResultOf(self.b.removeBalancedService("api"))
        self.assertNotIn("api", self.b.snapshot()["services"])
        self.assertRaises(KeyError, self.b.removeBalancedService, "api")


class RealBalancerContractTests(BalancerContract, SynchronousTestCase):
    def make(self, layout=None):
        balancer = realBalancer(layout if layout is not None else LAYOUT)
        self.addCleanup(balancer.stopService)
        return balancer


class FakeBalancerContractTests(BalancerContract, SynchronousTestCase):
    def make(self, layout=None):
        return FakeBalancer(layout if layout is not None else LAYOUT)

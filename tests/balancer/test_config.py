"""Declarations: bad config is refused at start with one clear line; good config builds and runs."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer.build import buildBalancer
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from tests.balancer.helpers import address, fetch, startBackend, tempdir


def service(**kwargs):
    groups = kwargs.pop("groups", None)
    if groups is None:
        groups = [Group("main", [Server("127.0.0.1:9000")])]
    return Balanced(kwargs.pop("name", "web"), listen=kwargs.pop("listen", ["tcp:18080"]), groups=groups,
                    **kwargs)


class BadConfigTests(SynchronousTestCase):
    def refused(self, *declarations) -> str:
        host = Host(name="t", store="sqlite::memory:", var=tempdir(self))
        for d in declarations:
            host.add(d)
        e = self.assertRaises(ConfigError, host.validate)
        return str(e)

    def test_unknown_scheduler(self):
        message = self.refused(service(groups=[Group("main", [Server("10.0.0.1:80")], scheduler="fastest")]))
        self.assertIn("unknown scheduler 'fastest'", message)
        self.assertIn("test_config.py:", message)  # names the declaring line

    def test_weight_must_be_positive(self):
        for weight in (0, -1):
            message = self.refused(service(groups=[Group("main", [Server("10.0.0.1:80", weight=weight)])]))
            self.assertIn("weight must be an integer > 0", message)
        fractional = service(groups=[Group("m", [Server("10.0.0.1:80", weight=1.5)])])
        self.assertIn("weight", self.refused(fractional))

    def test_duplicate_listen_across_services(self):
        message = self.refused(service(name="a", listen=["tcp:18080"]),
                               service(name="b", listen=["tcp:port=18080:interface=127.0.0.1"]))
        self.assertIn("listens on the same port", message)

    def test_duplicate_listen_in_one_service(self):
        self.assertIn("duplicate listen", self.refused(service(listen=["tcp:18080", "tcp:18080"])))

    def test_duplicate_service_name(self):
        message = self.refused(service(name="a", listen=["tcp:1"]), service(name="a", listen=["tcp:2"]))
        self.assertIn("two balanced services are named 'a'", message)

    def test_other_mistakes(self):
        cases = [
            (service(active="blue"), "active group 'blue' is not declared"),
            (service(all_down="panic"), "all_down must be one of"),
            (service(groups=[]), "needs at least one group"),
            (service(groups=[Group("g", [Server("nohost")])]), "must be 'host:port'"),
            (service(groups=[Group("g", [Server("h:99999")])]), "port must be 1..65535"),
            (service(groups=[Group("g", [Server("h:1"), Server("h:1")])]), "duplicate server 'h:1'"),
            (service(groups=[Group("g"), Group("g")]), "duplicate group"),
            (service(groups=[Group("g", health=HealthCheck(rise=0))]), "rise and fall must be >= 1"),
            (service(maxconn=-1), "maxconn must be >= 0"),
            (service(listen=["bogus:endpoint:x"]), "bad endpoint"),
            (service(groups=[Group("g", [Server("h:1", proxy_protocol=3)])]), "proxy_protocol"),
        ]
        for decl, expected in cases:
            self.assertIn(expected, self.refused(decl))

    def test_builder_returns_none_without_declarations(self):
        self.assertIsNone(buildBalancer(None, []))

    def test_endpoints_lists_the_listeners(self):
        self.assertEqual(service(listen=["tcp:1", "ssl:2"]).endpoints(), ["tcp:1", "ssl:2"])


class HostBuildTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_host_builds_runs_persists_and_restores(self):
        """Through the Host API: proxy traffic, change state live, restart, find the state again."""
        a = startBackend(self, b"a")
        b = startBackend(self, b"b")
        var = tempdir(self)
        decl = Balanced("web", listen=["tcp:0:interface=127.0.0.1"],
                        groups=[Group("main", [Server(address(a), name="a"), Server(address(b), name="b")],
                                      health=HealthCheck(interval=30))])

        def makeHost():
            host = Host(name="t", store="sqlite:" + os.path.join(var, "s.db"), var=var)
            host.add(decl)
            return host

        top = makeHost().build(reactor)
        top.startService()
        balancer = top.getServiceNamed("balancer")
        svc = balancer.balanced["web"]
        yield svc.listening
        yield balancer.restoring
        port = svc.ports[0].getHost().port
        for _ in range(4):
            yield fetch(port, b"x")
        balancer.setHostState("web", "main", "b", "maint")
        balancer.setWeight("web", "main", "a", 7)
        balancer.setScheduler("web", "main", "leastconns")
        yield top.stopService()

        top2 = makeHost().build(reactor)
        top2.startService()
        self.addCleanup(top2.stopService)
        balancer2 = top2.getServiceNamed("balancer")
        yield balancer2.balanced["web"].listening
        restored = yield balancer2.restoring
        self.assertEqual(restored, 2)
        hosts = balancer2.balanced["web"].groups["main"].hosts
        self.assertEqual((hosts["b"].state, hosts["a"].weight), ("maint", 7))
        self.assertEqual(hosts["a"].total + hosts["b"].total, 4)
        self.assertEqual(hosts["a"].bytes_in + hosts["b"].bytes_in, 4)
        self.assertEqual(balancer2.balanced["web"].groups["main"].scheduler.name, "leastconns")
        diff = balancer2.diff()
        self.assertIn({"op": "set-weight", "service": "web", "group": "main", "host": "a", "weight": 1,
                       "running": 7}, diff)
        yield balancer2.reconcile()
        self.assertEqual(balancer2.diff(), [])
        self.assertEqual(hosts["b"].state, "up")

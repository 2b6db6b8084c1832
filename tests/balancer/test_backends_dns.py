"""The watched backends file and the DNS cache (Clock-driven, no sockets)."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer.backends import BackendsFile, parseBackends
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.balancer.dns import DNSCache
from salvusctl.balancer.model import BackendHost
from salvusctl.errors import ConfigError
from tests.balancer.helpers import tempdir


class BackendsFileTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.path = os.path.join(tempdir(self), "web.backends")
        self.write("blue 10.0.0.1:80 weight=2 name=a\nblue 10.0.0.2:80\n")
        decl = Balanced("web", listen=["tcp:0"], groups=[Group("blue")], backends_file=self.path,
                        backends_poll=1.0)
        self.balancer = BalancerService(self.reactor, [decl])
        self.balancer.startService()
        self.addCleanup(self.balancer.stopService)
        self.svc = self.balancer.balanced["web"]

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)
        st = os.stat(self.path)
        # make each write visible to the mtime poll even within one clock tick of the filesystem
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + getattr(self, "_bump", 0) + 1))
        self._bump = getattr(self, "_bump", 0) + 1_000_000

    def hosts(self, group="blue"):
        return {n: h.weight for n, h in self.svc.groups[group].hosts.items()}

    def test_file_loaded_at_start(self):
        self.assertEqual(self.hosts(), {"a": 2, "10.0.0.2:80": 1})

    def test_changes_applied_live(self):
        """Added, removed and reweighted lines take effect at the next poll, without a restart."""
        self.write("# new set\nblue 10.0.0.1:80 weight=5 name=a\nblue 10.0.0.3:80\ngreen 10.0.1.1:80 tls\n")
        self.reactor.advance(1)
        self.assertEqual(self.hosts(), {"a": 5, "10.0.0.3:80": 1})
        self.assertEqual(self.hosts("green"), {"10.0.1.1:80": 1})
        self.assertTrue(self.svc.groups["green"].hosts["10.0.1.1:80"].tls)

    def test_bad_file_is_ignored_and_reported(self):
        watcher = self.balancer.files["web"]
        self.write("blue 10.0.0.1:80 weight=0\n")
        self.reactor.advance(1)
        self.assertEqual(self.hosts(), {"a": 2, "10.0.0.2:80": 1})
        self.assertIn(":1: ", watcher.last_error)
        self.assertIn("weight", watcher.last_error)
        self.flushLoggedErrors()

    def test_missing_file_keeps_running_config(self):
        os.remove(self.path)
        self.reactor.advance(1)
        self.assertEqual(self.hosts(), {"a": 2, "10.0.0.2:80": 1})

    def test_parse_errors_name_the_line(self):
        for text, expected in [
            ("blue\n", "expected 'group address:port"),
            ("blue 10.0.0.1:80 colour=red\n", "unknown option"),
            ("blue 10.0.0.1:80 weight=x\n", "needs a number"),
            ("b 10.0.0.1:80\nb 10.0.0.1:80\n", "duplicate host"),
        ]:
            e = self.assertRaises(ConfigError, parseBackends, text, "f")
            self.assertIn(expected, str(e))
            self.assertTrue(str(e).startswith("f:"))

    def test_watcher_survives_unexpected_errors(self):
        w = BackendsFile(self.reactor, None, self.path, 1.0)
        w.poll()  # applying to a missing service fails inside, and polling goes on
        self.assertIsNotNone(w.last_error)
        self.flushLoggedErrors()


class FakeResolver:
    def __init__(self):
        self.answers = {}
        self.calls = []

    def getHostByName(self, name, timeout=None):
        self.calls.append(name)
        answer = self.answers.get(name)
        if isinstance(answer, Deferred):
            return answer
        if answer is None:
            return fail(DNSLookupError(name))
        return succeed(answer)


class DNSTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver()
        self.cache = DNSCache(self.reactor, self.resolver, ttl=30)
        self.host = BackendHost(self.reactor, "app.lan", 80)

    def test_unresolved_name_keeps_host_out_of_rotation(self):
        self.assertIsNone(self.host.ip)
        self.assertEqual(self.host.state, "down")
        self.resolver.answers["app.lan"] = "10.0.0.5"
        self.cache.refresh([self.host])
        self.assertEqual((self.host.ip, self.host.state), ("10.0.0.5", "up"))

    def test_cached_for_ttl(self):
        self.resolver.answers["app.lan"] = "10.0.0.5"
        self.cache.refresh([self.host])
        self.cache.refresh([self.host])
        self.assertEqual(self.resolver.calls, ["app.lan"])
        self.reactor.advance(31)
        self.resolver.answers["app.lan"] = "10.0.0.6"
        self.cache.refresh([self.host])
        self.assertEqual(self.host.ip, "10.0.0.6")

    def test_failed_lookup_keeps_last_good_address(self):
        self.resolver.answers["app.lan"] = "10.0.0.5"
        self.cache.refresh([self.host])
        self.reactor.advance(31)
        del self.resolver.answers["app.lan"]
        self.cache.refresh([self.host])
        self.assertEqual((self.host.ip, self.host.state), ("10.0.0.5", "up"))
        self.assertIn("app.lan", self.cache.entries["app.lan"]["error"])

    def test_literal_addresses_are_not_looked_up(self):
        self.cache.refresh([BackendHost(self.reactor, "10.0.0.1", 80)])
        self.assertEqual(self.resolver.calls, [])

    def test_balancer_resolves_named_backends_at_start(self):
        resolver = FakeResolver()
        resolver.answers["db.lan"] = "10.9.9.9"
        decl = Balanced("db", listen=["tcp:0"], groups=[Group("g", [Server("db.lan:5432")])])
        balancer = BalancerService(self.reactor, [decl], resolver=resolver)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        host = balancer.balanced["db"].groups["g"].hosts["db.lan:5432"]
        self.assertEqual((host.ip, host.state), ("10.9.9.9", "up"))


class NamesResolverTests(SynchronousTestCase):
    def test_twisted_names_resolver_reads_hosts_file(self):
        """dns='names' uses twisted.names; a name in /etc/hosts resolves without a thread."""
        from salvusctl.balancer.dns import namesResolver

        reactor = MemoryReactorClock()
        resolver = namesResolver(reactor)
        d = resolver.getHostByName("localhost")
        self.assertIn(self.successResultOf(d), ("127.0.0.1", "::1"))

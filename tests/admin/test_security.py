"""The admin under attack, over real sockets: login bursts over TLS, lockouts, the unix socket."""

from __future__ import annotations

import os

import psutil
import treq
from twisted.internet import defer, reactor, task
from twisted.internet import ssl as tssl
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from salvusctl.admin import Admin
from salvusctl.admin.build import AdminService
from salvusctl.admin.state import AdminState
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import OP, basic, tempDir, writeUsers


class _UnixEndpoints:
    def __init__(self, path: str):
        self.path = path

    def endpointForURI(self, uri):
        return UNIXClientEndpoint(reactor, self.path)


class RealAdmin(TestCase):
    """An AdminService on real listeners of the global reactor (password checks in its threads)."""

    timeout = 60

    @defer.inlineCallbacks
    def startAdmin(self, *listen, **kw):
        self.tmp = tempDir(self)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        services = {"supervisor": FakeSupervisor(clock=reactor)}
        state = AdminState(services=services, clock=reactor, host_name="h")
        self.service = AdminService(reactor, [Admin(*listen, users=users, **kw)], state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        return ports

    def tlsAgent(self):
        with open(os.path.join(self.tmp, "admin", "admin.crt"), "rb") as f:
            authority = tssl.Certificate.loadPEM(f.read())
        pool = HTTPConnectionPool(reactor, persistent=False)
        return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=authority), pool=pool)

    @defer.inlineCallbacks
    def codes(self, agent, url, users):
        """The status codes of one request per user, all sent at once."""

        def one(user):
            d = treq.get(url, headers=basic(user), agent=agent)
            d.addCallback(lambda r: r.content().addCallback(lambda _: r.code))
            return d

        results = yield defer.gatherResults([one(u) for u in users])
        return results


class LoginBurstTests(RealAdmin):
    @defer.inlineCallbacks
    def test_concurrentGuessesOverTLSAreCountedBeforeTheyAreChecked(self):
        """200 TLS connections at once, each guessing the operator's password: at most five are
        checked (401; fewer when the per-client queue is full), the rest get 429 at once
        (before: 200x 401, 0x 429)."""
        # 200 connections from one address: above the per-address cap, which this test is not about.
        ports = yield self.startAdmin("ssl:0:interface=127.0.0.1", max_connections_per_address=256)
        url = f"https://127.0.0.1:{ports[0].getHost().port}/metrics"
        codes = yield self.codes(self.tlsAgent(), url, [("op", f"burst{n}") for n in range(200)])
        self.assertEqual(codes.count(401) + codes.count(429), 200)
        self.assertLessEqual(codes.count(401), 5)
        self.assertGreaterEqual(codes.count(429), 195)

    @defer.inlineCallbacks
    def test_unknownUserBurstIsBoundedInChecksAndMemory(self):
        """200 concurrent logins for unknown users run at most two scrypt checks at once and
        queue a bounded few; the rest get 429, and the process grows by far less than the
        65 → 256 MB seen before."""
        # 200 connections from one address: above the per-address cap, which this test is not about.
        ports = yield self.startAdmin("ssl:0:interface=127.0.0.1", max_connections_per_address=256)
        url = f"https://127.0.0.1:{ports[0].getHost().port}/metrics"
        checks = self.service.checks
        process = psutil.Process()
        before = process.memory_info().rss
        peak = {"rss": before, "running": 0}

        def sample():
            peak["rss"] = max(peak["rss"], process.memory_info().rss)
            peak["running"] = max(peak["running"], checks.running)

        sampler = task.LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(0.005)
        try:
            codes = yield self.codes(self.tlsAgent(), url, [(f"ghost{n}", "x") for n in range(200)])
        finally:
            sampler.stop()
        self.assertEqual(set(codes), {401, 429})
        self.assertGreater(codes.count(429), 100)
        self.assertLessEqual(peak["running"], checks.concurrency)
        self.assertLess(peak["rss"] - before, 96 * 1024 * 1024)
        self.assertLessEqual(self.service.limiter.size(), 2 * self.service.limiter.max_clients)


class LockoutTests(RealAdmin):
    @defer.inlineCallbacks
    def test_operatorNotLockedOutByOthersAndTheUnixSocketStaysTheWayIn(self):
        """Five wrong passwords for another user from 127.0.0.1 leave the operator's correct
        password working there on HTTPS and loopback HTTP (before: 429 on both for 60 s).  Five
        wrong guesses at the operator itself lock that name at that address, but the unix socket
        (keyed by the peer's uid) still lets the operator in."""
        sock = os.path.join(tempDir(self), "admin.sock")
        ports = yield self.startAdmin(
            "ssl:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", f"unix:{sock}"
        )
        by_type = {type(p).__name__: p for p in ports}
        tls = self.tlsAgent()
        plain = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        https = f"https://127.0.0.1:{ports[0].getHost().port}/metrics"
        http = f"http://127.0.0.1:{ports[1].getHost().port}/metrics"
        self.assertIn("Port", by_type)
        for _ in range(5):
            self.assertEqual((yield self.codes(plain, http, [("view", "wrong")])), [401])
        self.assertEqual((yield self.codes(tls, https, [OP])), [200])
        self.assertEqual((yield self.codes(plain, http, [OP])), [200])
        for _ in range(5):
            yield self.codes(plain, http, [("op", "wrong")])
        self.assertEqual((yield self.codes(plain, http, [OP])), [429])
        local = Agent.usingEndpointFactory(reactor, _UnixEndpoints(sock), HTTPConnectionPool(reactor, False))
        self.assertEqual((yield self.codes(local, "http://localhost/metrics", [OP])), [200])

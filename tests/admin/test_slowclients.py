"""Slow clients: a deadline for the request head and a cap on connections per address.

Unit tests drive L{GuardedSite} with a C{Clock} and C{StringTransport}s; the real-socket tests
run 500 slow clients against a real admin listener while a normal client is served."""

from __future__ import annotations

import os

import treq
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from salvusctl.admin import Admin
from salvusctl.admin.build import AdminService
from salvusctl.admin.slowclients import GuardedSite
from salvusctl.admin.state import AdminState
from salvusctl.errors import ConfigError
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import VIEW, basic, tempDir, writeUsers


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


def _address(host: str = "192.0.2.7", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class HeadDeadlineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.site = GuardedSite(_Hello(), reactor=self.clock, headTimeout=10, maxPerAddress=4)

    def connect(self, address=None):
        address = address or _address()
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        return channel, transport

    def test_slowHeadIsCutAtTheDeadline(self):
        """One header byte every second keeps Twisted's idle timeout at bay for ever; the head
        deadline counts from the connection, not from the last byte."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: admin\r\nX-Slow: ")
        for _ in range(9):
            self.clock.advance(1)
            channel.dataReceived(b"a")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"), transport.value())
        self.assertEqual(self.site.headTimeouts, 1)

    def test_abortedWhenTheClientDoesNotGoAway(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.clock.advance(channel.abortTimeout)
        self.assertTrue(transport.disconnected)  # abortConnection

    def test_idleConnectionClosesSilently(self):
        """Nothing sent: closed without a 408 (a keep-alive client would read it as an answer)."""
        channel, transport = self.connect()
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_headInTimeIsServedAndKeepAliveGetsANewDeadline(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: admin\r\n\r\n")
        self.assertIn(b"hello", transport.value())
        self.clock.advance(9.5)
        self.assertFalse(transport.disconnecting)
        transport.clear()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: admin\r\n\r\n")  # the deadline restarted
        self.assertIn(b"hello", transport.value())
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(b"408", transport.value())

    def test_pipelinedRequestsAreNotCutByTheDeadline(self):
        """A second request buffered behind the first has its whole head already: no deadline
        may fire while it is served."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: admin\r\n\r\n" * 2)
        self.assertEqual(transport.value().count(b"hello"), 2)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.headTimeouts, 1)

    def test_noTimerLeftAfterTheConnectionCloses(self):
        channel, transport = self.connect()
        channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PerAddressCapTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.site = GuardedSite(_Hello(), reactor=self.clock, headTimeout=10, maxPerAddress=2)

    def connect(self, address):
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        return channel, transport

    def test_beyondTheCapIsClosedAtOnceOthersAreServed(self):
        held = [self.connect(_address(port=p)) for p in (1, 2)]
        _, refused = self.connect(_address(port=3))
        self.assertTrue(refused.disconnected)  # aborted, before any byte (or TLS handshake)
        self.assertEqual(self.site.refused, 1)
        other, transport = self.connect(_address("192.0.2.8"))
        other.dataReceived(b"GET / HTTP/1.1\r\nHost: admin\r\n\r\n")
        self.assertIn(b"hello", transport.value())
        self.assertEqual(self.site.open, {"192.0.2.7": 2, "192.0.2.8": 1})
        held[0][0].connectionLost(None)
        _, again = self.connect(_address(port=4))
        self.assertFalse(again.disconnecting)
        self.assertEqual(self.site.open["192.0.2.7"], 2)
        for channel, _ in held[1:]:
            channel.connectionLost(None)
        self.assertEqual(self.site.open["192.0.2.7"], 1)

    def test_unixSocketHasNoCap(self):
        transports = [self.connect(UNIXAddress(None))[1] for _ in range(5)]
        self.assertFalse(any(t.disconnecting for t in transports))
        self.assertEqual(self.site.open, {})

    def test_declarationChecksTheBounds(self):
        for kw in ({"header_timeout": 0}, {"header_timeout": "10"}, {"max_connections_per_address": 0},
                   {"max_connections_per_address": True}):
            self.assertRaises(ConfigError, Admin("tcp:0:interface=127.0.0.1", **kw).validate, None)


class _Slow(protocol.Protocol):
    """Sends a partial request head, then one byte every C{interval} seconds until closed."""

    interval = 0.5

    def __init__(self):
        self.received = b""
        self.closed = defer.Deferred()
        self.call = None

    def connectionMade(self):
        self.opened = reactor.seconds()
        self.transport.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        self.call = reactor.callLater(self.interval, self.drip)

    def drip(self):
        self.transport.write(b"a")
        self.call = reactor.callLater(self.interval, self.drip)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.closed.callback(reactor.seconds() - self.opened)


class SlowClientsOverRealSocketsTests(TestCase):
    """500 slow clients from 127.0.0.2 against a real admin listener; a normal client from
    127.0.0.1 is served meanwhile, and every slow client is gone within the head deadline."""

    timeout = 60

    @defer.inlineCallbacks
    def startAdmin(self, *listen, **kw):
        tmp = tempDir(self)
        users = os.path.join(tmp, "users")
        writeUsers(users)
        state = AdminState(services={"supervisor": FakeSupervisor(clock=reactor)}, clock=reactor,
                           host_name="h")
        self.service = AdminService(reactor, [Admin(*listen, users=users, **kw)], state, tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        return ports[0].getHost().port

    @defer.inlineCallbacks
    def test_500SlowClientsDoNotStopANormalOne(self):
        """Measured here: the normal request answered in about 0.08 s (1.06 s with Twisted's
        accept backlog of 50: its SYN waited for a retransmission), 20 slow clients held to the
        2 s deadline and cut with 408, 480 closed at once, all gone 2.0 s after the first."""
        port = yield self.startAdmin("tcp:0:interface=127.0.0.1", header_timeout=2,
                                     max_connections_per_address=20)
        site = self.service.sites[0]
        peak = {"open": 0}

        def sample():
            peak["open"] = max(peak["open"], site.open.get("127.0.0.2", 0))

        sampler = task.LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(0.01)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                      bindAddress=("127.0.0.2", 0))
        factory = protocol.Factory.forProtocol(_Slow)
        started = reactor.seconds()
        slow = yield defer.gatherResults([endpoint.connect(factory) for _ in range(500)])
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        before = reactor.seconds()
        response = yield treq.get(f"http://127.0.0.1:{port}/metrics", headers=basic(VIEW), agent=agent)
        body = yield response.content()
        served = reactor.seconds() - before
        self.assertEqual(response.code, 200, body[:200])
        self.assertLess(served, 1.0)  # no SYN retransmission, no wait for a slow client's deadline
        lifetimes = yield defer.gatherResults([p.closed for p in slow])
        total = reactor.seconds() - started
        timed_out = [p for p in slow if p.received.startswith(b"HTTP/1.1 408")]
        refused = [p for p in slow if p.received == b""]
        self.assertEqual(len(timed_out) + len(refused), 500)
        self.assertGreaterEqual(len(timed_out), 20)  # the cap's worth, each held to its deadline
        self.assertLessEqual(peak["open"], 20)
        self.assertLess(max(lifetimes), 2 + 3)
        self.assertLess(total, 15)
        self.assertEqual((site.refused, site.headTimeouts, site.open), (len(refused), len(timed_out), {}))

    @defer.inlineCallbacks
    def test_slowHeadAfterTheTLSHandshakeIsCut(self):
        """The issue's own attack: a TLS handshake, a partial head, a byte at a time."""
        port = yield self.startAdmin("ssl:0:interface=127.0.0.1", header_timeout=1)
        # CertificateOptions() checks no certificate: the client only needs the handshake done.
        client = SSL4ClientEndpoint(reactor, "127.0.0.1", port, ssl.CertificateOptions())
        factory = protocol.Factory.forProtocol(_Slow)
        slow = yield defer.gatherResults([client.connect(factory) for _ in range(3)])
        lifetimes = yield defer.gatherResults([p.closed for p in slow])
        self.assertTrue(all(p.received.startswith(b"HTTP/1.1 408") for p in slow), [p.received for p in slow])

        self.assertLess(max(lifetimes), 1 + 2)

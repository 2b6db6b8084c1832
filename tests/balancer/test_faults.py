"""Backend faults behind a real round trip: a connect that fails after C{connect()} returned.

On loopback a refused connect is already known when C{connect()} returns.  On any real network it
arrives a round trip later, as an error event on the socket waiting to become writable — and that
is the path where a client used to hang forever.  These tests put the backends behind C{tc netem
delay 2ms}'s
round trip, in a network namespace of their own (L{tests.balancer.netns}).
"""

from __future__ import annotations

import socket

from twisted.internet import defer, error, main, protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import HealthCheck
from salvusctl.balancer.fastpath import LeanConnection, connectTCP
from tests.balancer import netns
from tests.balancer.helpers import balanced, request
from tests.helpers import freePort, waitFor


class _Failed(protocol.ClientFactory):
    def __init__(self):
        self.failed: Deferred = Deferred()

    def buildProtocol(self, addr):  # pragma: no cover - the connect never completes
        raise AssertionError("connected")

    def clientConnectionFailed(self, connector, reason):
        self.failed.callback(reason.value)


class LeanConnectLostTests(TestCase):
    """The reactor's disconnect path on a connect still in progress, on loopback."""

    timeout = 10

    @inlineCallbacks
    def test_disconnectEventBeforeConnectIsAConnectFailure(self):
        """
        An error event on a socket still connecting reaches C{clientConnectionFailed} — it used to
        call C{connectionLost} of a protocol that did not exist yet, and nobody heard of it.
        """
        # A listener with a full accept queue drops further SYNs: the connect stays in progress.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        self.addCleanup(listener.close)
        fill = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fill.append(s)
        self.addCleanup(lambda: [s.close() for s in fill])
        factory = _Failed()
        conn = connectTCP(reactor, "127.0.0.1", listener.getsockname()[1], factory)
        self.assertIsInstance(conn, LeanConnection)
        if conn.connected:  # pragma: no cover - a kernel that queues more than asked
            raise self.skipTest("the connect completed at once")
        # What the epoll reactor does with EPOLLERR|EPOLLHUP on a descriptor it only writes to.
        reactor._disconnectSelectable(conn, Failure(main.CONNECTION_LOST).value, False)
        reason = yield factory.failed
        self.assertIsInstance(reason, error.ConnectError)
        self.assertTrue(conn.disconnected)
        self.assertNotIn(conn, reactor.getWriters())
        conn.disconnect()  # a later timeout or client close finds nothing left to do
        self.assertEqual(self.flushLoggedErrors(), [])


class RoundTripFaultTests(TestCase):
    """Backends in a namespace behind a 2 ms round trip; the balancer in this process."""

    timeout = 60

    def setUp(self):
        why = netns.unavailable()
        if why:
            raise self.skipTest("SKIPPED LOUDLY: balancer fault tests behind a real round trip "
                                "did not run: " + why)
        self.ns = netns.DelayedNamespace(self)
        return self.ns.make()

    @inlineCallbacks
    def startBalancer(self, servers, **kwargs):
        health = kwargs.pop("health", HealthCheck(interval=60.0, timeout=1.0))
        decl = balanced(servers, health=health, **kwargs)
        balancer = BalancerService(reactor, [decl], wheel_resolution=0.05)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced[decl.name]
        yield svc.listening
        return svc, svc.ports[0].getHost().port

    def assertExact(self, svc):
        self.assertEqual(svc.open, 0)
        self.assertEqual({h.name: h.active for _, h in svc.hosts()}, {h.name: 0 for _, h in svc.hosts()})

    @inlineCallbacks
    def test_closedPortBehindARoundTripIsRetriedOnTheNextHost(self):
        """A refusal that arrives after C{connect()} returned sends the client to the next host."""
        port = freePort()
        yield self.ns.backend(port, "good")
        closed = f"{self.ns.inside}:{port + 1 if port < 65535 else port - 1}"
        svc, listen = yield self.startBalancer([closed, f"{self.ns.inside}:{port}"], retries=2,
                                               connect_timeout=2.0)
        answers = []
        for _ in range(4):
            answers.append((yield request(listen, patience=5.0)))
        self.assertEqual(answers, [b"good:hello"] * 4)
        host = svc.groups["main"].hosts[closed]
        self.assertEqual(host.state, "down")
        self.assertIn("connect failed", host.down_reason)
        self.assertEqual(svc.retried, 1)
        yield waitFor(lambda: svc.open == 0)
        self.assertExact(svc)
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_onlyAClosedPortClosesTheClientWithTheReason(self):
        """With nothing else to try, the client is closed (not left waiting) and counted refused."""
        closed = f"{self.ns.inside}:{freePort()}"
        svc, listen = yield self.startBalancer([closed], retries=1, connect_timeout=2.0)
        got = yield request(listen, patience=5.0)
        self.assertEqual(got, b"")
        self.assertEqual(svc.refused, 1)
        self.assertEqual(svc.connect_failures, 1)
        yield waitFor(lambda: svc.open == 0)
        self.assertExact(svc)

    @inlineCallbacks
    def test_killNineOfOneOfThreeBackendsUnderLoadHangsNoClient(self):
        """
        kill -9 of one of 3 backends in the middle of bounded load: no client hangs, only the
        dead backend's in-flight requests may fail, and every count returns to zero.
        """
        base = freePort()
        ports = [base, base + 1, base + 2] if base < 65000 else [base, base - 1, base - 2]
        procs = yield defer.gatherResults([self.ns.backend(p, f"b{i}") for i, p in enumerate(ports)])
        servers = [f"{self.ns.inside}:{p}" for p in ports]
        svc, listen = yield self.startBalancer(servers, retries=3, connect_timeout=2.0)
        total, concurrency, kill_at = 600, 20, 150
        results: list = []
        in_flight_at_kill: list[int] = []
        sent_at_kill: list[int] = []
        started = [0]
        finished = Deferred()

        def one(_=None):
            if started[0] >= total:
                return
            started[0] += 1
            d = request(listen, patience=10.0)
            d.addCallback(results.append)
            d.addCallback(lambda _: maybeKill())
            d.addCallback(lambda _: finished.callback(None) if len(results) == total else one())

        def maybeKill():
            if len(results) == kill_at:
                host = svc.groups["main"].hosts[servers[1]]
                in_flight_at_kill.append(host.active)
                sent_at_kill.append(host.total)
                procs[1].kill()

        for _ in range(concurrency):
            one()
        yield finished
        hung = results.count("hung")
        failed = sum(1 for r in results if r in (b"", None))
        ok = sum(1 for r in results if isinstance(r, bytes) and r.endswith(b":hello"))
        self.assertEqual(hung, 0, f"{hung} clients hung")
        self.assertEqual(ok + failed, total)
        # SIGKILL takes effect a moment after kill() returns: what was sent to the backend in
        # that moment was in flight on it too.  Nothing else may fail.
        sent_after = svc.groups["main"].hosts[servers[1]].total - sent_at_kill[0]
        self.assertLessEqual(failed, in_flight_at_kill[0] + sent_after)
        self.assertTrue(any(r == b"b1:hello" for r in results[:kill_at]))
        self.assertEqual(svc.groups["main"].hosts[servers[1]].state, "down")
        yield waitFor(lambda: svc.open == 0)
        self.assertExact(svc)
        self.assertEqual(self.flushLoggedErrors(), [])


class TLSContextPerHostTests(TestCase):
    """Each backend host keeps the TLS context it declared, across live removals and additions."""

    def test_twoHundredAddRemoveCyclesKeepEachHostsContext(self):
        """
        A context cached by C{id(host)} outlived its host: a new host reusing the id was handed
        a removed host's C{verify=False} context — a silent TLS downgrade.
        """
        from twisted.internet import ssl

        from salvusctl.balancer.service import BalancedService

        svc = BalancedService(reactor, balanced([]))

        def tables():
            return {k: len(v) for k, v in vars(svc).items() if isinstance(v, dict)}

        before = tables()
        kept = []
        for i in range(200):
            verify = i % 2 == 1
            host = svc.addHost("main", "127.0.0.1", 10000 + i, tls=True, tls_verify=verify)
            context = svc._tlsContext(host)
            self.assertEqual(isinstance(context, ssl.CertificateOptions), not verify, f"cycle {i}")
            if verify:
                kept.append(host)
            else:
                svc.removeHost("main", host.name)
            del host, context  # a removed host is freed: its id may be the next host's
        for host in kept:
            self.assertNotIsInstance(svc._tlsContext(host), ssl.CertificateOptions)
        # Nothing of a removed host stays on the service (such a table keyed by id(host) is how
        # a new host came to be handed a removed one's context).
        self.assertEqual(tables(), before)


class ListenBacklogTests(TestCase):
    """A balancer listener's backlog is the system's somaxconn, not Twisted's 50."""

    @inlineCallbacks
    def test_tcpPortListensWithSomaxconn(self):
        """With 50, 74 % of a 1,000-connect burst waited >= 1 s for a SYN retransmit."""
        from salvusctl.balancer.service import somaxconn

        balancer = BalancerService(reactor, [balanced([])])
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced["svc"]
        yield svc.listening
        self.assertEqual(svc.ports[0].backlog, somaxconn())
        self.assertGreater(somaxconn(), 50)

    def test_anExplicitBacklogIsKept(self):
        from salvusctl.balancer.service import withBacklog

        self.assertEqual(withBacklog("tcp:80:backlog=10"), "tcp:80:backlog=10")
        self.assertEqual(withBacklog("unix:/x"), "unix:/x")
        self.assertEqual(withBacklog("tcp:80", 7), "tcp:80:backlog=7")

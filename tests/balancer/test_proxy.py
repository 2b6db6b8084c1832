"""End to end on real sockets: proxying, retries, all-down policy, drain, maxconn and the queue."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Server
from tests.balancer.helpers import address, balanced, deadPort, fetch, openHolding, startBackend


@inlineCallbacks
def startBalancer(testcase, decl):
    """A started L{BalancerService} for C{decl}, listening, stopped at cleanup."""
    balancer = BalancerService(reactor, [decl], wheel_resolution=0.05)
    balancer.startService()
    testcase.addCleanup(balancer.stopService)
    yield balancer.balanced[decl.name].listening
    return balancer


def later(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class ProxyTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def startBalancer(self, decl):
        balancer = yield startBalancer(self, decl)
        self.port = balancer.balanced[decl.name].ports[0].getHost().port
        return balancer

    @inlineCallbacks
    def test_proxies_bytes_both_ways(self):
        """A client's bytes reach the backend and the backend's answer reaches the client."""
        a = startBackend(self, b"a")
        balancer = yield self.startBalancer(balanced([address(a)]))
        data, clean = yield fetch(self.port, b"ping")
        self.assertEqual(data, b"a:ping")
        self.assertTrue(clean)
        host = balancer.balanced["svc"].groups["main"].hosts[address(a)]
        self.assertEqual((host.bytes_in, host.bytes_out, host.total), (4, 6, 1))
        yield later(0.05)
        self.assertEqual(host.active, 0)
        self.assertEqual(balancer.balanced["svc"].open, 0)

    @inlineCallbacks
    def test_roundrobin_spreads_over_backends(self):
        """Round robin sends successive clients to successive hosts."""
        backends = [startBackend(self, n) for n in (b"a", b"b", b"c")]
        yield self.startBalancer(balanced([address(b) for b in backends]))
        answers = []
        for _ in range(6):
            data, _ = yield fetch(self.port, b"x")
            answers.append(data)
        self.assertEqual(sorted(answers), sorted([b"a:x", b"b:x", b"c:x"] * 2))

    @inlineCallbacks
    def test_dead_backend_retried_on_another_host(self):
        """A client whose backend refuses is retried on a good host, and the bad host is marked down."""
        good = startBackend(self, b"good")
        dead = f"127.0.0.1:{deadPort()}"
        balancer = yield self.startBalancer(balanced([dead, address(good)], retries=2))
        for _ in range(3):
            data, clean = yield fetch(self.port, b"x")
            self.assertEqual(data, b"good:x")
        svc = balancer.balanced["svc"]
        host = svc.groups["main"].hosts[dead]
        self.assertEqual(host.state, "down")
        self.assertIn("connect failed", host.down_reason)
        self.assertEqual(host.connect_failures, 1)
        self.assertEqual(host.faults, 1)
        self.assertIsNotNone(host.down_since)
        self.assertEqual(svc.retried, 1)
        self.assertEqual(svc.refused, 0)

    @inlineCallbacks
    def test_all_hosts_down_refuses_cleanly(self):
        """With every host dead the client is closed cleanly (FIN, not reset) and counted refused."""
        decl = balanced([f"127.0.0.1:{deadPort()}", f"127.0.0.1:{deadPort()}"], retries=5)
        balancer = yield self.startBalancer(decl)
        data, clean = yield fetch(self.port, b"x")
        self.assertEqual((data, clean), (b"", True))
        data, clean = yield fetch(self.port, b"x")
        self.assertEqual((data, clean), (b"", True))
        svc = balancer.balanced["svc"]
        self.assertEqual(svc.refused, 2)
        self.assertEqual([h.state for h in svc.groups["main"].hosts.values()], ["down", "down"])
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_all_down_aggressive_tries_down_hosts(self):
        """In aggressive mode, hosts marked down are tried again when no host is up."""
        a = startBackend(self, b"a")
        balancer = yield self.startBalancer(balanced([address(a)], all_down="aggressive"))
        host = balancer.balanced["svc"].groups["main"].hosts[address(a)]
        host.markDown("test")
        data, _ = yield fetch(self.port, b"x")
        self.assertEqual(data, b"a:x")

    @inlineCallbacks
    def test_retries_exhausted_closes_client(self):
        """Retries are bounded: with retries=0 a failed connect closes the client."""
        a = startBackend(self, b"a")
        dead = f"127.0.0.1:{deadPort()}"
        balancer = yield self.startBalancer(balanced([dead, address(a)], retries=0))
        data, clean = yield fetch(self.port, b"x")
        self.assertEqual((data, clean), (b"", True))
        self.assertEqual(balancer.balanced["svc"].refused, 1)

    @inlineCallbacks
    def test_drain_keeps_open_connections_and_sends_new_ones_elsewhere(self):
        """A drained host takes no new clients but its open connections carry on."""
        a = startBackend(self, b"a", mode="echo")
        b = startBackend(self, b"b", mode="echo")
        balancer = yield self.startBalancer(balanced([address(a), address(b)]))
        client = yield openHolding(self, self.port)
        client.transport.write(b"1")
        data = yield client.next()
        first = data[:1]
        drained = address(a) if first == b"a" else address(b)
        balancer.drain("svc", "main", drained)
        for _ in range(3):
            other = yield openHolding(self, self.port)
            other.transport.write(b"x")
            got = yield other.next()
            self.assertNotEqual(got[:1], first)
            other.transport.loseConnection()
            yield other.lost
        client.transport.write(b"2")
        data = yield client.next()
        self.assertTrue(data.endswith(first + b":2"))
        info = balancer.snapshot()["services"]["svc"]["groups"]["main"]["hosts"]
        states = {h["name"]: (h["state"], h["active"]) for h in info}
        self.assertEqual(states[drained], ("drain", 1))

    @inlineCallbacks
    def test_service_maxconn_queues_then_refuses_when_queue_full(self):
        """Beyond maxconn clients wait in the queue; beyond the queue they are refused cleanly."""
        a = startBackend(self, b"a", mode="echo")
        balancer = yield self.startBalancer(balanced([address(a)], maxconn=1, queue=1, queue_timeout=10))
        svc = balancer.balanced["svc"]
        first = yield openHolding(self, self.port)
        first.transport.write(b"1")
        yield first.next()
        second = yield openHolding(self, self.port)
        second.transport.write(b"2")
        yield later(0.1)
        self.assertEqual(svc.queued, 1)
        self.assertEqual(second.data, b"")
        data, clean = yield fetch(self.port, b"3")
        self.assertEqual((data, clean), (b"", True))
        self.assertEqual(svc.refused, 1)
        first.transport.loseConnection()
        data = yield second.next()
        self.assertEqual(data, b"a:2")
        self.assertEqual(svc.queued, 0)

    @inlineCallbacks
    def test_host_maxconn_queues_until_a_slot_frees(self):
        """A host at its maxconn is skipped; when all are full clients queue for the first free slot."""
        a = startBackend(self, b"a", mode="echo")
        balancer = yield self.startBalancer(balanced([Server(address(a), maxconn=1)], queue=5))
        svc = balancer.balanced["svc"]
        first = yield openHolding(self, self.port)
        first.transport.write(b"1")
        yield first.next()
        second = yield openHolding(self, self.port)
        second.transport.write(b"2")
        yield later(0.1)
        self.assertEqual((svc.queued, second.data), (1, b""))
        first.transport.loseConnection()
        data = yield second.next()
        self.assertEqual(data, b"a:2")

    @inlineCallbacks
    def test_queue_timeout_closes_waiting_client(self):
        """A client that waits longer than queue_timeout is closed and counted."""
        a = startBackend(self, b"a", mode="echo")
        balancer = yield self.startBalancer(balanced([address(a)], maxconn=1, queue=3, queue_timeout=0.2))
        first = yield openHolding(self, self.port)
        first.transport.write(b"1")
        yield first.next()
        data, clean = yield fetch(self.port, b"2")
        self.assertEqual((data, clean), (b"", True))
        svc = balancer.balanced["svc"]
        self.assertEqual((svc.queue_timeouts, svc.queued), (1, 0))

    @inlineCallbacks
    def test_client_idle_timeout_closes_both_sides(self):
        """An idle connection is closed by the shared wheel after client_timeout."""
        a = startBackend(self, b"a", mode="echo")
        balancer = yield self.startBalancer(balanced([address(a)], client_timeout=0.2, server_timeout=0))
        client = yield openHolding(self, self.port)
        client.transport.write(b"1")
        yield client.next()
        data = yield client.lost
        self.assertEqual(data, b"a:1")
        self.assertEqual(balancer.balanced["svc"].idle_timeouts, 1)

    @inlineCallbacks
    def test_many_concurrent_clients_all_served(self):
        """A burst of clients is served completely and the counters add up."""
        backends = [startBackend(self, n) for n in (b"a", b"b")]
        balancer = yield self.startBalancer(balanced([address(b) for b in backends], scheduler="leastconns"))
        results = yield gatherResults([fetch(self.port, b"%d" % i) for i in range(100)])
        self.assertEqual(len([d for d, clean in results if clean and d[1:2] == b":"]), 100)
        svc = balancer.balanced["svc"]
        yield later(0.05)
        self.assertEqual(svc.total, 100)
        self.assertEqual(svc.open, 0)
        self.assertEqual(sum(h.total for _, h in svc.hosts()), 100)


class BackendDeathTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_stream_of_clients_survives_a_backend_dying(self):
        """While clients keep coming, a backend stops listening: no client is dropped."""
        backends = [startBackend(self, n) for n in (b"a", b"b", b"c")]
        balancer = BalancerService(reactor, [balanced([address(b) for b in backends], retries=3)],
                                   wheel_resolution=0.05)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced["svc"]
        yield svc.listening
        port = svc.ports[0].getHost().port
        dying = address(backends[1])
        failures = 0
        for i in range(150):
            if i == 30:
                yield backends[1].port.stopListening()
            batch = yield gatherResults([fetch(port, b"x") for _ in range(4)])
            failures += sum(1 for data, _ in batch if not data.endswith(b":x"))
        self.assertEqual(failures, 0)
        host_b = svc.groups["main"].hosts[dying]
        self.assertEqual(host_b.state, "down")
        self.assertGreaterEqual(svc.retried, 1)
        self.assertEqual(svc.refused, 0)


class StickyEndToEndTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_sticky_client_keeps_its_backend(self):
        """Through real sockets, one client IP lands on one backend every time."""
        backends = [startBackend(self, n) for n in (b"a", b"b", b"c")]
        for scheduler in ("sticky", "sourcehash"):
            balancer = BalancerService(reactor, [balanced([address(b) for b in backends], scheduler=scheduler,
                                                          name=scheduler)])
            balancer.startService()
            self.addCleanup(balancer.stopService)
            svc = balancer.balanced[scheduler]
            yield svc.listening
            answers = set()
            for _ in range(9):
                data, _ = yield fetch(svc.ports[0].getHost().port, b"x")
                answers.add(data)
            self.assertEqual(len(answers), 1, (scheduler, answers))


class HalfCloseTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_client_half_close_still_gets_the_answer(self):
        """A client that sends, shuts down writing and waits (nc -N style) gets the whole answer."""
        from twisted.internet.interfaces import IHalfCloseableProtocol
        from twisted.internet.protocol import Factory, Protocol
        from zope.interface import implementer

        @implementer(IHalfCloseableProtocol)
        class AnswerAtEOF(Protocol):
            """Answers only after the request is complete (EOF), like a one-shot RPC server."""

            def connectionMade(self):
                self.request = b""

            def dataReceived(self, data):
                self.request += data

            def readConnectionLost(self):
                self.transport.write(b"answer to " + self.request)
                self.transport.loseConnection()

            def writeConnectionLost(self):
                pass

        backend_port = reactor.listenTCP(0, Factory.forProtocol(AnswerAtEOF), interface="127.0.0.1")
        self.addCleanup(backend_port.stopListening)
        balancer = BalancerService(reactor, [balanced([f"127.0.0.1:{backend_port.getHost().port}"])])
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced["svc"]
        yield svc.listening
        done: Deferred = Deferred()

        @implementer(IHalfCloseableProtocol)
        class Client(Protocol):
            def connectionMade(self):
                self.data = b""
                self.transport.write(b"question")
                self.transport.loseWriteConnection()

            def dataReceived(self, data):
                self.data += data

            def readConnectionLost(self):
                self.transport.loseConnection()

            def writeConnectionLost(self):
                pass

            def connectionLost(self, reason):
                done.callback(self.data)

        from twisted.internet.protocol import ClientFactory

        class F(ClientFactory):
            def buildProtocol(self, addr):
                return Client()

        reactor.connectTCP("127.0.0.1", svc.ports[0].getHost().port, F())
        data = yield done
        self.assertEqual(data, b"answer to question")
        yield later(0.05)
        self.assertEqual((svc.open, sum(h.active for _, h in svc.hosts())), (0, 0))


class LateRefusalTests(TestCase):
    """A backend connect that fails after C{connect()} returned, as every refusal does across a
    real network: the client is retried on the next host or closed, never left hanging."""

    timeout = 20

    @inlineCallbacks
    def startBalancer(self, decl):
        balancer = yield startBalancer(self, decl)
        return balancer.balanced[decl.name]

    def pending(self):
        from tests.helpers import PendingPort

        p = PendingPort()
        self.addCleanup(p.close)
        return p

    @inlineCallbacks
    def test_late_refusal_retries_on_the_next_host(self):
        """Clients sent to a host whose refusal arrives late are served by the good host."""
        good = startBackend(self, b"good")
        late = self.pending()
        svc = yield self.startBalancer(balanced([late.address, address(good)], retries=2,
                                                connect_timeout=10))
        port = svc.ports[0].getHost().port
        fetches = [fetch(port, b"x") for _ in range(4)]
        yield later(0.2)
        late.refuse()
        results = yield gatherResults(fetches)
        self.assertEqual([data for data, _ in results], [b"good:x"] * 4)
        yield later(0.05)
        host = svc.groups["main"].hosts[late.address]
        self.assertEqual(host.state, "down")
        self.assertEqual((host.active, svc.open, sum(h.active for _, h in svc.hosts())), (0, 0, 0))
        self.assertGreaterEqual(svc.retried, 1)
        self.assertEqual(svc.refused, 0)
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])

    @inlineCallbacks
    def test_late_refusal_with_no_retry_left_closes_the_client(self):
        """With no other host, the client is closed cleanly and counted refused; counts stay exact."""
        late = self.pending()
        svc = yield self.startBalancer(balanced([late.address], retries=0, connect_timeout=10))
        d = fetch(svc.ports[0].getHost().port, b"x")
        yield later(0.2)
        late.refuse()
        data, clean = yield d
        self.assertEqual((data, clean), (b"", True))
        yield later(0.05)
        self.assertEqual((svc.refused, svc.open, svc.groups["main"].hosts[late.address].active), (1, 0, 0))
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])

    @inlineCallbacks
    def test_connect_timeout_moves_the_client_to_the_next_host(self):
        """A connect that never completes is abandoned at connect_timeout and tried elsewhere."""
        good = startBackend(self, b"good")
        silent = self.pending()
        svc = yield self.startBalancer(balanced([silent.address, address(good)], retries=2,
                                                connect_timeout=0.3))
        started = reactor.seconds()
        data, _ = yield fetch(svc.ports[0].getHost().port, b"x")
        self.assertEqual(data, b"good:x")
        self.assertLess(reactor.seconds() - started, 3)
        yield later(0.05)
        self.assertEqual(svc.groups["main"].hosts[silent.address].active, 0)
        self.assertEqual(svc.open, 0)

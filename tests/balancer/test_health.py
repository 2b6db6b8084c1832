"""Health checks, agent checks and connect timeouts: Clock-driven units, then real sockets."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionRefusedError, UserError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer.agent import parseAgentReply
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import AgentCheck, HealthCheck, Server
from salvusctl.balancer.health import HostMonitor
from salvusctl.balancer.model import BackendHost
from salvusctl.balancer.proxy import Frontend
from salvusctl.balancer.service import BalancedService
from tests.balancer.helpers import address, balanced, fetch, startBackend
from tests.helpers import waitFor


def succeed_probe(reactor_, reply: bytes = b""):
    host, port, factory, timeout, bind = reactor_.tcpClients.pop(0)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    if reply:
        proto.dataReceived(reply)
    proto.connectionLost(Failure(ConnectionRefusedError()))
    return transport


def fail_probe(reactor_):
    host, port, factory, timeout, bind = reactor_.tcpClients.pop(0)
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


class MonitorUnitTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.host = BackendHost(self.reactor, "10.0.0.1", 80, name="h")
        self.changes = []
        check = HealthCheck(interval=2, timeout=1, rise=2, fall=3)
        self.monitor = HostMonitor(self.reactor, self.host, check,
                                   onChange=lambda h, what: self.changes.append(what))
        self.monitor.start()

    def tick(self):
        self.reactor.advance(2)

    def test_fall_consecutive_failures_mark_down_with_reason(self):
        """An up host goes down only after `fall` consecutive failed checks; the record says why."""
        for _ in range(2):
            self.tick()
            fail_probe(self.reactor)
        self.assertTrue(self.host.healthy)
        self.tick()
        fail_probe(self.reactor)
        self.assertEqual(self.host.state, "down")
        self.assertIn("health check: connect failed", self.host.down_reason)
        self.assertEqual(self.host.down_since, 6.0)
        self.assertEqual(self.host.next_check, 8.0)
        self.assertEqual(self.changes, ["down"])

    def test_rise_consecutive_successes_readmit(self):
        """A down host needs `rise` good checks in a row; one good check is not enough."""
        self.host.markDown("connect failed")
        self.tick()
        succeed_probe(self.reactor)
        self.assertFalse(self.host.healthy)
        self.tick()
        fail_probe(self.reactor)
        self.tick()
        succeed_probe(self.reactor)
        self.assertFalse(self.host.healthy)
        self.tick()
        succeed_probe(self.reactor)
        self.assertTrue(self.host.healthy)
        self.assertEqual(self.host.up_since, 8.0)
        self.assertEqual(self.host.health_changes, 2)
        self.assertEqual(self.changes, ["up"])

    def test_traffic_failure_resets_the_rise_count(self):
        """Good checks before a traffic failure do not count toward readmission."""
        self.tick()
        succeed_probe(self.reactor)
        self.host.markDown("connect timeout")
        self.tick()
        succeed_probe(self.reactor)
        self.assertFalse(self.host.healthy)

    def test_check_timeout_counts_as_failure(self):
        self.monitor.health.fall = 1
        self.tick()
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(1)
        self.assertEqual(self.host.state, "down")
        self.assertIn("timeout", self.host.down_reason)

    def test_send_expect(self):
        """With send/expect the check writes its probe and passes only on the expected reply."""
        self.monitor.health.send = b"PING\r\n"
        self.monitor.health.expect = b"PONG"
        self.monitor.health.fall = 1
        self.tick()
        transport = succeed_probe(self.reactor, b"+PONG\r\n")
        self.assertEqual(transport.value(), b"PING\r\n")
        self.assertTrue(self.host.healthy)
        self.tick()
        succeed_probe(self.reactor, b"-ERR\r\n")
        self.assertFalse(self.host.healthy)
        self.assertIn("closed before the expected reply", self.host.down_reason)

    def test_retry_now_readmits_on_one_good_check(self):
        self.host.markDown("x")
        d = self.monitor.checkOnce(force=True)
        succeed_probe(self.reactor)
        self.assertTrue(self.successResultOf(d))
        self.assertTrue(self.host.healthy)


class AgentTests(SynchronousTestCase):
    def test_parse_words(self):
        r = parseAgentReply("drain 75% maxconn:30\n")
        self.assertEqual((r.state, r.percent, r.maxconn), ("drain", 75, 30))
        self.assertEqual(parseAgentReply("ready,up").state, "up")
        self.assertEqual(parseAgentReply("maint").state, "maint")
        self.assertEqual(parseAgentReply("down#because").state, None)
        self.assertEqual(parseAgentReply("fail").state, "down")
        self.assertEqual(parseAgentReply("weight:3").weight, 3)
        self.assertEqual(parseAgentReply("bogus 50%").unknown, ("bogus",))

    def test_agent_reply_applies_state_weight_and_maxconn(self):
        clock = MemoryReactorClock()
        host = BackendHost(clock, "10.0.0.1", 80, weight=4, name="h")
        monitor = HostMonitor(clock, host, HealthCheck(interval=100), AgentCheck(port=9999, interval=5))
        monitor.start()
        clock.advance(5)
        host_, port, factory, timeout, bind = clock.tcpClients.pop(0)
        self.assertEqual(port, 9999)
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"50% maxconn:7\n")
        self.assertEqual((host.currentWeight(), host.limit()), (2.0, 7))
        clock.advance(5)
        host_, port, factory, timeout, bind = clock.tcpClients.pop(0)
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"drain\n")
        self.assertEqual(host.state, "drain")
        clock.advance(5)
        factory = clock.tcpClients.pop(0)[2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(host.state, "drain")  # an unreachable agent changes nothing
        monitor.stop()

    def test_agent_zero_percent_takes_host_out_of_rotation(self):
        from salvusctl.balancer.model import HostGroup
        from salvusctl.balancer.schedulers import makeScheduler

        clock = MemoryReactorClock()
        group = HostGroup("g", makeScheduler("roundrobin", clock))
        a = group.add(BackendHost(clock, "10.0.0.1", 80, name="a"))
        b = group.add(BackendHost(clock, "10.0.0.2", 80, name="b"))
        a.setAgent(percent=0)
        self.assertEqual(group.rotation, [b])
        a.setAgent("up", percent=100)
        self.assertEqual(group.rotation, [a, b])


class ConnectTimeoutTests(SynchronousTestCase):
    def test_connect_timeout_marks_down_and_retries_elsewhere(self):
        """A backend that never answers the connect is timed out by the wheel and the client retried."""
        r = MemoryReactorClock()
        svc = BalancedService(r, balanced(["10.0.0.1:80", "10.0.0.2:80"], connect_timeout=3, retries=2))
        svc.autoListen = False
        svc.startService()
        front = Frontend(svc, svc.wheel)
        transport = StringTransport()
        front.makeConnection(transport)
        self.assertEqual(transport.producerState, "paused")
        first_ip, _, factory = r.tcpClients[-1][:3]
        self.assertIsNone(r.tcpClients[-1][3])  # no per-connection DelayedCall for the timeout
        r.advance(3.5)
        connector = front.connector
        self.assertTrue(connector._disconnected)
        factory.clientConnectionFailed(connector, Failure(UserError()))
        host = svc.groups["main"].hosts[f"{first_ip}:80"]
        self.assertEqual((host.state, host.down_reason), ("down", "connect timeout"))
        second_ip = r.tcpClients[-1][0]
        self.assertNotEqual(first_ip, second_ip)
        backend = r.tcpClients[-1][2].buildProtocol(None)
        bt = StringTransport()
        backend.makeConnection(bt)
        self.assertEqual(transport.producerState, "producing")
        front.dataReceived(b"abc")
        self.assertEqual(bt.value(), b"abc")
        backend.dataReceived(b"xyz")
        self.assertEqual(transport.value(), b"xyz")
        self.assertEqual(svc.retried, 1)
        svc.stopService()


class IdleWheelTests(SynchronousTestCase):
    def test_connection_after_a_quiet_spell_gets_its_full_connect_timeout(self):
        """The wheel sleeps while empty; a connection arriving after a long quiet spell must not
        inherit a stale tick and time out at once."""
        r = MemoryReactorClock()
        svc = BalancedService(r, balanced(["10.0.0.1:80"], connect_timeout=3))
        svc.autoListen = False
        svc.startService()
        self.addCleanup(svc.stopService)
        for _ in range(2):
            r.advance(1000)
            front = Frontend(svc, svc.wheel)
            front.makeConnection(StringTransport())
            r.advance(2.5)
            self.assertFalse(front.connector._disconnected)
            r.advance(1)
            self.assertTrue(front.connector._disconnected)
            r.tcpClients[-1][2].clientConnectionFailed(front.connector, Failure(UserError()))
            svc.groups["main"].hosts["10.0.0.1:80"].markUp()


class HealthSocketTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_down_host_readmitted_by_real_checks(self):
        """A host whose port comes back is readmitted by the TCP check after `rise` successes."""
        a = startBackend(self, b"a")
        port = a.port.getHost().port
        decl = balanced([address(a)], health=HealthCheck(interval=0.05, timeout=0.5, rise=2, fall=1))
        svc = yield self.startBalanced(decl)
        host = svc.groups["main"].hosts[address(a)]
        yield a.port.stopListening()
        yield waitFor(lambda: host.state == "down", timeout=5.0)
        self.assertIn("health check", host.down_reason)
        a.port = reactor.listenTCP(port, a, interface="127.0.0.1")
        self.addCleanup(a.port.stopListening)
        yield waitFor(lambda: host.state == "up", timeout=5.0)
        self.assertGreaterEqual(host.health_changes, 2)
        data, _ = yield fetch(svc.ports[0].getHost().port, b"x")
        self.assertEqual(data, b"a:x")

    @inlineCallbacks
    def test_agent_drains_host_over_real_socket(self):
        """A backend's agent answering `drain` takes it out of rotation for new clients."""
        a = startBackend(self, b"a")
        b = startBackend(self, b"b")

        class Agent(Protocol):
            def connectionMade(self):
                self.transport.write(b"drain\n")
                self.transport.loseConnection()

        agent_port = reactor.listenTCP(0, Factory.forProtocol(Agent), interface="127.0.0.1")
        self.addCleanup(agent_port.stopListening)
        decl = balanced([Server(address(a), agent_port=agent_port.getHost().port), address(b)],
                        agent=AgentCheck(port=1, interval=0.05))
        svc = yield self.startBalanced(decl)
        host = svc.groups["main"].hosts[address(a)]
        yield waitFor(lambda: host.state == "drain", timeout=5.0)
        for _ in range(4):
            data, _ = yield fetch(svc.ports[0].getHost().port, b"x")
            self.assertEqual(data, b"b:x")

    @inlineCallbacks
    def startBalanced(self, decl):
        """A real balancer for C{decl} (stopped at cleanup); fires with its service once it listens."""
        balancer = BalancerService(reactor, [decl])
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced["svc"]
        yield svc.listening
        return svc

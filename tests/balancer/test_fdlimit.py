"""The descriptor budget and local resource errors (#20 item 3): units, then a real EMFILE.

A process that runs out of descriptors must not blame its backends for it: a connect or a health
check that cannot get a socket (EMFILE, ENFILE, ENOBUFS) is a local error, never a reason to mark
a host down; the client it was for is closed and counted, not orphaned; and accepting pauses while
the process is at its limit.  The flood itself, against a real process under a lowered limit, is in
L{tests.balancer.test_fdflood}.
"""

from __future__ import annotations

import errno
import os
import resource
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectBindError, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import HealthCheck
from salvusctl.balancer.fdbudget import RETRY_AFTER, DescriptorBudget, isLocalError
from salvusctl.balancer.health import HostMonitor
from salvusctl.balancer.model import BackendHost
from salvusctl.balancer.process import listenSpecs
from salvusctl.balancer.service import BalancedService, somaxconn
from tests.balancer.helpers import address, balanced, fetch, startBackend
from tests.helpers import waitFor


def emfile() -> Failure:
    """What Twisted's connectTCP reports when it cannot create the socket."""
    return Failure(ConnectBindError(errno.EMFILE, os.strerror(errno.EMFILE)))


class _Port:
    connected = True
    disconnecting = False

    def __init__(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True


def captureLog(testcase) -> list[str]:
    lines: list[str] = []

    def observe(event):
        from twisted.logger import formatEvent

        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class BudgetTests(SynchronousTestCase):
    """Sizing from the limit, and the listening ports paused and resumed with the count."""

    def test_capacityIsWhatTheLimitLeavesTwoPerClient(self):
        budget = DescriptorBudget(Clock(), limit=256, in_use=20, reserve=32)
        self.assertEqual(budget.size(checks=4), (256 - 20 - 32 - 4) // 2)
        self.assertEqual(budget.needed(8000), 20 + 36 + 16000)

    def test_aMaxconnThatCannotFitIsWarnedAboutAsHAProxyDoes(self):
        lines = captureLog(self)
        budget = DescriptorBudget(Clock(), limit=256, in_use=10)
        capacity = budget.plan(8000, checks=2)
        self.assertEqual(capacity, (256 - 10 - 34) // 2)
        warning = [line for line in lines if "cannot fit" in line]
        self.assertEqual(len(warning), 1, lines)
        self.assertIn("maxconn 8000", warning[0])
        self.assertIn("RLIMIT_NOFILE 256", warning[0])
        self.assertIn(f"At most {capacity} connections at once", warning[0])
        self.assertIn("ulimit -n' to 16044", warning[0])
        lines.clear()
        budget.plan(50, checks=2)
        self.assertEqual([line for line in lines if "cannot fit" in line], [])

    def test_aSoftLimitBelowTheDeclaredMaxconnIsRaisedUpToTheHardOne(self):
        """As HAProxy does: the soft RLIMIT_NOFILE is raised to what maxconn needs, when allowed."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 4096:
            raise self.skipTest(f"the hard descriptor limit ({hard}) is too low to test raising")
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        budget = DescriptorBudget(Clock())
        capacity = budget.plan(1000, checks=2)
        self.assertGreaterEqual(capacity, 1000)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], budget.limit)
        self.assertEqual(budget.limit, budget.needed(1000))

    def test_portsPauseAtTheLimitAndResumeBelowIt(self):
        budget = DescriptorBudget(Clock(), limit=100, in_use=0, reserve=0)
        self.assertEqual(budget.capacity, 50)
        port = _Port()
        budget.addPort(port)
        for _ in range(50):
            budget.opened()
        self.assertFalse(port.reading)
        self.assertEqual(budget.headroom(), 0)
        self.assertEqual(budget.pauses, 1)
        budget.closed()  # one below: hysteresis keeps it paused (no epoll flapping at the edge)
        self.assertFalse(port.reading)
        budget.closed()
        budget.closed()
        self.assertTrue(port.reading)
        late = _Port()
        budget.addPort(late)
        self.assertTrue(late.reading)

    def test_aLocalErrorPausesUntilAConnectionCloses(self):
        clock = Clock()
        budget = DescriptorBudget(clock, limit=1000, in_use=0, reserve=0)
        port = _Port()
        budget.addPort(port)
        budget.opened()
        budget.localError()
        self.assertFalse(port.reading)
        self.assertEqual(budget.headroom(), 0)
        budget.closed()
        self.assertTrue(port.reading)
        self.assertEqual(clock.getDelayedCalls(), [])
        budget.localError()
        clock.advance(RETRY_AFTER)  # no close came: try again anyway (the fds may be free now)
        self.assertTrue(port.reading)
        self.assertEqual(budget.local_errors, 2)

    def test_localErrors(self):
        self.assertTrue(isLocalError(emfile()))
        self.assertTrue(isLocalError(OSError(errno.ENOBUFS, "no buffer space")))
        self.assertTrue(isLocalError(ConnectBindError(errno.ENFILE, "file table full")))
        self.assertFalse(isLocalError(Failure(ConnectionRefusedError())))
        self.assertFalse(isLocalError(OSError(errno.ECONNREFUSED, "refused")))


class _Counted(Protocol):
    def connectionMade(self):
        self.factory.budget.opened()
        self.factory.accepted.append(self)

    def connectionLost(self, reason):
        self.factory.budget.closed()


class GuardedPortTests(TestCase):
    """On a real listening socket: the accept loop stops at the budget, and resumes below it."""

    timeout = 10

    @inlineCallbacks
    def test_acceptsNoMoreThanTheHeadroomThenResumes(self):
        """Twisted's accept loop takes up to C{numberAccepts} clients per event; with a budget of
        5 it takes 5 of 30 waiting clients, pauses, and takes more as they close."""
        from salvusctl.balancer.fdbudget import listenGuarded

        budget = DescriptorBudget(reactor, limit=10, in_use=0, reserve=0)
        self.assertEqual(budget.capacity, 5)
        factory = Factory.forProtocol(_Counted)
        factory.budget, factory.accepted = budget, []
        port = listenGuarded(reactor, 0, factory, 50, "127.0.0.1")
        self.addCleanup(port.stopListening)
        port.numberAccepts = 100
        budget.addPort(port)
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(30)]
        self.addCleanup(lambda: [c.close() for c in clients])
        yield waitFor(lambda: len(factory.accepted) >= 5)
        yield deferLater(reactor, 0.1, lambda: None)  # and nothing more comes
        self.assertEqual(len(factory.accepted), 5)
        self.assertTrue(budget.paused)
        for proto in factory.accepted[:5]:
            proto.transport.loseConnection()
        yield waitFor(lambda: len(factory.accepted) == 10)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(factory.accepted), 10)
        for proto in factory.accepted[5:]:
            proto.transport.loseConnection()
        yield waitFor(lambda: budget.clients == 0 or len(factory.accepted) > 10)


class HealthLocalErrorTests(SynchronousTestCase):
    """A health check that cannot get a socket is no check at all, good or bad."""

    def test_emfileOnEveryCheckNeverMarksTheHostDown(self):
        clock = MemoryReactorClock()
        host = BackendHost(clock, "10.0.0.1", 80, name="h")
        changes = []
        monitor = HostMonitor(clock, host, HealthCheck(interval=2, timeout=1, rise=2, fall=3),
                              onChange=lambda h, what: changes.append(what))
        monitor.start()
        for _ in range(10):
            clock.advance(2)
            clock.tcpClients.pop(0)[2].clientConnectionFailed(None, emfile())
        self.assertTrue(host.healthy)
        self.assertEqual(changes, [])
        self.assertIn("not checked", host.last_check)
        self.assertIn("Too many open files", host.last_check)
        # a real failure still counts from zero, and fall of them still mark it down
        for _ in range(3):
            clock.advance(2)
            clock.tcpClients.pop(0)[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(host.state, "down")
        monitor.stop()

    def test_aLocalErrorDoesNotResetTheRiseOfADownHost(self):
        clock = MemoryReactorClock()
        host = BackendHost(clock, "10.0.0.1", 80, name="h")
        host.markDown("connect failed")
        monitor = HostMonitor(clock, host, HealthCheck(interval=2, timeout=1, rise=2, fall=3))
        monitor.start()
        monitor._result(True, "connected")  # one good check of two
        self.assertFalse(host.healthy)
        monitor._result(None, "not checked: no local resource")
        monitor._result(True, "connected")
        self.assertTrue(host.healthy)
        monitor.stop()


class ServiceLocalErrorTests(SynchronousTestCase):
    """A backend connect that fails for a local resource closes the client and blames no host."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.svc = BalancedService(self.reactor, balanced(["10.0.0.1:80", "10.0.0.2:80"], retries=2))
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def connect(self):
        front = self.svc.factory.buildProtocol(None)
        transport = StringTransport()
        front.makeConnection(transport)
        return front, transport

    def test_connectBindEmfileClosesTheClientAndMarksNothingDown(self):
        front, transport = self.connect()
        self.reactor.tcpClients.pop(0)[2].clientConnectionFailed(None, emfile())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.tcpClients, [])  # not retried elsewhere: it would fail alike
        self.assertTrue(all(h.healthy and h.connect_failures == 0 for _, h in self.svc.hosts()))
        self.assertEqual(self.svc.counters()["local_errors"], 1)
        self.assertEqual(self.svc.refused, 1)
        self.assertEqual([h.active for _, h in self.svc.hosts()], [0, 0])
        front.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual((self.svc.open, self.svc.budget.clients), (0, 0))

    def test_aRealRefusalStillMarksTheHostDown(self):
        self.connect()
        self.reactor.tcpClients.pop(0)[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(sorted(h.state for _, h in self.svc.hosts()), ["down", "up"])
        self.assertEqual(len(self.reactor.tcpClients), 1)  # retried on the other host


class ListenBacklogTests(SynchronousTestCase):
    def test_aConfigFilesTcpListenerGetsSomaxconn(self):
        """The process binds its own sockets: without backlog= they too get somaxconn, not 50."""
        specs = listenSpecs([balanced([]), balanced([], name="b")])
        self.assertEqual([s[4] for s in specs], [somaxconn(), somaxconn()])


class _Exhausted:
    """Every descriptor number below a lowered soft limit in use but C{free}; undone by L{undo}."""

    def __init__(self, free: int = 1):
        self.soft, self.hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(n) for n in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + free, self.hard))
        self.fills: list[int] = []
        try:
            while True:
                self.fills.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as e:
            if e.errno != errno.EMFILE:
                self.undo()
                raise
        for _ in range(free):
            os.close(self.fills.pop())

    def undo(self) -> None:
        for fd in self.fills:
            os.close(fd)
        self.fills = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.soft, self.hard))


class RealEmfileTests(TestCase):
    """A real EMFILE on the backend socket, in this process, with real sockets."""

    timeout = 20

    @inlineCallbacks
    def test_emfileCreatingTheBackendSocketClosesTheClient(self):
        """
        The client was accepted with the last descriptor, so its backend socket cannot be made:
        it used to be left open with no backend (an unhandled OSError in the accept loop).  Now it
        is closed and counted, the host stays up, and once descriptors are free clients are served.
        """
        backend = startBackend(self, b"b")
        decl = balanced([address(backend)], health=HealthCheck(interval=60, timeout=1))
        balancer = BalancerService(reactor, [decl], wheel_resolution=0.05)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced[decl.name]
        yield svc.listening
        port = svc.ports[0].getHost().port
        yield deferLater(reactor, 0, lambda: None)  # the reactor runs (its start opens pipes)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)  # waits in the backlog
        self.addCleanup(client.close)
        exhausted = _Exhausted(free=1)
        self.addCleanup(exhausted.undo)
        try:
            yield waitFor(lambda: svc.total == 1, timeout=5)
        finally:
            exhausted.undo()
        self.assertEqual(client.recv(100), b"")  # closed, not left hanging
        self.assertEqual(svc.local_errors, 1)
        self.assertEqual(svc.refused, 1)
        host = svc.groups["main"].hosts[address(backend)]
        self.assertEqual((host.state, host.connect_failures, host.active), ("up", 0, 0))
        yield waitFor(lambda: svc.open == 0 and balancer.budget.clients == 0)
        data, _ = yield fetch(port, b"x")
        self.assertEqual(data, b"b:x")
        self.assertEqual(balancer.snapshot()["descriptors"]["local_errors"], 1)

"""
The fast-path primitives under the proxy: immediate sends, immediate closes, lean connects.

They replace Twisted's general machinery on the hottest path, so each must keep
its contract exactly: no byte lost or reordered when the kernel takes only part
of a write, failures reported as Twisted's connector reports them, and the
stock behaviour for anything that is not a plain TCP transport.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, error, protocol, reactor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer.fastpath import LeanConnection, closeNow, connectTCP, fastWrite, isPlain
from tests.helpers import PendingPort


class _Collect(protocol.Protocol):
    def connectionMade(self):
        self.data = b""
        self.lost = defer.Deferred()
        self.factory.made.callback(self)

    def dataReceived(self, data):
        self.data += data
        if self.factory.until and len(self.data) >= self.factory.until:
            self.factory.full.callback(self.data)

    def connectionLost(self, reason):
        self.lost.callback(None)


class _ServerFactory(protocol.Factory):
    """Collects until C{until} bytes arrived: C{made} fires on connect, C{full} with the data."""

    protocol = _Collect

    def __init__(self, until=0):
        self.until = until
        self.made = defer.Deferred()
        self.full = defer.Deferred()


class _Factory(_ServerFactory, protocol.ClientFactory):
    """The client side: the same, and C{failed} when the connection cannot be made."""

    def __init__(self, until=0):
        super().__init__(until)
        self.failed = defer.Deferred()

    def clientConnectionFailed(self, connector, reason):
        self.failed.callback(reason.value)


class LeanConnectTests(TestCase):
    """L{connectTCP} on the real reactor, against a real listening socket."""

    def listen(self, until=0):
        server = _ServerFactory(until)
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return server, port.getHost().port

    @defer.inlineCallbacks
    def test_connectsAndCarriesBytesBothWays(self):
        """A lean connection is a full transport: protocol built, bytes flow, close is seen."""
        server, port = self.listen(until=5)
        client = _Factory(until=5)
        conn = connectTCP(reactor, "127.0.0.1", port, client)
        self.assertIsInstance(conn, LeanConnection)
        proto = yield client.made
        self.assertEqual(proto.transport.getPeer().port, port)
        self.assertTrue(proto.transport.getTcpNoDelay())  # no Nagle delay toward the backend
        fastWrite(proto.transport, b"hello")
        got = yield server.full
        self.assertEqual(got, b"hello")
        serverProto = yield server.made
        serverProto.transport.write(b"world")
        got = yield client.full
        self.assertEqual(got, b"world")
        closeNow(proto.transport)
        yield proto.lost
        yield serverProto.lost

    @defer.inlineCallbacks
    def test_refusedIsReportedLaterAsAConnectError(self):
        """A refused connect reaches clientConnectionFailed on a later turn, never inside the call."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        client = _Factory()
        connectTCP(reactor, "127.0.0.1", port, client)
        self.assertFalse(client.failed.called)
        reason = yield client.failed
        self.assertIsInstance(reason, error.ConnectError)

    @defer.inlineCallbacks
    def test_disconnectDuringConnectReportsUserError(self):
        """C{disconnect()} of an attempt in progress fails it the way Twisted's connector does."""
        pending = PendingPort()
        self.addCleanup(pending.close)
        client = _Factory()
        conn = connectTCP(reactor, "127.0.0.1", pending.port, client)
        self.assertFalse(conn.connected)
        conn.disconnect()
        reason = yield client.failed
        self.assertIsInstance(reason, error.UserError)

    @defer.inlineCallbacks
    def test_refusalArrivingAfterConnectReturnedIsAConnectError(self):
        """
        A refusal that arrives while the connect is in progress reaches C{clientConnectionFailed}.

        epoll reports it as a hang-up, not as writability; before, Twisted's C{connectionLost}
        then called a protocol that did not exist yet ("'NoneType' object has no attribute
        'connectionLost'"), the factory never heard of it and the client waited forever.
        """
        pending = PendingPort()
        self.addCleanup(pending.close)
        client = _Factory()
        conn = connectTCP(reactor, "127.0.0.1", pending.port, client)
        self.assertFalse(conn.connected)
        reactor.callLater(0.05, pending.refuse)
        reason = yield client.failed
        self.assertIsInstance(reason, error.ConnectionRefusedError)
        self.assertTrue(conn.disconnected)
        conn.disconnect()  # a no-op now: nothing is reported twice
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_namesGoThroughTwistedsResolvingConnect(self):
        """A host name is never handed to connect(), which would block to resolve it."""
        from twisted.internet import tcp

        server, port = self.listen()
        client = _Factory()
        conn = connectTCP(reactor, "localhost", port, client)
        self.assertIsInstance(conn, tcp.Connector)
        proto = yield client.made
        proto.transport.loseConnection()
        yield proto.lost

    @defer.inlineCallbacks
    def test_partialSendQueuesTheRestInOrder(self):
        """When the kernel takes only part of a write, the rest is queued behind it, in order."""
        total = 2 * 1024 * 1024
        server, port = self.listen(until=total)
        client = _Factory()
        connectTCP(reactor, "127.0.0.1", port, client)
        proto = yield client.made
        proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        blob = bytes(range(256)) * (total // 256 // 4)
        for _ in range(4):
            fastWrite(proto.transport, blob)
        self.assertTrue(proto.transport._tempDataLen or proto.transport.dataBuffer)
        got = yield server.full
        self.assertEqual(got, blob * 4)
        closeNow(proto.transport)  # something may still be queued: falls back to a flush
        yield proto.lost


class LeanAcceptTests(TestCase):
    """Clients accepted by a balancer's listening port (L{acceptBatch}, L{LeanServer})."""

    @defer.inlineCallbacks
    def test_acceptedTransportIsACompleteServer(self):
        """The lean accept gives the protocol a full server transport: its peer, its log prefix
        and repr (made on demand), and bytes both ways; a factory that needs no address gets
        None, any other one its peer's address."""
        from salvusctl.balancer.fastpath import LeanServer
        from salvusctl.balancer.fdbudget import listenGuarded

        for addressFree in (False, True):
            server = _ServerFactory(until=3)
            server.addressFree = addressFree
            built = []
            original = server.buildProtocol
            server.buildProtocol = lambda addr, built=built, original=original: (
                built.append(addr) or original(addr))
            port = listenGuarded(reactor, 0, server, 50, "127.0.0.1")
            self.addCleanup(port.stopListening)
            client = socket.create_connection(("127.0.0.1", port.getHost().port))
            self.addCleanup(client.close)
            client.sendall(b"abc")
            proto = yield server.made
            self.assertIsInstance(proto.transport, LeanServer)
            # set once on the listener, inherited by the accepted socket
            self.assertTrue(proto.transport.getTcpNoDelay())
            self.assertEqual(proto.transport.getPeer().port, client.getsockname()[1])
            self.assertEqual(proto.transport.logPrefix(), "_Collect,0,127.0.0.1")
            self.assertIn("_Collect #0 on", repr(proto.transport))
            self.assertEqual((yield server.full), b"abc")
            fastWrite(proto.transport, b"back")  # sent now: recv below blocks the reactor
            self.assertEqual(client.recv(4), b"back")
            if addressFree:
                self.assertEqual(built, [None])
            else:
                self.assertEqual(built[0].port, client.getsockname()[1])
            closeNow(proto.transport)
            yield proto.lost


class FallbackTests(SynchronousTestCase):
    """Anything that is not a plain TCP transport of a POSIX reactor gets the stock behaviour."""

    def test_memoryReactorUsesConnectTCP(self):
        """Unit tests' memory reactors still see (and can assert on) connectTCP."""
        clock = MemoryReactorClock()
        factory = _Factory()
        connectTCP(clock, "127.0.0.1", 80, factory)
        self.assertEqual(clock.tcpClients[0][:3], ("127.0.0.1", 80, factory))
        self.assertIsNone(clock.tcpClients[0][3])  # no per-connection timeout

    def test_otherTransportsWriteAndLoseConnection(self):
        t = StringTransport()
        self.assertFalse(isPlain(t))
        fastWrite(t, b"abc")
        self.assertEqual(t.value(), b"abc")
        closeNow(t)
        self.assertTrue(t.disconnecting)


class ReactorTests(SynchronousTestCase):
    def test_fastReactorIsAnEPollReactor(self):
        """The lean dispatch is a drop-in: same class family, installable, runs a call."""
        from twisted.internet.epollreactor import EPollReactor

        from salvusctl.balancer.fastreactor import FastEPollReactor

        r = FastEPollReactor()
        self.assertIsInstance(r, EPollReactor)
        seen = []
        r.callLater(0, seen.append, 1)
        r.callLater(0.01, r.stop)
        r.run(installSignalHandlers=False)
        self.assertEqual(seen, [1])



    def test_leanLoopRunsTimedThreadAndNestedCalls(self):
        """The loop that skips the timed-call bookkeeping still runs every call that is due,
        later ones, ones scheduled by a call, calls from threads; a cancelled one
        never; and a call that raises is logged without stopping the loop."""
        import threading

        from salvusctl.balancer.fastreactor import FastEPollReactor

        r = FastEPollReactor()
        seen = []

        def nested():
            seen.append("nested")
            r.callLater(0, seen.append, "from nested")

        def boom():
            raise ZeroDivisionError("a timed call that fails")

        r.callLater(0.002, seen.append, "later")
        r.callLater(0, nested)
        r.callLater(0.001, boom)
        r.callLater(0.001, seen.append, "cancelled").cancel()
        r.callWhenRunning(lambda: threading.Thread(
            target=r.callFromThread, args=(seen.append, "thread")).start())
        r.callLater(0.003, lambda: r.callLater(0.02, r.stop) if "thread" in seen else
                    r.callLater(0.2, r.stop))
        r.run(installSignalHandlers=False)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertNotIn("cancelled", seen)
        self.assertEqual(sorted(seen), ["from nested", "later", "nested", "thread"])
        self.assertLess(seen.index("nested"), seen.index("from nested"))

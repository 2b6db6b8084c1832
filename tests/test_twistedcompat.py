"""Each private Twisted API Salvus uses still behaves as L{salvusctl._twistedcompat} assumes.

When a Twisted release renames or changes one of them, the test named after it fails, before any
service misbehaves: that is the signal to adapt the one wrapper and then move setup.cfg's bound.
"""

from __future__ import annotations

import ast
import importlib
import os
import socket
import sys

from twisted.internet import protocol, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from salvusctl import _twistedcompat as compat
from salvusctl.endpoints import checkServerEndpoint, parseEndpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EndpointStringTests(SynchronousTestCase):
    def test_parseEndpointWordsSplitsWordsAndOptions(self):
        """Words by colon, name=value options, a backslash escaping a colon."""
        self.assertEqual(compat.parseEndpointWords("tcp:8080:interface=127.0.0.1"),
                         (["tcp", "8080"], {"interface": "127.0.0.1"}))
        self.assertEqual(compat.parseEndpointWords(r"unix:/tmp/a\:b:mode=600"),
                         (["unix", "/tmp/a:b"], {"mode": "600"}))

    def test_checkServerDescriptionNeedsNoReactor(self):
        """A good string passes with no reactor and binds nothing; an unknown kind is ValueError,
        an unknown option TypeError, as serverFromString raises them."""
        self.assertIsNone(compat.checkServerDescription("tcp:0:interface=127.0.0.1"))
        self.assertRaises(ValueError, compat.checkServerDescription, "bogus:1")
        self.assertRaises(TypeError, compat.checkServerDescription, "tcp:8080:bogus=1")
        self.assertRaises(ValueError, compat.checkServerDescription, "tcp:port=http")

    def test_checkServerDescriptionLoadsSSLFiles(self):
        """For ssl: the key file is read: a missing one fails at check time, not at start."""
        self.assertRaises((OSError, ValueError), compat.checkServerDescription,
                          "ssl:8443:privateKey=/nonexistent/key.pem")

    def test_endpointStringWrapper(self):
        """salvusctl.endpoints: kind lower-cased, the port by position or name, the interface."""
        e = parseEndpoint(r"TCP:port=8080:interface=\:\:1")
        self.assertEqual((e.kind, e.port, e.interface, e.args), ("tcp", "8080", "::1", ()))
        self.assertEqual(parseEndpoint("ssl:443").port, "443")
        self.assertEqual(parseEndpoint(r"unix:/run/a\:b").address, "/run/a:b")
        self.assertEqual(parseEndpoint("unix:address=/run/x").address, "/run/x")
        self.assertRaises(ValueError, parseEndpoint, 8080)
        self.assertRaises(ValueError, checkServerEndpoint, "bogus:1")


class ServerEndpointTests(SynchronousTestCase):
    def test_serverEndpointAddress(self):
        """TCP4/TCP6 endpoints keep the constructor's interface, port and backlog."""
        ep = serverFromString(MemoryReactor(), "tcp:8080:interface=127.0.0.1:backlog=7")
        self.assertEqual(compat.serverEndpointAddress(ep), ("127.0.0.1", 8080, 7))
        ep = serverFromString(MemoryReactor(), "tcp6:9090")
        self.assertEqual(compat.serverEndpointAddress(ep), ("::", 9090, 50))

    def test_serverEndpointContextFactory(self):
        """An SSL4ServerEndpoint keeps its context factory and its address."""
        context = object()
        ep = SSL4ServerEndpoint(MemoryReactor(), 8443, context, backlog=3, interface="127.0.0.1")
        self.assertIs(compat.serverEndpointContextFactory(ep), context)
        self.assertEqual(compat.serverEndpointAddress(ep), ("127.0.0.1", 8443, 3))


@implementer(IHalfCloseableProtocol)
class _HalfCloser(protocol.Protocol):
    writeLost = 0

    def writeConnectionLost(self):
        self.writeLost += 1

    def readConnectionLost(self):
        pass


class _RecordingSocket:
    def __init__(self):
        self.calls = []

    def shutdown(self, how):
        self.calls.append(("shutdown", how))

    def close(self):
        self.calls.append(("close",))

    def fileno(self):
        return -1


class TransportTests(SynchronousTestCase):
    def connection(self):
        """A real tcp.Connection over one end of a socket pair, on a memory reactor."""
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        self.addCleanup(a.close)
        proto = _HalfCloser()
        conn = tcp.Connection(a, proto, MemoryReactor())
        conn.connected = 1
        proto.makeConnection(conn)
        return conn, proto, b

    def test_hasQueuedWrites(self):
        """write() queues in the private buffer until the next writable event sends it."""
        conn, _, peer = self.connection()
        self.assertFalse(compat.hasQueuedWrites(conn))
        conn.write(b"hello")
        self.assertTrue(compat.hasQueuedWrites(conn))
        conn.doWrite()
        self.assertFalse(compat.hasQueuedWrites(conn))
        self.assertEqual(peer.recv(10), b"hello")

    def test_canSendNow(self):
        """Only a connected transport with nothing queued and its write side open may send now."""
        conn, _, peer = self.connection()
        self.assertTrue(compat.canSendNow(conn))
        conn.write(b"queued")
        self.assertFalse(compat.canSendNow(conn))
        conn.doWrite()
        self.assertTrue(compat.canSendNow(conn))
        compat.halfCloseNow(conn)
        self.assertFalse(compat.canSendNow(conn))
        conn2, _, _ = self.connection()
        conn2.disconnecting = True
        self.assertFalse(compat.canSendNow(conn2))
        conn2.disconnecting = False
        conn2.connected = 0
        self.assertFalse(compat.canSendNow(conn2))

    def test_halfCloseNow(self):
        """The peer reads EOF at once, the protocol hears writeConnectionLost, the transport
        counts as write-disconnected."""
        conn, proto, peer = self.connection()
        self.assertFalse(compat.isWriteDisconnected(conn))
        compat.halfCloseNow(conn)
        self.assertTrue(compat.isWriteDisconnected(conn))
        self.assertEqual(proto.writeLost, 1)
        self.assertEqual(peer.recv(10), b"")

    def test_closeWithoutShutdown(self):
        """With the flag cleared, an orderly close of the socket skips shutdown()."""
        conn, _, _ = self.connection()
        fake = _RecordingSocket()
        real, conn.socket = conn.socket, fake
        self.addCleanup(real.close)
        conn._closeSocket(True)
        self.assertEqual(fake.calls[0], ("shutdown", 2))
        fake.calls.clear()
        conn.socket = fake
        compat.closeWithoutShutdown(conn)
        conn._closeSocket(True)
        self.assertNotIn(("shutdown", 2), fake.calls)


class _CountingPort(tcp.Port):
    pass


class PortTests(SynchronousTestCase):
    def test_adoptListeningPort(self):
        """A listening socket becomes an instance of the given Port subclass on its address, not
        yet started, holding a duplicate of the descriptor (the caller's stays its own)."""
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = compat.adoptListeningPort(_CountingPort, MemoryReactor(), s.fileno(), socket.AF_INET,
                                         protocol.Factory())
        adopted = port._preexistingSocket  # what startListening() will listen on
        self.addCleanup(adopted.close)
        self.assertIsInstance(port, _CountingPort)
        self.assertEqual(adopted.getsockname(), s.getsockname())
        self.assertEqual(port.interface, "127.0.0.1")
        self.assertFalse(port.connected)
        self.assertNotEqual(adopted.fileno(), s.fileno())


class _Waiter(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)


class ProcessTests(TestCase):
    def test_listOpenFDsAndSpawnFileActions(self):
        """The open descriptors include ours; the file actions dup2 each mapped fd and close the
        rest, in posix_spawn's own tuples."""
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.assertIn(r, compat.listOpenFDs())
        actions = compat.spawnFileActions([(r, False), (w, False)], {0: r})
        self.assertIn((os.POSIX_SPAWN_DUP2, r, 0), actions)
        self.assertIn((os.POSIX_SPAWN_CLOSE, w), actions)

    def test_reactorAndReapTableOfARealChild(self):
        """A spawned Process knows its reactor, and Twisted reaps its pid until it has ended."""
        from twisted.internet import reactor

        waiter = _Waiter()
        argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
        proc = reactor.spawnProcess(waiter, sys.executable, argv)
        self.assertIsInstance(proc, compat.ProcessBase)
        self.assertIs(compat.processReactor(proc), reactor)
        self.assertTrue(compat.twistedWaitsFor(proc.pid))
        proc.closeStdin()

        def ended(_):
            self.assertFalse(compat.twistedWaitsFor(proc.pid or -1))

        return waiter.ended.addCallback(ended)


class _Reads:
    """What a ProcessReader needs of its process: each chunk it hands over, and the end."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.lost = []

    def childDataReceived(self, name, data):
        self.chunks.append(data)

    def childConnectionLost(self, name, reason):
        self.lost.append(reason)


class LargeReadTests(SynchronousTestCase):
    def _reader(self):
        r, w = os.pipe()
        self.addCleanup(lambda: [os.close(fd) for fd in (r, w) if _isOpen(fd)])
        proc = _Reads()
        reader = compat.largeReadProcessReader()(MemoryReactor(), proc, 1, r)
        return reader, proc, w

    def test_oneReadTakesWhatThePipeHolds(self):
        """60,000 bytes waiting in the pipe come in one chunk (Twisted's own reader: 8,192)."""
        reader, proc, w = self._reader()
        os.write(w, b"x" * 60000)
        self.assertIsNone(reader.doRead())
        self.assertEqual([len(c) for c in proc.chunks], [60000])
        self.assertGreaterEqual(compat.PIPE_READ_SIZE, 64 * 1024)

    def test_emptyPipeAndEndOfFile(self):
        """Nothing to read: None and no chunk (EAGAIN, the pipe is non-blocking); the write end
        closed: CONNECTION_DONE, as fdesc.readFromFD returns them."""
        from twisted.internet import main

        reader, proc, w = self._reader()
        self.assertIsNone(reader.doRead())
        self.assertEqual(proc.chunks, [])
        os.close(w)
        self.assertIs(reader.doRead(), main.CONNECTION_DONE)

    def test_itIsAProcessReaderAndTwistedsStillReadsLess(self):
        """The class is Twisted's ProcessReader with only doRead changed, and Twisted's own reader
        still reads in smaller chunks (else this class is no longer needed)."""
        from twisted.internet import process

        cls = compat.largeReadProcessReader()
        self.assertTrue(issubclass(cls, process.ProcessReader))
        self.assertIs(cls, compat.largeReadProcessReader())
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        os.write(w, b"y" * 60000)
        proc = _Reads()
        plain = process.ProcessReader(MemoryReactor(), proc, 1, r)
        self.addCleanup(os.close, r)
        plain.doRead()
        self.assertLess(len(proc.chunks[0]), 60000)


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class LargeReadChildTests(TestCase):
    def test_instanceProcessPipesReadLarge(self):
        """Process.__init__ makes each "r" pipe's reader with processReaderFactory: an instance's
        stdout and stderr are read by the large reader, and a child's 60,000-byte write, made
        before Salvus reads, arrives in one chunk."""
        from twisted.internet import reactor

        from salvusctl.supervisor.oscalls import spawnInstance

        class Collect(_Waiter):
            def __init__(self):
                super().__init__()
                self.chunks = []

            def childDataReceived(self, fd, data):
                self.chunks.append(len(data))

        proto = Collect()
        code = "import os, sys; sys.stdin.read(); os.write(1, b'z' * 60000)"
        proc = spawnInstance(reactor, proto, [sys.executable, "-c", code], dict(os.environ), None,
                             fast=False, stdin=True)
        cls = compat.largeReadProcessReader()
        self.assertIsInstance(proc.pipes[1], cls)
        self.assertIsInstance(proc.pipes[2], cls)
        proc.closeStdin()
        return proto.ended.addCallback(lambda _: self.assertEqual(sum(proto.chunks), 60000))


class HookTests(SynchronousTestCase):
    def test_privateHooksExist(self):
        """Every private method or attribute a subclass of ours relies on is still on its base."""
        instance_only = {"_reactor", "_tlsConnection"}  # set in __init__/makeConnection: see below
        for dotted, names in compat.PRIVATE_HOOKS.items():
            module, _, name = dotted.rpartition(".")
            base = getattr(importlib.import_module(module), name)
            for hook in names:
                if hook not in instance_only:
                    self.assertTrue(hasattr(base, hook), f"{dotted}.{hook} is gone")
            self.assertIs(getattr(compat, name, base), base)

    def test_epollReactorPrivates(self):
        """The epoll reactor's instance attributes the lean reactor and forgetDescriptor read are
        there, and forgetDescriptor takes a reader and writer out of every table."""
        from twisted.internet.epollreactor import EPollReactor

        r = EPollReactor()
        self.addCleanup(r._poller.close)
        for name in compat.EPOLL_REACTOR_PRIVATES:
            self.assertTrue(hasattr(r, name), f"EPollReactor().{name} is gone")
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class _FD:
            def fileno(self):
                return a.fileno()

            def logPrefix(self):
                return "fd"

        fd = _FD()
        r.addReader(fd)
        r.addWriter(fd)
        compat.forgetDescriptor(r, a.fileno())
        self.assertNotIn(fd, r.getReaders())
        self.assertNotIn(fd, r.getWriters())
        compat.forgetDescriptor(r, a.fileno())  # not there: nothing happens

    def test_tlsConnectionMadeOnConnect(self):
        """TLSMemoryBIOProtocol makes its private OpenSSL connection in makeConnection."""
        from twisted.internet.ssl import optionsForClientTLS
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(optionsForClientTLS("example.com"), True, protocol.Factory.forProtocol(
            protocol.Protocol))
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.assertIsNotNone(proto._tlsConnection)
        self.assertIsInstance(proto, compat.TLSMemoryBIOProtocol)


class FenceTests(SynchronousTestCase):
    def test_noPrivateTwistedNameOutsideTheCompatModule(self):
        """No module of salvusctl but _twistedcompat imports an underscore name from Twisted, a
        private Twisted module, or reads an underscore attribute of a Twisted name it imported
        (C{endpoints._parse}, C{tcp.Port._fromListeningDescriptor})."""
        offenders = []
        root = os.path.join(REPO, "salvusctl")
        for dirpath, _, files in os.walk(root):
            for filename in files:
                if not filename.endswith(".py") or filename == "_twistedcompat.py":
                    continue
                path = os.path.join(dirpath, filename)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                twistedNames = set()
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
                        twistedNames.update(a.asname or a.name for a in node.names)
                    if isinstance(node, ast.Import):
                        twistedNames.update(a.asname or a.name.split(".")[0] for a in node.names
                                            if a.name.startswith("twisted"))
                for node in ast.walk(tree):
                    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                            and node.value.id in twistedNames and node.attr.startswith("_")
                            and not node.attr.startswith("__")):
                        where = f"{os.path.relpath(path, REPO)}:{node.lineno}"
                        offenders.append(f"{where}: {node.value.id}.{node.attr}")
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
                        private = [a.name for a in node.names if a.name.startswith("_")]
                        if private or any(p.startswith("_") for p in node.module.split(".")):
                            offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
                    if isinstance(node, ast.Import):
                        for a in node.names:
                            if a.name.startswith("twisted") and any(
                                    p.startswith("_") for p in a.name.split(".")):
                                offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
        self.assertEqual(offenders, [])

    def test_twistedHasAnUpperBound(self):
        """setup.cfg bounds twisted below the next major release after the installed one."""
        import twisted

        with open(os.path.join(REPO, "setup.cfg")) as f:
            text = f.read()
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("twisted["))
        major = int(twisted.__version__.split(".")[0])
        self.assertIn(f"<{major + 1}", line.replace(" ", ""))

"""
Hand-over of listening sockets between balancer processes.

The behaviour that matters lives between real processes and real sockets: a
stream of client connections keeps running while one process replaces another,
and none of them may be refused or reset.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from salvusctl.balancer.handover import (
    Drainer,
    HandoverError,
    HandoverServerFactory,
    IHandoverSource,
    bindTCP,
    encodeMessage,
    takeOver,
)
from tests.helpers import freePort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class DrainerTests(SynchronousTestCase):
    """The drain bounds, driven by a Clock."""

    def make(self, counts, drain=1.0, hard=2.0):
        clock = task.Clock()
        state = {"open": counts, "closed": [], "done": 0}

        def close(abort):
            state["closed"].append(abort)

        def done():
            state["done"] += 1

        d = Drainer(clock, lambda: state["open"], close, done, drain, hard, poll=0.1)
        return clock, d, state

    def test_finishesAtOnceWhenNothingIsOpen(self):
        """An idle process exits right after the hand-over."""
        clock, d, state = self.make(0)
        d.start()
        self.assertEqual(state["done"], 1)
        self.assertEqual(state["closed"], [])

    def test_waitsForConnectionsToFinish(self):
        """Open connections are left alone while they finish within the drain timeout."""
        clock, d, state = self.make(3)
        d.start()
        clock.advance(0.5)
        self.assertEqual(state["done"], 0)
        state["open"] = 0
        clock.advance(0.1)
        self.assertEqual(state["done"], 1)
        self.assertEqual(state["closed"], [])

    def test_drainTimeoutClosesGracefullyThenHardStopAborts(self):
        """Long-lived connections are bounded: a graceful close first, an abort at hard-stop."""
        clock, d, state = self.make(2, drain=1.0, hard=2.0)
        d.start()
        clock.pump([0.1] * 11)
        self.assertEqual(state["closed"], [False])
        self.assertEqual(state["done"], 0)
        clock.pump([0.1] * 10)
        self.assertEqual(state["closed"], [False, True])
        self.assertEqual(state["done"], 1)
        self.assertEqual(d.stage, "aborted")

    def test_rejectsInconsistentTimeouts(self):
        """A hard-stop shorter than the drain timeout is a configuration error."""
        with self.assertRaises(ValueError):
            Drainer(task.Clock(), lambda: 0, lambda a: None, lambda: None, 5.0, 1.0)


@implementer(IHandoverSource)
class _Source:
    def __init__(self, sockets):
        self.sockets = sockets
        self.events = []

    def handoverListeners(self):
        return self.sockets

    def handoverState(self, kind="take"):
        return {"hosts": [{"name": "a", "state": "drain", "weight": 3}]}

    def handedOver(self, kind):
        self.events.append(("handedOver", kind))

    def handoverDone(self, kind):
        self.events.append(("done", kind))


class ConversationTests(TestCase):
    """The old side in this reactor, the new side (blocking) in a thread, over a real Unix socket."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="salvus-ho-")
        self.path = os.path.join(self.dir, "ctl.sock")
        self.listener = bindTCP("127.0.0.1", 0)
        self.source = _Source([("web", self.listener)])
        verifyObject(IHandoverSource, self.source)
        self.factory = HandoverServerFactory(self.source)
        self.port = reactor.listenUNIX(self.path, self.factory)
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.listener.close)

    @defer.inlineCallbacks
    def test_passesTheSameListeningSocketAndState(self):
        """The new side receives the very socket (same port) and the JSON state."""
        t = yield deferToThread(takeOver, self.path)
        try:
            self.assertEqual([n for n, _ in t.listeners], ["web"])
            sock = t.listeners[0][1]
            self.assertEqual(sock.getsockname(), self.listener.getsockname())
            self.assertEqual(t.state["hosts"][0]["state"], "drain")
            self.assertEqual(self.source.events, [])
            yield deferToThread(t.confirm)
            self.assertTrue(t.confirmed)
            self.assertTrue(self.factory.takenOver)
            yield task.deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(self.source.events, [("handedOver", "take"), ("done", "take")])
        finally:
            for _, s in t.listeners:
                s.close()

    @defer.inlineCallbacks
    def test_stateLargerThanTheSocketBufferArrivesWhole(self):
        """Thousands of hosts' rows do not fit one send: the rest follows without blocking the old side."""
        rows = [{"name": "h%d" % i, "state": "up", "weight": i} for i in range(40000)]
        self.source.handoverState = lambda kind: {"hosts": rows}
        t = yield deferToThread(takeOver, self.path)
        try:
            self.assertEqual(t.state["hosts"], rows)
            self.assertEqual(len(t.listeners), 1)
        finally:
            t.abandon()

    @defer.inlineCallbacks
    def test_abandonedTakeoverLeavesTheOldProcessServing(self):
        """A successor that dies before confirming changes nothing: no stop, no drain."""
        t = yield deferToThread(takeOver, self.path)
        t.abandon()
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.source.events, [])
        self.assertFalse(self.factory.takenOver)

    @defer.inlineCallbacks
    def test_secondTakeoverIsRefused(self):
        """Once handed over, a process does not hand its sockets to anyone else."""
        t = yield deferToThread(takeOver, self.path)
        yield deferToThread(t.confirm)
        for _, s in t.listeners:
            s.close()
        self.factory.takenOver = True
        # The port stays up in this test; a second take gets a clear refusal.
        with self.assertRaises(HandoverError) as ctx:
            yield deferToThread(takeOver, self.path)
        self.assertIn("already handed over", str(ctx.exception))

    @defer.inlineCallbacks
    def test_garbageIsRefusedWithAReason(self):
        """A peer speaking something else gets an error message and a closed connection."""

        def talk():
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(5)
            c.connect(self.path)
            c.sendall(encodeMessage({"op": "launch-missiles"}))
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.close()
            return json.loads(data[4:])

        reply = yield deferToThread(talk)
        self.assertEqual(reply["op"], "error")
        self.assertIn("launch-missiles", reply["reason"])


class TakeOverClientTests(SynchronousTestCase):
    def test_noProcessMeansColdStart(self):
        """Nobody at the control path: take-over returns None and the caller binds."""
        path = os.path.join(tempfile.mkdtemp(), "absent.sock")
        self.assertIsNone(takeOver(path))

    def test_unknownKindIsRejected(self):
        with self.assertRaises(ValueError):
            takeOver("/nonexistent", kind="steal")

    def test_oversizedMessageIsRejected(self):
        with self.assertRaises(HandoverError):
            encodeMessage({"op": "x", "blob": "a" * (17 * 1024 * 1024)})


# -- real processes ---------------------------------------------------------


class _Backend(protocol.Protocol):
    """Answers one line with 'ok <n>' and closes, or echoes if asked to stay open."""

    def connectionMade(self):
        self.buf = b""

    def dataReceived(self, data):
        self.buf += data
        if self.buf.startswith(b"hold"):
            self.transport.write(self.buf)
            self.buf = b""
            return
        if b"\n" in self.buf:
            self.transport.write(b"ok " + self.buf)
            self.transport.loseConnection()


class _Client(protocol.Protocol):
    def connectionMade(self):
        self.got = b""
        self.transport.write(b"ping\n")

    def dataReceived(self, data):
        self.got += data

    def connectionLost(self, reason):
        self.factory.finished(self.got, reason)


class _OneShot(protocol.ClientFactory):
    def __init__(self):
        self.d = defer.Deferred()

    def buildProtocol(self, addr):
        p = _Client()
        p.factory = self
        return p

    def finished(self, got, reason):
        if not self.d.called:
            self.d.callback(got)

    def clientConnectionFailed(self, connector, reason):
        self.d.errback(reason)


class _Proc(protocol.ProcessProtocol):
    def __init__(self):
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.err = b""
        self.info = None

    def outReceived(self, data):
        self.out += data
        if self.info is None and b"\n" in self.out:
            self.info = json.loads(self.out.split(b"\n")[0])
            self.ready.callback(self.info)

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError("exited before ready: %r" % (self.err,)))
        self.ended.callback(reason.value.exitCode)


class ProcessCase(TestCase):
    """A backend in this reactor, balancer processes as children, clients in this reactor."""

    timeout = 60

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="salvus-ho-")
        self.control = os.path.join(self.dir, "lb.sock")
        self.backend = reactor.listenTCP(0, protocol.Factory.forProtocol(_Backend), interface="127.0.0.1")
        self.addCleanup(self.backend.stopListening)
        self.procs = []

    def spawn(self, port, extra=(), config=None):
        p = _Proc()
        if config is None:
            where = ["--listen", "web=127.0.0.1:%d" % (port,),
                     "--backend", "127.0.0.1:%d" % (self.backend.getHost().port,)]  # fmt: skip
        else:
            where = ["--config", config]
        argv = [sys.executable, "-m", "salvusctl.balancer.process", *where, "--control", self.control, *extra]
        env = dict(os.environ, PYTHONPATH=ROOT)
        reactor.spawnProcess(p, sys.executable, argv, env=env)
        self.procs.append(p)

        def kill():
            if not p.ended.called:
                p.transport.signalProcess("KILL")
                return p.ended

        self.addCleanup(kill)
        return p

    def request(self, port):
        """One connection: send a line, read the answer; a hang fails it after 15 s."""
        f = _OneShot()
        connector = reactor.connectTCP("127.0.0.1", port, f)
        f.d.addTimeout(15, reactor, onTimeoutCancel=lambda r, t: connector.disconnect() or r)
        return f.d

    @defer.inlineCallbacks
    def stream(self, port, stop, results, workers=8):
        """Sequential connections from C{workers} loops until C{stop} is set."""

        @defer.inlineCallbacks
        def loop():
            while not stop:
                try:
                    got = yield self.request(port)
                except Exception as e:
                    results["failed"].append(repr(e))
                    continue
                if got == b"ok ping\n":
                    results["ok"] += 1
                else:
                    results["failed"].append(got)

        yield defer.gatherResults([loop() for _ in range(workers)])


class ProcessHandoverTests(ProcessCase):
    """Two real balancer processes and a stream of real client connections."""

    @defer.inlineCallbacks
    def test_noConnectionFailsAcrossAHandover(self):
        """
        A new process takes the listening socket while clients keep connecting:
        every connection succeeds, the old process exits, counters carry over.
        """
        old = self.spawn(0, ["--drain-timeout", "5", "--hard-stop", "10"])
        info = yield old.ready
        port = info["ports"]["web"]
        stop, results = [], {"ok": 0, "failed": []}
        running = self.stream(port, stop, results)
        yield task.deferLater(reactor, 0.5, lambda: None)
        before = results["ok"]
        new = self.spawn(port, ["--drain-timeout", "5", "--hard-stop", "10"])
        newInfo = yield new.ready
        code = yield old.ended
        yield task.deferLater(reactor, 0.5, lambda: None)
        stop.append(True)
        yield running
        self.assertEqual(results["failed"], [])
        self.assertEqual(code, 0)
        self.assertGreater(before, 20)
        self.assertGreater(results["ok"], before + 20)
        self.assertEqual(newInfo["ports"]["web"], port)
        self.assertGreater(newInfo["inherited"], 0)
        new.transport.signalProcess("TERM")
        code = yield new.ended
        self.assertEqual(code, 0)

    def config(self, listeners):
        """A --config file with one service per (name, port) over the test backend."""
        path = os.path.join(self.dir, "lb%d.py" % (len(self.procs),))
        backend = "127.0.0.1:%d" % (self.backend.getHost().port,)
        with open(path, "w") as f:
            f.write("from salvusctl.balancer.declare import Balanced, Group, Server\n")
            f.write("balanced = [\n")
            for name, port in listeners:
                f.write("  Balanced(%r, listen=['tcp:%d:interface=127.0.0.1'],\n" % (name, port))
                f.write("           groups=[Group('g', [Server(%r)])]),\n" % (backend,))
            f.write("]\n")
        return path

    @defer.inlineCallbacks
    def test_newConfigKeepsSharedListenersAndDropsOthers(self):
        """
        Upgrading to a config without a listener closes that one; the listeners both configs
        share are handed over, and a listener new in the config is bound.
        """
        a, b, c = (freePort() for _ in range(3))
        old = self.spawn(0, config=self.config([("web", a), ("api", b)]))
        yield old.ready
        got = yield self.request(b)
        self.assertEqual(got, b"ok ping\n")
        new = self.spawn(0, config=self.config([("web", a), ("admin", c)]))
        info = yield new.ready
        self.assertEqual(info["ports"], {"web": a, "admin": c})
        yield old.ended
        for port in (a, c):
            got = yield self.request(port)
            self.assertEqual(got, b"ok ping\n")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", b), timeout=5).close()
        new.transport.signalProcess("TERM")
        yield new.ended

    @defer.inlineCallbacks
    def test_failedSuccessorLeavesTheOldProcessServing(self):
        """
        A new process that takes the sockets and then fails (here: a new listener's port is
        taken) exits without confirming; the old process keeps serving and can still hand over.
        """
        a = freePort()
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        old = self.spawn(0, config=self.config([("web", a)]))
        yield old.ready
        stop, results = [], {"ok": 0, "failed": []}
        running = self.stream(a, stop, results, workers=4)
        bad = self.spawn(0, config=self.config([("web", a), ("api", blocker.getsockname()[1])]))
        with self.assertRaises(RuntimeError):
            yield bad.ready
        code = yield bad.ended
        self.assertEqual(code, 2)
        self.assertIn(b"cannot start", bad.err)
        self.assertFalse(old.ended.called)
        good = self.spawn(0, config=self.config([("web", a)]))
        yield good.ready
        yield old.ended
        stop.append(True)
        yield running
        self.assertEqual(results["failed"], [])
        self.assertGreater(results["ok"], 10)
        good.transport.signalProcess("TERM")
        yield good.ended

    @defer.inlineCallbacks
    def test_openConnectionFinishesOnTheOldProcess(self):
        """A connection open at hand-over time keeps working until it ends; then the old exits."""
        old = self.spawn(0, ["--drain-timeout", "20", "--hard-stop", "30"])
        info = yield old.ready
        port = info["ports"]["web"]
        cc = protocol.ClientCreator(reactor, _Holder)
        held = yield cc.connectTCP("127.0.0.1", port)
        echoed = yield held.say(b"hold 1")
        self.assertEqual(echoed, b"hold 1")
        new = self.spawn(port)
        yield new.ready
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(old.ended.called)
        echoed = yield held.say(b"hold 2")
        self.assertEqual(echoed, b"hold 2")
        got = yield self.request(port)
        self.assertEqual(got, b"ok ping\n")
        held.transport.loseConnection()
        code = yield old.ended
        self.assertEqual(code, 0)

    @defer.inlineCallbacks
    def test_hardStopBoundsLongLivedConnections(self):
        """A connection that never ends is cut at hard-stop and the old process exits."""
        old = self.spawn(0, ["--drain-timeout", "0.3", "--hard-stop", "0.6"])
        info = yield old.ready
        port = info["ports"]["web"]
        cc = protocol.ClientCreator(reactor, _Holder)
        held = yield cc.connectTCP("127.0.0.1", port)
        yield held.say(b"hold")
        new = self.spawn(port)
        yield new.ready
        code = yield old.ended
        self.assertEqual(code, 0)
        yield held.lost


class _Holder(protocol.Protocol):
    def connectionMade(self):
        self.waiting = None
        self.lost = defer.Deferred()

    def say(self, data):
        self.waiting = defer.Deferred()
        self.transport.write(data)
        return self.waiting

    def dataReceived(self, data):
        d, self.waiting = self.waiting, None
        if d is not None:
            d.callback(data)

    def connectionLost(self, reason):
        self.lost.callback(None)

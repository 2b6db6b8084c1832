"""A host's balancer under twistd: a stop drains, a restart hands the listening sockets over.

Real twistd processes, a real backend in this reactor, and loops of real client connections that
count every failed request: the behaviour lives between processes and sockets.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectionRefusedError

from tests.balancer.test_handover import ProcessCase, _Proc
from tests.helpers import TWISTD, childEnv, freePort, waitFor

TAC = """
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host

host = Host(name="lb", store="sqlite:{var}/salvus.db", var="{var}")
host.add(Balanced("web", listen=["tcp:{port}:interface=127.0.0.1"],
                  groups=[Group("g", [Server("127.0.0.1:{backend}")], health=HealthCheck(interval=60))],
                  stop_timeout={stop_timeout}, hard_stop={hard_stop}))
application = host.application()
"""


class _SlowBackend(protocol.Protocol):
    """Answers 'ok <line>' after C{factory.delay} seconds, then closes."""

    def connectionMade(self):
        self.buf = b""
        self.factory.seen += 1

    def dataReceived(self, data):
        self.buf += data
        if b"\n" in self.buf:
            self.call = reactor.callLater(self.factory.delay, self.answer)

    def answer(self):
        self.transport.write(b"ok " + self.buf)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        call = getattr(self, "call", None)
        if call is not None and call.active():
            call.cancel()


class HostRestartTests(ProcessCase):
    """Stopping and restarting a twistd host whose balancer carries client connections."""

    timeout = 90

    def setUp(self):
        super().setUp()
        self.backend.stopListening()
        self.slow = protocol.Factory.forProtocol(_SlowBackend)
        self.slow.delay = 0.05
        self.slow.seen = 0
        self.backend = reactor.listenTCP(0, self.slow, interface="127.0.0.1")
        self.addCleanup(self.backend.stopListening)
        self.var = tempfile.mkdtemp(prefix="salvus-hr-")
        self.addCleanup(shutil.rmtree, self.var, True)
        self.port = freePort()

    def writeTac(self, stop_timeout=10, hard_stop=20) -> str:
        path = os.path.join(self.var, "host.tac")
        with open(path, "w") as f:
            f.write(TAC.format(var=self.var, port=self.port, backend=self.backend.getHost().port,
                               stop_timeout=stop_timeout, hard_stop=hard_stop))
        return path

    def twistd(self, tac: str, log: str) -> _Proc:
        p = _Proc()
        p.ready.addErrback(lambda f: None)  # twistd prints no JSON line; we wait on the port
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(self.var, log),
                         "salvus", "--config", tac]
        reactor.spawnProcess(p, TWISTD[0], argv, env=childEnv(), path=self.var)

        def kill():
            if not p.ended.called:
                p.transport.signalProcess("KILL")
                return p.ended

        self.addCleanup(kill)
        return p

    def assertCleanStop(self, name: str) -> None:
        """twistd re-raises SIGTERM on itself after its shutdown, so the exit status is the
        signal's: the log says whether the stop went through."""
        text = self.log(name)
        self.assertIn("Server Shut Down.", text)
        self.assertNotIn("Traceback", text)

    def log(self, name: str) -> str:
        with open(os.path.join(self.var, name)) as f:
            return f.read()

    @defer.inlineCallbacks
    def serving(self, timeout=30.0):
        """Wait until a request through the balancer succeeds."""
        deadline = reactor.seconds() + timeout
        while True:
            try:
                got = yield self.request(self.port)
                if got == b"ok ping\n":
                    return
            except ConnectionRefusedError:
                pass
            if reactor.seconds() > deadline:
                raise AssertionError("the host's balancer does not serve")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_restartWithHandOverLosesNoRequest(self):
        """A second host started on the same var dir takes the balancer's listening socket from
        the running one, which stops accepting, drains and exits: 8 client loops opening
        connections all along see no failed request (a twistd restart used to refuse clients
        for 3 s), and the new host carries on the counters."""
        tac = self.writeTac()
        old = self.twistd(tac, "old.log")
        yield self.serving()
        stop, results = [], {"ok": 0, "failed": []}
        running = self.stream(self.port, stop, results)
        yield task.deferLater(reactor, 0.5, lambda: None)
        before = results["ok"]
        new = self.twistd(tac, "new.log")
        code = yield old.ended
        self.assertEqual(code, 0, self.log("old.log"))
        at_exit = results["ok"]
        yield waitFor(lambda: results["ok"] > at_exit + 50, timeout=30)
        stop.append(True)
        yield running
        self.assertEqual(results["failed"], [])
        self.assertGreater(before, 0)
        self.assertIn("taken by a successor", self.log("old.log"))
        self.assertIn("took 1 listening sockets over", self.log("new.log"))
        new.transport.signalProcess("TERM")
        yield new.ended
        self.assertCleanStop("new.log")

    @defer.inlineCallbacks
    def test_stopLetsInFlightRequestsFinish(self):
        """SIGTERM while 6 requests wait on a slow backend: the host stops accepting at once, all 6
        get their whole answer, and only then does twistd exit (it used to cut them)."""
        self.slow.delay = 3.0
        proc = self.twistd(self.writeTac(stop_timeout=10, hard_stop=20), "host.log")
        yield self.serving()
        seen = self.slow.seen
        inflight = [self.request(self.port) for _ in range(6)]
        yield waitFor(lambda: self.slow.seen >= seen + 6)
        proc.transport.signalProcess("TERM")
        # no new client is taken any more (refused once the listener is closed)
        yield waitFor(lambda: not _accepts(self.port), timeout=5)
        self.assertFalse(proc.ended.called)
        answers = yield defer.gatherResults(inflight)
        self.assertEqual(answers, [b"ok ping\n"] * 6)
        yield proc.ended
        self.assertCleanStop("host.log")
        self.assertRegex(self.log("host.log"), r"stopping: draining \d+ open connections")

    @defer.inlineCallbacks
    def test_stopClosesWhatOutlivesTheStopTimeout(self):
        """A request longer than stop_timeout is closed at the deadline: the stop is bounded."""
        self.slow.delay = 30
        proc = self.twistd(self.writeTac(stop_timeout=1, hard_stop=2), "host.log")
        self.slow.delay = 0.05
        yield self.serving()
        self.slow.delay = 30
        seen = self.slow.seen
        held = self.request(self.port)
        yield waitFor(lambda: self.slow.seen >= seen + 1)
        started = reactor.seconds()
        proc.transport.signalProcess("TERM")
        got = yield held
        self.assertEqual(got, b"")
        yield proc.ended
        self.assertCleanStop("host.log")
        self.assertLess(reactor.seconds() - started, 10)


def _accepts(port: int) -> bool:
    import socket

    s = socket.socket()
    try:
        s.settimeout(0.5)
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

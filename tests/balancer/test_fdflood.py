"""A flood of clients against a real balancer process whose descriptor limit is 256 (#20 item 3).

Running out of file descriptors used to take the whole pool down: health checks failed for lack of
a socket and marked the healthy backend down, Twisted's accept loop answered EMFILE by accepting and
closing every client in the backlog, and every client was refused for seconds after the flood.
HAProxy, given the same limit, stops accepting while it is full and serves the backlog as
connections close.  So must the balancer: 1,000 clients at once through a process limited to 256
descriptors, every one answered, no host marked down, and a client after the flood served at once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.balancer.helpers import request
from tests.helpers import childEnv

LIMIT = 256
CLIENTS = 1000

#: Lowers the limit in the child itself, then runs the balancer process as `python -m` would.
LAUNCH = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
    "sys.argv[0] = 'salvus-balancer'; "
    "runpy.run_module('salvusctl.balancer.process', run_name='__main__', alter_sys=True)"
)

CONFIG = """
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
balanced = [Balanced(
    "web", listen=["tcp:0:interface=127.0.0.1"],
    groups=[Group("main", [Server("127.0.0.1:{port}", name="only")],
                  health=HealthCheck(interval=0.1, timeout=1.0, rise=1, fall=2))],
    maxconn=8000, connect_timeout=5.0, retries=2,
)]
"""


class _SlowReply(protocol.Protocol):
    """Answers C{b:<data>} a moment later and closes: each pair lives long enough to pile up."""

    def dataReceived(self, data):
        self.factory.received += 1
        reactor.callLater(0.2, self.answer, data)

    def answer(self, data):
        if self.transport.connected:
            self.transport.write(b"b:" + data)
            self.transport.loseConnection()


class _SlowBackend(protocol.Factory):
    protocol = _SlowReply
    noisy = False
    received = 0


class _Child(protocol.ProcessProtocol):
    def __init__(self):
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data):
        self.out += data
        if b"\n" in self.out and not self.ready.called:
            self.ready.callback(json.loads(self.out.split(b"\n", 1)[0]))

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError("the balancer exited: " + self.err.decode(errors="replace")))
        self.ended.callback(None)


class DescriptorFloodTests(TestCase):
    timeout = 90

    @inlineCallbacks
    def test_aThousandClientsUnderUlimit256AllServedNoHostDown(self):
        """
        1,000 clients at once through a balancer process limited to 256 descriptors: each gets
        its answer, the only backend is never marked down, the declared maxconn that cannot fit
        is warned about at start, and a client right after the flood is answered at once.
        """
        backend = _SlowBackend()
        listening = reactor.listenTCP(0, backend, interface="127.0.0.1", backlog=2048)
        self.addCleanup(listening.stopListening)
        fd, config = tempfile.mkstemp(suffix=".py", prefix="salvus-fdflood-")
        os.write(fd, CONFIG.format(port=listening.getHost().port).encode())
        os.close(fd)
        self.addCleanup(os.unlink, config)
        child = _Child()
        argv = [sys.executable, "-c", LAUNCH, "--config", config]
        process = reactor.spawnProcess(child, sys.executable, argv, env=childEnv())
        self.addCleanup(lambda: (process.signalProcess("KILL") if process.pid else None, child.ended)[1])
        info = yield child.ready
        port = info["ports"]["web"]
        results = yield gatherResults([request(port, patience=45.0) for _ in range(CLIENTS)])
        served = sum(1 for r in results if r == b"b:hello")
        kinds = {repr(r): results.count(r) for r in set(results)}
        self.assertEqual(served, CLIENTS, (kinds, child.err.decode(errors="replace")[-3000:]))
        started = reactor.seconds()
        after = yield request(port, patience=2.0)
        self.assertEqual(after, b"b:hello")
        self.assertLess(reactor.seconds() - started, 1.0)
        process.signalProcess("TERM")
        yield child.ended
        log = child.err.decode(errors="replace")
        self.assertNotIn("down", log)
        self.assertIn("maxconn 8000 cannot fit", log)

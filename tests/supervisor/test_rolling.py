"""A rolling restart behind a balancer, with real processes and real sockets: zero failed requests.

The balancer here is a few lines of test code wired only through the supervisor's public hooks
(observer 'ready'/'unready' events and before-stop drains), proving the hooks are enough.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from salvusctl.supervisor.deploy import Deploy, Probe
from salvusctl.supervisor.service import SupervisorService
from tests.supervisor import scratch

HERE = os.path.dirname(os.path.abspath(__file__))


class MiniBalancer:
    """Round-robin over ready instances; drains an instance before the supervisor stops it."""

    def __init__(self):
        self.pool: list[int] = []
        self.active: dict[int, int] = defaultdict(int)
        self.waiting: dict[int, list[Deferred]] = defaultdict(list)
        self.turn = 0
        self.refused = 0

    def observe(self, name, old, new, info):
        port = info["port"]
        if info["event"] == "ready" and port not in self.pool:
            self.pool.append(port)
        elif info["event"] == "unready" and port in self.pool:
            self.pool.remove(port)

    def drain(self, name, info) -> Deferred:
        port = info["port"]
        if port in self.pool:
            self.pool.remove(port)
        if not self.active[port]:
            return succeed(None)
        d = Deferred()
        self.waiting[port].append(d)
        return d

    def pick(self) -> int | None:
        if not self.pool:
            return None
        self.turn += 1
        return self.pool[self.turn % len(self.pool)]

    def finished(self, port: int) -> None:
        self.active[port] -= 1
        if not self.active[port]:
            for d in self.waiting.pop(port, []):
                d.callback(None)


class Front(portforward.ProxyServer):
    def connectionMade(self):
        lb = self.factory.lb
        self.port = lb.pick()
        if self.port is None:
            lb.refused += 1
            self.transport.loseConnection()
            return
        lb.active[self.port] += 1
        self.transport.pauseProducing()
        client = self.clientProtocolFactory()
        client.setServer(self)
        reactor.connectTCP("127.0.0.1", self.port, client)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.port is not None:
            self.factory.lb.finished(self.port)
            self.port = None


class Ask(Protocol):
    def __init__(self):
        self.answer = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(b"ping\n")

    def dataReceived(self, data):
        self.answer += data

    def connectionLost(self, reason):
        self.done.callback(self.answer)


class RollingRestartTests(TestCase):
    timeout = 90

    @inlineCallbacks
    def test_rolling_restart_zero_failed_requests(self):
        lb = MiniBalancer()
        svc = SupervisorService(reactor, [Deploy(
            "echo", command=[sys.executable, os.path.join(HERE, "echo_backend.py"), "{port}"], numprocs=3,
            port="auto", startsecs=0.2, stopwaitsecs=5,
            probe=Probe(kind="tcp", interval=0.1, timeout=0.5, failures=3))], runDir=scratch(self))
        svc.addObserver(lb.observe)
        svc.addBeforeStop(lb.drain)
        svc.startService()
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        yield svc.ready
        self.assertEqual(len(lb.pool), 3)

        factory = Factory.forProtocol(Front)
        factory.lb = lb
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        front = TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port)
        results = {"ok": 0, "failed": 0}
        answered_by: set[bytes] = set()
        state = {"run": True}

        @inlineCallbacks
        def client():
            while state["run"]:
                try:
                    proto = yield front.connect(Factory.forProtocol(Ask))
                    answer = yield proto.done
                except Exception:
                    answer = b""
                if answer.startswith(b"ok "):
                    results["ok"] += 1
                    answered_by.add(answer.split()[1])
                else:
                    results["failed"] += 1

        old = {i["pid"] for i in svc.instanceInfos()}
        clients = [client() for _ in range(4)]
        yield svc.restartDeploy("echo", batch=1)
        state["run"] = False
        yield gatherResults(clients)
        new = {i["pid"] for i in svc.instanceInfos()}
        self.assertEqual(results["failed"], 0, results)
        self.assertEqual(lb.refused, 0)
        self.assertGreater(results["ok"], 50)
        self.assertFalse(old & new)
        self.assertTrue(answered_by & {str(p).encode() for p in new})
        yield svc.stopService()

"""Two front-ends for one service, each a real C{twistd -n salvus} from C{tac/frontend.tac}, sharing
one PostgreSQL: a drain and a weight set through one host's admin (XML-RPC, as C{salvusctl
balancer drain} does) are in force on the other within a second, and both survive a restart of
either host.

The in-process version (C{tests/balancer/test_twofrontends.py}) covers concurrent writes and
sticky pins; this one proves the wiring of a real host: its store, its LISTEN, its admin, its
start-up reading of C{balancer_shared}.  Both hosts run on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from salvusctl.admin.users import OPERATOR, UsersFile
from tests.helpers import TWISTD, childEnv, freePort
from tests.integration.test_cluster import USER, _Host, _rpc
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

#: the issue's bound: a change on one front-end is in force on the other within this
WITHIN = 1.0


class _Hello(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.transport.loseConnection()


class RealTwoFrontEndsTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 60

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.users = os.path.join(self.tmp, "admin-users")
        UsersFile(self.users).add(*USER, role=OPERATOR)
        self.backends = []
        for _ in range(2):
            port = reactor.listenTCP(0, Factory.forProtocol(_Hello), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.backends.append(f"127.0.0.1:{port.getHost().port}")
        self.hosts: dict[str, _Host] = {}
        self.admin = {"fe-a": freePort(), "fe-b": freePort()}
        self.web = {"fe-a": freePort(), "fe-b": freePort()}

    def _start(self, name: str) -> defer.Deferred:
        """Start front-end C{name} (again, after a stop: same var directory); fires once its admin
        answers and its group holds both backends."""
        var = os.path.join(self.tmp, name, "var")
        os.makedirs(var, exist_ok=True)
        proto = _Host(name)
        tac = os.path.join(self.tmp, "frontend.tac")
        with open(tac, "w") as f:
            f.write(_FRONTEND_TAC)
        argv = TWISTD + ["-n", "--pidfile=", "salvus", "--config", tac]
        env = childEnv(SALVUS_VAR=var, SALVUS_HOST_NAME=name, SALVUS_USERS=self.users, SALVUS_ADMIN_PLAIN="1",
                       SALVUS_STORE=self.db.url,
                       SALVUS_BACKENDS=",".join(self.backends), SALVUS_WEB_PORT=str(self.web[name]),
                       SALVUS_ADMIN=f"tcp:{self.admin[name]}:interface=127.0.0.1")
        process = reactor.spawnProcess(proto, argv[0], argv, env=env, path=os.path.join(self.tmp, name))

        @defer.inlineCallbacks
        def stop():
            if not proto.ended.called:
                process.signalProcess("TERM")
                timer = reactor.callLater(20, lambda: proto.ended.called or process.signalProcess("KILL"))
                yield proto.ended
                if timer.active():
                    timer.cancel()

        proto.stop = stop
        self.addCleanup(stop)
        self.hosts[name] = proto
        return self._until(lambda: self._members(name).addCallback(lambda m: len(m) == 2),
                           f"{name} up with both backends")

    @defer.inlineCallbacks
    def _members(self, name: str):
        snapshot = yield _rpc("127.0.0.1", self.admin[name], "salvus.balancerSnapshot")
        group = snapshot["services"]["web"]["groups"]["main"]
        return {h["name"]: h for h in group["hosts"]}

    @defer.inlineCallbacks
    def _until(self, predicate, what: str, timeout: float = 30.0, interval: float = 0.02):
        """Poll C{predicate} until true; fail with every host's log tail; fire with seconds taken."""
        started = reactor.seconds()
        last = None
        while True:
            try:
                ok = yield predicate()
            except Exception as e:
                ok, last = False, e
            if ok:
                return reactor.seconds() - started
            ended = [h for h in self.hosts.values() if h.ended.called and not getattr(h, "stopping", False)]
            if ended or reactor.seconds() - started > timeout:
                logs = "\n".join(f"--- {h.name} ---\n{h.tail()}" for h in self.hosts.values())
                why = "a host exited" if ended else "timed out"
                self.fail(f"{why} waiting for {what} ({last!r})\n{logs}")
            yield _sleep(interval)

    def _state(self, name: str, host: str) -> defer.Deferred:
        return self._members(name).addCallback(lambda m: (m[host]["admin"], m[host]["weight"]))

    @defer.inlineCallbacks
    def _restart(self, name: str):
        self.hosts[name].stopping = True
        yield self.hosts[name].stop()
        yield self._start(name)

    @defer.inlineCallbacks
    def test_drainAndWeightOnOneSeenOnTheOtherAndKeptAcrossRestarts(self):
        yield defer.gatherResults([self._start("fe-a"), self._start("fe-b")])
        one, two = self.backends
        # A drain and a weight through fe-a's admin: on fe-b within a second.
        yield _rpc("127.0.0.1", self.admin["fe-a"], "salvus.balancerSetState", "web", "main", one, "drain")
        yield _rpc("127.0.0.1", self.admin["fe-a"], "salvus.balancerSetWeight", "web", "main", two, 7)
        took = yield self._until(
            lambda: defer.gatherResults([self._state("fe-b", one), self._state("fe-b", two)]).addCallback(
                lambda s: (s[0][0] == "drain" and s[1][1] == 7)), "fe-a's drain and weight on fe-b")
        self.assertLess(took, WITHIN)

        # fe-b restarts: the drain and the weight are in force when it is back.
        yield self._restart("fe-b")
        self.assertEqual((yield self._state("fe-b", one))[0], "drain")
        self.assertEqual((yield self._state("fe-b", two))[1], 7)

        # The other way: a change through fe-b's admin reaches fe-a within a second.
        yield _rpc("127.0.0.1", self.admin["fe-b"], "salvus.balancerSetState", "web", "main", two, "drain")
        yield _rpc("127.0.0.1", self.admin["fe-b"], "salvus.balancerSetWeight", "web", "main", one, 3)
        took = yield self._until(
            lambda: defer.gatherResults([self._state("fe-a", one), self._state("fe-a", two)]).addCallback(
                lambda s: s == [("drain", 3), ("drain", 7)]), "fe-b's changes on fe-a")
        self.assertLess(took, WITHIN)

        # fe-a restarts: everything set on either is still in force there, and on fe-b.
        yield self._restart("fe-a")
        for name in ("fe-a", "fe-b"):
            states = yield defer.gatherResults([self._state(name, one), self._state(name, two)])
            self.assertEqual(states, [("drain", 3), ("drain", 7)], name)
        # Back up through the restarted host: on the other within a second.
        yield _rpc("127.0.0.1", self.admin["fe-a"], "salvus.balancerSetState", "web", "main", one, "up")
        took = yield self._until(lambda: self._state("fe-b", one).addCallback(lambda s: s[0] == "up"),
                                 "the restarted fe-a's change on fe-b")
        self.assertLess(took, WITHIN)
        for proto in self.hosts.values():
            self.assertNotIn("Traceback", proto.output.decode(errors="replace"), proto.name)


#: a front-end: one balanced service over fixed backends (a group that follows a deploy takes its
#: states from the deploy's hosts, not from the operator), its admin on plain HTTP for the test.
_FRONTEND_TAC = """
import os
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host

env = os.environ
host = Host(name=env["SALVUS_HOST_NAME"], store=env["SALVUS_STORE"], var=env["SALVUS_VAR"])
host.add(Balanced("web", listen=["tcp:" + os.environ["SALVUS_WEB_PORT"] + ":interface=127.0.0.1"],
                  groups=[Group("main", [Server(a) for a in os.environ["SALVUS_BACKENDS"].split(",")],
                                health=HealthCheck(interval=2, timeout=1, rise=2, fall=3))]))
host.add(Admin(os.environ["SALVUS_ADMIN"], bootstrap_user="admin", users=os.environ["SALVUS_USERS"],
               allow_plain_http=True))
application = host.application()
"""


def _sleep(seconds: float) -> defer.Deferred:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)

"""Two real hosts, C{twistd -n salvus} each, sharing one PostgreSQL: a front-end (tac/frontend.tac)
balances the C{worker} deploy that a worker host (tac/worker.tac) runs, and a C{ping} from one
host gets its C{pong} from the other.

Each host runs in its own network namespace made by the test (C{ip netns} + veth pairs), so the
front-end reaches the worker's instances only over the link between them, at the address the worker
published.  PostgreSQL listens on 127.0.0.1 of the root namespace: the test forwards a port on each
namespace's root-side veth address to it.  Without root or C{ip netns}, the same test runs both
hosts on 127.0.0.1 with ephemeral ports (and says so in its output).

    root ns (this test)                   front ns                      worker ns
    10.213.N.1  <── veth ──>  10.213.N.2  (balancer :8080, admin :9001)
                              10.213.N.9  <────── veth ──────>  10.213.N.10 (worker:0 :8001, :8002)
    10.213.N.5  <────────────────── veth ──────────────────────> 10.213.N.6  (admin :9001)
    forwarders on .1 and .5 → 127.0.0.1:5432
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import xmlrpc.client

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from salvusctl.admin.users import OPERATOR, UsersFile
from tests.helpers import REPO, TWISTD, childEnv, freePort
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

USER = ("op", "operator-password-1")


def _netnsReason() -> str | None:
    """Why the hosts cannot get network namespaces here (None: they can)."""
    if os.environ.get("SALVUS_TEST_NO_NETNS"):
        return "SALVUS_TEST_NO_NETNS is set"
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip command"
    probe = f"slvprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return "ip netns add failed: " + made.stderr.decode(errors="replace").strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")


class Namespaces:
    """Two namespaces (front, worker), linked to each other and each to the root namespace."""

    def __init__(self):
        tag = f"{os.getpid() % 10000}{random.randrange(100, 1000)}"
        self.front, self.worker = f"slvf{tag}", f"slvw{tag}"
        n = random.randrange(1, 250)
        self.root_front, self.front_root = f"10.213.{n}.1", f"10.213.{n}.2"
        self.root_worker, self.worker_root = f"10.213.{n}.5", f"10.213.{n}.6"
        self.front_worker, self.worker_front = f"10.213.{n}.9", f"10.213.{n}.10"
        self.links = [(f"sf{tag}", f"sF{tag}"), (f"sw{tag}", f"sW{tag}"), (f"sx{tag}", f"sX{tag}")]

    def make(self) -> None:
        for ns in (self.front, self.worker):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        (rf, fr), (rw, wr), (fw, wf) = self.links
        self._pair(rf, None, self.root_front, fr, self.front, self.front_root)
        self._pair(rw, None, self.root_worker, wr, self.worker, self.worker_root)
        self._pair(fw, self.front, self.front_worker, wf, self.worker, self.worker_front)

    @staticmethod
    def _pair(a: str, ns_a: str | None, addr_a: str, b: str, ns_b: str, addr_b: str) -> None:
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", b, "netns", ns_b)
        if ns_a is not None:
            _ip("link", "set", a, "netns", ns_a)
        for ns, dev, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
            prefix = ["-n", ns] if ns else []
            _ip(*prefix, "addr", "add", f"{addr}/30", "dev", dev)
            _ip(*prefix, "link", "set", dev, "up")

    def destroy(self) -> None:
        for ns in (self.front, self.worker):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for root_side, _ in self.links:
            subprocess.run(["ip", "link", "del", root_side], capture_output=True)


class _Host(ProcessProtocol):
    def __init__(self, name: str):
        self.name = name
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    def tail(self) -> str:
        return self.output.decode(errors="replace")[-4000:]


def _rpc(address: str, port: int, method: str, *args):
    """One XML-RPC call with the stdlib client, in a thread (the reactor keeps serving)."""

    def call():
        url = f"http://{USER[0]}:{USER[1]}@{address}:{port}/RPC2"
        with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
            target = proxy
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args)

    return threads.deferToThread(call)


def _get(address: str, port: int) -> defer.Deferred:
    def get():
        import urllib.request

        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as response:
            return response.read().decode()

    return threads.deferToThread(get)


class TwoHosts(TestCase):
    """Two hosts' set-up: their namespaces (or loopback), a database, the users file."""

    skip = POSTGRES_SKIP
    timeout = 150

    @defer.inlineCallbacks
    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.users = os.path.join(self.tmp, "admin-users")
        UsersFile(self.users).add(*USER, role=OPERATOR)
        reason = _netnsReason()
        self.netns = None
        if reason is None:
            self.netns = Namespaces()
            self.addCleanup(self.netns.destroy)
            self.netns.make()
            # PostgreSQL listens on the root namespace's loopback: forward from each veth address.
            pg = freePort()
            self.pg_front = yield self._forward(self.netns.root_front, pg)
            self.pg_worker = yield self._forward(self.netns.root_worker, pg)
            self.front_addr, self.front_reach = self.netns.front_worker, self.netns.front_root
            self.worker_addr, self.worker_reach = self.netns.worker_front, self.netns.worker_root
            self.web, self.front_admin, self.worker_admin, self.worker_port = 8080, 9001, 9001, 8001
        else:
            print(f"\n!!! network namespaces unavailable ({reason}): both hosts on 127.0.0.1 !!!")
            self.pg_front = self.pg_worker = (self.db.host, self.db.port)
            self.front_addr = self.front_reach = self.worker_addr = self.worker_reach = "127.0.0.1"
            self.web, self.front_admin, self.worker_admin = freePort(), freePort(), freePort()
            self.worker_port = self._twoFreePorts()

    @staticmethod
    def _twoFreePorts() -> int:
        while True:
            port = freePort()
            if port < 65535:
                import socket

                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
                finally:
                    s.close()

    def _forward(self, address: str, port: int) -> defer.Deferred:
        factory = portforward.ProxyFactory(self.db.host, self.db.port)
        listening = reactor.listenTCP(port, factory, interface=address)
        self.addCleanup(listening.stopListening)
        return defer.succeed((address, port))

    def _store(self, hostport: tuple[str, int]) -> str:
        user = f"{self.db.user}@" if self.db.user else ""
        return f"postgresql://{user}{hostport[0]}:{hostport[1]}/{self.db.name}"

    def _start(self, name: str, tac: str, ns: str | None, **env: str) -> _Host:
        var = os.path.join(self.tmp, name, "var")
        os.makedirs(var)
        proto = _Host(name)
        argv = TWISTD + ["-n", "--pidfile=", "salvus", "--config", os.path.join(REPO, "tac", tac)]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns] + argv
        environment = childEnv(SALVUS_VAR=var, SALVUS_HOST_NAME=name, SALVUS_USERS=self.users,
                               SALVUS_ADMIN_PLAIN="1", SALVUS_HEARTBEAT="0.5", **env)
        process = reactor.spawnProcess(proto, argv[0], argv, env=environment,
                                       path=os.path.join(self.tmp, name))

        @defer.inlineCallbacks
        def stop():
            if not proto.ended.called:
                process.signalProcess("TERM")
                timer = reactor.callLater(30, lambda: proto.ended.called or process.signalProcess("KILL"))
                yield proto.ended
                if timer.active():
                    timer.cancel()

        self.addCleanup(stop)
        proto.stop = stop
        return proto

    @defer.inlineCallbacks
    def _until(self, predicate, what: str, *hosts: _Host, timeout: float = 60.0):
        deadline = reactor.seconds() + timeout
        while True:
            try:
                ok = yield predicate()
            except Exception:
                ok = False
            if ok:
                return
            ended = [h for h in hosts if h.ended.called]
            if ended or reactor.seconds() > deadline:
                logs = "\n".join(f"--- {h.name} ---\n{h.tail()}" for h in hosts)
                self.fail(f"{'a host exited' if ended else 'timed out'} waiting for {what}\n{logs}")
            yield deferLater(reactor, 0.25, lambda: None)


class TwoHostClusterTests(TwoHosts):
    @defer.inlineCallbacks
    def test_frontEndBalancesAWorkerOnAnotherHostAndPingGetsPong(self):
        ns_front = self.netns.front if self.netns else None
        ns_worker = self.netns.worker if self.netns else None
        worker = self._start(
            "worker", "worker.tac", ns_worker,
            SALVUS_STORE=self._store(self.pg_worker), SALVUS_ADDRESS=self.worker_addr,
            SALVUS_WORKER_PORT=str(self.worker_port),
            SALVUS_ADMIN=f"tcp:{self.worker_admin}:interface={self.worker_reach}",
        )
        front = self._start(
            "front", "frontend.tac", ns_front,
            SALVUS_STORE=self._store(self.pg_front), SALVUS_ADDRESS=self.front_addr,
            SALVUS_WEB_PORT=str(self.web), SALVUS_ADMIN=f"tcp:{self.front_admin}",
        )
        hosts: list = []

        @defer.inlineCallbacks
        def bothUp():
            try:
                answer = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.hosts")
            except Exception:
                return False
            hosts[:] = answer
            return sorted((h["name"], h["state"]) for h in answer) == [("front", "up"), ("worker", "up")]

        yield self._until(bothUp, "both hosts up", front, worker)
        by_name = {h["name"]: h for h in hosts}
        self.assertEqual(by_name["worker"]["address"], self.worker_addr)

        # The front-end's balancer takes the worker host's instances, at the worker's address.
        members: dict = {}

        @defer.inlineCallbacks
        def balanced():
            snapshot = yield _rpc(self.front_reach, self.front_admin, "salvus.balancerSnapshot")
            group = snapshot["services"]["web"]["groups"]["workers"]
            members.clear()
            members.update({h["name"]: h for h in group["hosts"]})
            return set(members) == {"worker:0@worker", "worker:1@worker"} and all(
                h["state"] == "up" for h in members.values())

        yield self._until(balanced, "the worker's instances in the front-end's group", front, worker)
        self.assertEqual({(h["address"], h["port"]) for h in members.values()},
                         {(self.worker_addr, self.worker_port), (self.worker_addr, self.worker_port + 1)})
        bodies = []
        for _ in range(6):
            bodies.append((yield _get(self.front_reach, self.web)))
        self.assertEqual({b.split(" on port")[0] for b in bodies},
                         {"hello from worker:0", "hello from worker:1"}, bodies)

        # A ping from the front-end is answered by the worker host, and the other way round.
        rtt = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.ping", "worker", 10)
        self.assertGreaterEqual(rtt, 0.0)
        self.assertLess(rtt, 10.0)
        rtt = yield _rpc(self.worker_reach, self.worker_admin, "salvus.cluster.ping", "front", 10)
        self.assertLess(rtt, 10.0)
        pongs = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.messages", "", "pong", 10)
        self.assertEqual(sorted((m["sender"], m["recipient"]) for m in pongs),
                         [("front", "worker"), ("worker", "front")])

        # The worker host stops cleanly: the front-end sees it leave and empties the group.
        yield worker.stop()
        left: dict = {}

        @defer.inlineCallbacks
        def workerLeft():
            answer = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.hosts")
            left.update({h["name"]: h["state"] for h in answer})
            snapshot = yield _rpc(self.front_reach, self.front_admin, "salvus.balancerSnapshot")
            group = snapshot["services"]["web"]["groups"]["workers"]
            return left.get("worker") == "left" and not group["hosts"]

        yield self._until(workerLeft, "the worker host gone from the front-end", front, worker)
        rows = self.db.query("SELECT COUNT(*) FROM cluster_instances")
        self.assertEqual(rows, [(0,)])
        yield front.stop()
        self.assertNotIn("Traceback", front.output.decode(errors="replace"))

    @defer.inlineCallbacks
    def test_messagesToClientsOfAnotherHost(self):
        """Messages to connected clients between two real hosts: an app the worker host runs
        registers 200 clients on its clients socket; the front host delivers to each (the first
        by the mailbox, the rest over the TLS link the first made); each arrives once.  Then the
        worker's twistd is killed: within missed x heartbeat its clients are refused as gone."""
        tac = os.path.join(self.tmp, "clients.tac")
        with open(tac, "w") as f:
            f.write(_CLIENTS_TAC)
        ns_front = self.netns.front if self.netns else None
        ns_worker = self.netns.worker if self.netns else None
        out = os.path.join(self.tmp, "app.out")
        worker = self._start("worker", tac, ns_worker, SALVUS_STORE=self._store(self.pg_worker),
                             SALVUS_ADDRESS=self.worker_addr, SALVUS_APP=_CLIENTS_APP, APP_OUT=out,
                             SALVUS_ADMIN=f"tcp:{self.worker_admin}:interface={self.worker_reach}")
        front = self._start("front", tac, ns_front, SALVUS_STORE=self._store(self.pg_front),
                            SALVUS_ADDRESS=self.front_addr, SALVUS_ADMIN=f"tcp:{self.front_admin}")

        @defer.inlineCallbacks
        def registered():
            clients = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.clients", "worker", 1000)
            return len(clients) == 200

        yield self._until(registered, "200 clients registered on the worker", front, worker)
        paths = []
        for i in range(200):
            r = yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.deliver", f"c{i}", {"i": i})
            self.assertEqual((r["host"], r["instance"]), ("worker", "app:0"))
            paths.append(r["path"])
        self.assertEqual(paths[0], "mailbox")
        self.assertGreater(paths.count("link"), 150, paths)

        def lines():
            with open(out) as f:
                return f.read().splitlines()

        yield self._until(lambda: defer.succeed(len(lines()) >= 200), "200 messages at the app",
                          front, worker)
        self.assertEqual(sorted(lines()), sorted(f"c{i} {i}" for i in range(200)))

        worker.transport.signalProcess("KILL")
        killed = reactor.seconds()

        @defer.inlineCallbacks
        def refused():
            try:
                yield _rpc(self.front_reach, self.front_admin, "salvus.cluster.deliver", "c7", 1)
            except xmlrpc.client.Fault as e:
                return "its host worker is down" in e.faultString
            return False

        yield self._until(refused, "the dead host's clients refused", front)
        self.assertLess(reactor.seconds() - killed, 0.5 * 3 + 5)


_CLIENTS_TAC = """
import os, sys
from salvusctl.admin.declare import Admin
from salvusctl.cluster import Cluster
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy

var = os.environ["SALVUS_VAR"]
host = Host(name=os.environ["SALVUS_HOST_NAME"], store=os.environ["SALVUS_STORE"], var=var)
if os.environ.get("SALVUS_APP"):
    host.add(Deploy("app", command=[sys.executable, "-c", os.environ["SALVUS_APP"]], startsecs=0.2))
host.add(Cluster(address=os.environ["SALVUS_ADDRESS"], heartbeat=0.5, missed=3))
host.add(Admin(os.environ["SALVUS_ADMIN"], bootstrap_user="admin", users=os.environ["SALVUS_USERS"],
               allow_plain_http=True))
application = host.application()
"""

_CLIENTS_APP = """
import os
from salvusctl.clientapi import ClientsSocket
hub = ClientsSocket()
for i in range(200):
    hub.connect(f"c{i}")
with open(os.environ["APP_OUT"], "a") as out:
    while True:
        message = hub.receive(timeout=120)
        if message is None:
            break
        out.write(f"{message[0]} {message[1]['i']}\\n")
        out.flush()
"""

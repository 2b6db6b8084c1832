"""Three real hosts in network namespaces, sharing one PostgreSQL, for messages to connected clients.

Each host is a C{twistd -n salvus} process in its own namespace.  Host C{c} runs an app that
registers N clients on its clients socket; host C{a} has a link to C{c} (a veth between their
namespaces), host C{b} has none (no route to C{c} at all), so what C{a} sends goes over the TLS
link and what C{b} sends goes by the PostgreSQL mailbox.  Both senders are driven by a message
(kind C{bench.deliver}) whose handler, inside the sending host, calls C{deliver()} for each
client and stamps each body with the time; the app writes the time each message reached it.
Last, C{c}'s twistd is killed (SIGKILL) and the registry is watched until its clients are gone.

    root ns (the test)        ns a                        ns c
    10.214.N.1  <─ veth ─>  10.214.N.2  (admin :9001)
                            10.214.N.9   <── veth ──>  10.214.N.10  (links, the app's clients)
    10.214.N.5  <──────────── veth ──────────────────>  10.214.N.6
    10.214.N.13 <─ veth ─>  10.214.N.14 (admin :9001)   ns b: no link to c
    forwarders on .1, .5 and .13 → PostgreSQL at 127.0.0.1

Used by C{tests/integration/test_threehosts.py} (bounded, asserted) and C{bench/cluster/netns.py}
(the figures as a table).  L{ThreeHosts.close} removes every namespace and process, whatever
failed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import xmlrpc.client
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.protocols import portforward

HEARTBEAT = 0.5
MISSED = 3
USER = ("op", "operator-password-1")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def netnsUnavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    import shutil

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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


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
        return self.output.decode(errors="replace")[-3000:]


class ThreeHosts:
    """The namespaces, the forwarders and the three hosts; L{close} undoes all of it."""

    def __init__(self, db: Any, tmp: str, clients: int):
        self.db, self.tmp, self.clients = db, tmp, clients
        tag = f"{os.getpid() % 1000}{random.randrange(100, 1000)}"
        self.ns = {h: f"slv{h}{tag}" for h in "abc"}
        n = random.randrange(1, 250)
        self.root_a, self.a_root = f"10.214.{n}.1", f"10.214.{n}.2"
        self.root_c, self.c_root = f"10.214.{n}.5", f"10.214.{n}.6"
        self.a_c, self.c_a = f"10.214.{n}.9", f"10.214.{n}.10"
        self.root_b, self.b_root = f"10.214.{n}.13", f"10.214.{n}.14"
        self.veths = [(f"s3a{tag}", f"S3a{tag}"), (f"s3c{tag}", f"S3c{tag}"), (f"s3x{tag}", f"S3x{tag}"),
                      (f"s3b{tag}", f"S3b{tag}")]
        self.procs: dict[str, tuple[_Host, Any]] = {}
        self.listening: list[Any] = []
        self.out = os.path.join(tmp, "app.out")
        self.sent = os.path.join(tmp, "sent.out")

    # -- making and undoing ----------------------------------------------------------------------

    def _pair(self, a: str, ns_a: str | None, addr_a: str, b: str, ns_b: str, addr_b: str) -> None:
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", b, "netns", ns_b)
        if ns_a is not None:
            _ip("link", "set", a, "netns", ns_a)
        for ns, dev, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
            prefix = ["-n", ns] if ns else []
            _ip(*prefix, "addr", "add", f"{addr}/30", "dev", dev)
            _ip(*prefix, "link", "set", dev, "up")

    def make(self) -> None:
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        (ra, ar), (rc, cr), (ac, ca), (rb, br) = self.veths
        self._pair(ra, None, self.root_a, ar, self.ns["a"], self.a_root)
        self._pair(rc, None, self.root_c, cr, self.ns["c"], self.c_root)
        self._pair(ac, self.ns["a"], self.a_c, ca, self.ns["c"], self.c_a)
        self._pair(rb, None, self.root_b, br, self.ns["b"], self.b_root)
        for address in (self.root_a, self.root_b, self.root_c):
            factory = portforward.ProxyFactory(self.db.host, self.db.port)
            self.listening.append(reactor.listenTCP(5432, factory, interface=address))

    @defer.inlineCallbacks
    def close(self):
        """Stop every host (SIGKILL after 10 s), the forwarders, and delete the namespaces."""
        for proto, process in self.procs.values():
            if not proto.ended.called:
                process.signalProcess("TERM")
        for proto, process in self.procs.values():
            if not proto.ended.called:
                timer = reactor.callLater(
                    10, lambda p=process, h=proto: h.ended.called or p.signalProcess("KILL"))
                yield proto.ended
                if timer.active():
                    timer.cancel()
        for port in self.listening:
            yield port.stopListening()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for root_side, _ in self.veths:
            subprocess.run(["ip", "link", "del", root_side], capture_output=True)

    # -- hosts -----------------------------------------------------------------------------------

    def _store(self, address: str) -> str:
        user = f"{self.db.user}@" if self.db.user else ""
        return f"postgresql://{user}{address}:5432/{self.db.name}"

    def start(self, users: str) -> None:
        tac = os.path.join(self.tmp, "host.tac")
        with open(tac, "w") as f:
            f.write(_TAC)
        plan = {
            "a": (self.root_a, self.a_c, f"tcp:9001:interface={self.a_root}", None),
            "b": (self.root_b, self.b_root, f"tcp:9001:interface={self.b_root}", None),
            "c": (self.root_c, self.c_a, f"tcp:9001:interface={self.c_root}", _APP),
        }
        for name, (pg, address, admin, app) in plan.items():
            var = os.path.join(self.tmp, name, "var")
            os.makedirs(var, exist_ok=True)
            env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       SALVUS_VAR=var, SALVUS_HOST_NAME=name, SALVUS_USERS=users,
                       SALVUS_STORE=self._store(pg),
                       SALVUS_ADDRESS=address, SALVUS_ADMIN=admin, SENT_OUT=self.sent, APP_OUT=self.out,
                       APP_CLIENTS=str(self.clients), SALVUS_HEARTBEAT=str(HEARTBEAT),
                       SALVUS_MISSED=str(MISSED))
            if app is not None:
                env["SALVUS_APP"] = app
            argv = ["ip", "netns", "exec", self.ns[name]] + TWISTD + [
                "-n", "--pidfile=", "salvus", "--config", tac]
            proto = _Host(name)
            process = reactor.spawnProcess(proto, argv[0], argv, env=env, path=os.path.join(self.tmp, name))
            self.procs[name] = (proto, process)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p, _ in self.procs.values())

    @defer.inlineCallbacks
    def until(self, predicate, what: str, timeout: float = 30.0, interval: float = 0.05):
        """Poll C{predicate} (a value or a Deferred of one) until true; fire with the seconds taken."""
        started = time.monotonic()
        while True:
            try:
                ok = yield defer.maybeDeferred(predicate)
            except Exception:
                ok = False
            if ok:
                return time.monotonic() - started
            dead = [p.name for p, _ in self.procs.values() if p.ended.called and p.name != "c"]
            if dead or time.monotonic() - started > timeout:
                why = f"host {dead} exited" if dead else f"timed out after {timeout:g}s"
                raise AssertionError(f"{why} waiting for {what}\n{self.logs()}")
            yield deferLater(reactor, interval, lambda: None)

    def connected(self, host: str = "c") -> int:
        rows = self.db.query("SELECT COUNT(*) FROM cluster_clients WHERE host = %s AND state = 'connected'",
                             (host,))
        return rows[0][0]

    def rpc(self, host: str, method: str, *args) -> defer.Deferred:
        address = {"a": self.a_root, "b": self.b_root, "c": self.c_root}[host]

        def call():
            url = f"http://{USER[0]}:{USER[1]}@{address}:9001/RPC2"
            with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
                target = proxy
                for part in method.split("."):
                    target = getattr(target, part)
                return target(*args)

        return threads.deferToThread(call)

    # -- the run ---------------------------------------------------------------------------------

    def _lines(self, path: str) -> list[list[str]]:
        try:
            with open(path) as f:
                return [line.split() for line in f.read().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def arrived(self, tag: str) -> list[list[str]]:
        return [fields for fields in self._lines(self.out) if fields[0] == tag]

    def report(self, tag: str) -> dict | None:
        for line in self._lines(self.sent):
            if line[0] == tag:
                return json.loads(" ".join(line[1:]))
        return None

    @defer.inlineCallbacks
    def drive(self, sender: str, tag: str, count: int, gap: float = 0.0, burst: bool = False,
              link: str | None = None, timeout: float = 30.0):
        """Have C{sender} deliver one message to each of the first C{count} clients; fire with
        (its report, the app's lines) once all arrived."""
        yield self.rpc(sender, "salvus.cluster.send", sender, "bench.deliver",
                       {"tag": tag, "count": count, "gap": gap, "burst": burst, "link": link})
        yield self.until(lambda: len(self.arrived(tag)) >= count and self.report(tag) is not None,
                         f"{count} {tag} messages from {sender} at the app", timeout=timeout)
        return self.report(tag), self.arrived(tag)

    @defer.inlineCallbacks
    def run(self, samples: int) -> dict:
        """The whole scenario; fires with the figures."""
        figures: dict[str, Any] = {"clients": self.clients, "samples": samples}
        figures["registered"] = yield self.until(lambda: self.connected() == self.clients,
                                                 f"{self.clients} clients registered on c", timeout=40)
        # The first message from a makes its link to c: wait for it (inside the handler), then the
        # burst to every client at once, then one at a time.
        report, lines = yield self.drive("a", "burst", self.clients, burst=True, link="c")
        figures["burst_paths"] = report["paths"]
        figures["burst"] = max(float(f[3]) for f in lines) - report["started"]
        figures["burst_once"] = len({f[4] for f in lines}) == len(lines) == self.clients and len(
            {f[1] for f in lines}) == self.clients
        for sender, tag, gap, link in (("a", "link", 0.002, "c"), ("b", "mailbox", 0.02, None)):
            report, lines = yield self.drive(sender, tag, samples, gap=gap, link=link)
            figures[tag + "_paths"] = report["paths"]
            figures[tag] = [float(f[3]) - float(f[2]) for f in lines]
            figures[tag + "_once"] = len({f[4] for f in lines}) == len(lines) == samples
        # c dies: its clients go from the registry once the others see it down.
        proto, process = self.procs["c"]
        process.signalProcess("KILL")
        killed = time.monotonic()
        yield proto.ended
        yield self.until(lambda: self.connected() == 0, "c's clients gone from the registry", timeout=20,
                         interval=0.02)
        figures["gone"] = time.monotonic() - killed
        why = self.db.query("SELECT DISTINCT why FROM cluster_clients WHERE host = 'c'")
        figures["gone_why"] = sorted(w for (w,) in why)
        return figures


#: every host: the cluster (heartbeat 0.5 s), an admin, and the handler that drives deliveries
_TAC = """
import json, os, sys, time
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from salvusctl.admin.declare import Admin
from salvusctl.cluster import Cluster
from salvusctl.cluster.service import ClusterService
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy

env = os.environ
host = Host(name=env["SALVUS_HOST_NAME"], store=env["SALVUS_STORE"], var=env["SALVUS_VAR"])


# the salvus plugin builds the host from this file's declarations: note the member it starts
_members = []
_startService = ClusterService.startService


def _noted(self):
    _members.append(self)
    return _startService(self)


ClusterService.startService = _noted


@inlineCallbacks
def deliverMany(message):
    '''Deliver to clients c0..c{count-1}, all at once (burst) or one at a time, each body stamped
    with the time it was handed to deliver(); report the paths taken to SENT_OUT.'''
    body = message.body
    cluster = _members[-1]
    links = cluster.clients.links
    yield cluster.deliver("c0", {"tag": "warm", "t": time.time()})
    deadline = time.time() + 10
    while body["link"] and links is not None and not links.isUp(body["link"]) and time.time() < deadline:
        yield deferLater(reactor, 0.02, lambda: None)
    clients = [f"c{i}" for i in range(body["count"])]
    started = time.time()
    if body["burst"]:
        results = yield gatherResults([cluster.deliver(c, {"tag": body["tag"], "t": time.time()})
                                       for c in clients])
    else:
        results = []
        for c in clients:
            results.append((yield cluster.deliver(c, {"tag": body["tag"], "t": time.time()})))
            yield deferLater(reactor, body["gap"], lambda: None)
    paths = {}
    for r in results:
        paths[r["path"]] = paths.get(r["path"], 0) + 1
    with open(env["SENT_OUT"], "a") as f:
        f.write(body["tag"] + " " + json.dumps({"paths": paths, "started": started}) + "\\n")
    return paths


if env.get("SALVUS_APP"):
    host.add(Deploy("app", command=[sys.executable, "-c", env["SALVUS_APP"]], startsecs=0.2))
host.add(Cluster(address=env["SALVUS_ADDRESS"], heartbeat=float(env["SALVUS_HEARTBEAT"]),
                 missed=int(env["SALVUS_MISSED"]), handlers={"bench.deliver": deliverMany}))
host.add(Admin(env["SALVUS_ADMIN"], bootstrap_user="admin", users=env["SALVUS_USERS"], allow_plain_http=True))
application = host.application()
"""

#: the app c runs: N clients on its clients socket, one line per message (tag client sent arrived id)
_APP = """
import os, time
from salvusctl.clientapi import ClientsSocket
hub = ClientsSocket()
for i in range(int(os.environ["APP_CLIENTS"])):
    hub.connect(f"c{i}")
with open(os.environ["APP_OUT"], "a") as out:
    while True:
        message = hub.receive(timeout=300)
        if message is None:
            break
        client, body, uid = message
        out.write(f"{body['tag']} {client} {body['t']} {time.time()} {uid}\\n")
        out.flush()
"""

"""A floating address moved by keepalived between two real front-ends in network namespaces.

The test makes a switch namespace holding a bridge and three namespaces joined to it by veth
pairs: two front-ends and a client (addresses in 10.233.X.0/24, only inside them).  Each
front-end runs a backend on its loopback, a real balancer process in front of it on port 8080,
and keepalived started from the C{Vip(...)} declaration's deploy (its command and templated
config).  The client opens a connection every 10 ms to the floating address.  Killing the
active front-end's balancer with SIGKILL makes its track script fail: the address must move to
the other front-end, and new connections succeed again within 3 s.  Bringing the balancer back
must not move the address back (no flap).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from salvusctl.balancer.vip import Vip, keepalivedConfig
from salvusctl.errors import ConfigError
from salvusctl.supervisor.service import SupervisorService
from tests.balancer import netns
from tests.helpers import REPO, TWISTD, childEnv
from tests.store.pgtemp import waitUntil
from tests.supervisor import scratch


def _unavailable() -> str | None:
    why = netns.unavailable()
    if why:
        return why
    if shutil.which("keepalived") is None:
        return "needs keepalived (Debian package keepalived; .ci/run installs it)"
    return None


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


class _Child(ProcessProtocol):
    def __init__(self, name: str, onLine=None):
        self.name = name
        self.onLine = onLine
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.out = b""
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            if not self.ready.called:
                self.ready.callback(line)
            if self.onLine is not None:
                self.onLine(line.decode(errors="replace"))

    def errReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"{self.name} exited: {self.out.decode(errors='replace')}"))
        self.ended.callback(None)

    def kill(self, sig: str = "KILL") -> Deferred:
        if not self.ended.called and self.transport.pid is not None:
            self.transport.signalProcess(sig)
        return self.ended


class VipConfigTests(SynchronousTestCase):
    def test_configNamesTheAddressPeersPriorityAndCheck(self):
        """The templated config holds what keepalived needs, nopreempt by default (no flap)."""
        text = keepalivedConfig("10.0.0.100/24", "eth0", ["10.0.0.12"], 150, ["127.0.0.1:8080"])
        for part in ("10.0.0.100/24 dev eth0", "priority 150", "10.0.0.12", "nopreempt",
                     "vipcheck.py --timeout 1 127.0.0.1:8080", "state BACKUP"):
            self.assertIn(part, text)
        self.assertNotIn("nopreempt", keepalivedConfig("10.0.0.100/24", "eth0", ["10.0.0.12"], 150,
                                                       ["127.0.0.1:8080"], preempt=True))

    def test_badInputIsRefusedWithTheReason(self):
        """A bad declaration fails at once, naming the field."""
        cases = [
            (("10.0.0.100", "eth0", ["10.0.0.2"], 100), "prefix"),
            (("10.0.0.100/24", "eth0", "10.0.0.2", 100), "peers"),
            (("10.0.0.100/24", "eth0", ["nope"], 100), "nope"),
            (("10.0.0.100/24", "eth0", ["10.0.0.2"], 300), "priority"),
            (("10.0.0.100/24", "eth 0", ["10.0.0.2"], 100), "interface"),
            (("10.0.0.100/24", "eth0", ["10.0.0.2"], 100, ["127.0.0.1:8080"], 51, 1.0, 0.25),
             "whole number"),
        ]
        for args, word in cases:
            with self.assertRaises(ConfigError) as e:
                Vip(*args)
            self.assertIn(word, e.exception.message)

    def test_isASupervisedDeploy(self):
        """Vip(...) is a deploy the supervisor accepts: keepalived in the foreground, its config
        rendered into the run directory."""
        deploy = Vip("10.0.0.100/24", "eth0", ["10.0.0.12"], 150)
        deploy.validate()
        self.assertEqual(deploy.command[0], "keepalived")
        self.assertIn("--dont-fork", deploy.command)
        self.assertIn("keepalived.conf", deploy.templates)

    def test_checkFailsWhenNothingListens(self):
        """The track script exits 1 when the balancer does not accept, 0 when it does."""
        import contextlib
        import io

        from salvusctl.balancer.vipcheck import main
        from tests.helpers import deadPort

        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            self.assertEqual(main([f"127.0.0.1:{deadPort()}", "--timeout", "0.5"]), 1)
        self.assertIn("balancer check failed", said.getvalue())
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        self.assertEqual(main([f"127.0.0.1:{s.getsockname()[1]}"]), 0)


class FloatingAddressTests(TestCase):
    timeout = 120

    def setUp(self):
        why = _unavailable()
        if why:
            raise SkipTest(f"!!! floating-address failover NOT TESTED: {why} !!!")
        tag = f"{os.getpid() % 10000}"
        self.sw = f"svsw{tag}"
        self.names = {"fe1": f"svf1{tag}", "fe2": f"svf2{tag}", "cl": f"svcl{tag}"}
        self.net = f"10.233.{os.getpid() % 250 + 1}"
        self.addr = {"fe1": f"{self.net}.1", "fe2": f"{self.net}.2", "cl": f"{self.net}.3"}
        self.vip = f"{self.net}.100"
        self.children: list[_Child] = []
        self.addCleanup(self._destroy)
        _run("ip", "netns", "add", self.sw)
        _run("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.sw, "link", "set", "br0", "up")
        for role, ns in self.names.items():
            _run("ip", "netns", "add", ns)
            outside = f"v{role}{tag}"[:15]
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", outside, "netns", self.sw)
            _run("ip", "-n", self.sw, "link", "set", outside, "master", "br0")
            _run("ip", "-n", self.sw, "link", "set", outside, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        self.runDir = self.mktemp()

    def _destroy(self):
        ended = [c.kill() for c in self.children if not c.ended.called]
        for ns in list(self.names.values()) + [self.sw]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return gatherResults(ended) if ended else None

    def spawn(self, role: str, argv: list[str], name: str, onLine=None) -> _Child:
        child = _Child(name, onLine)
        full = ["ip", "netns", "exec", self.names[role], *argv]
        reactor.spawnProcess(child, full[0], full, env=childEnv(), path=REPO)
        self.children.append(child)
        return child

    def balancer(self, role: str) -> _Child:
        return self.spawn(role, [sys.executable, "-m", "salvusctl.balancer.process", "--listen",
                                 "web=0.0.0.0:8080", "--backend", "127.0.0.1:9000"], f"balancer {role}")

    def keepalived(self, priorities: dict[str, int]) -> SupervisorService:
        """Both front-ends' keepalived as deploys of a real supervisor, each run inside its
        namespace (the declared command behind C{ip netns exec}); the supervisor renders the
        templated config into each deploy's run directory."""
        deploys = []
        for role, priority in priorities.items():
            other = self.addr["fe2" if role == "fe1" else "fe1"]
            deploy = Vip(f"{self.vip}/24", "eth0", [other], priority, check=["127.0.0.1:8080"],
                         source=self.addr[role], name=f"vip{role}")
            deploys.append(dataclasses.replace(
                deploy, command=["ip", "netns", "exec", self.names[role], *deploy.command]))
        supervisor = SupervisorService(reactor, deploys, runDir=scratch(self), reapInterval=0.2)
        self.addCleanup(lambda: supervisor.stopService() if supervisor.running else None)
        supervisor.startService()
        return supervisor

    def holder(self) -> str | None:
        """Which front-end has the floating address on its interface now."""
        for role in ("fe1", "fe2"):
            out = subprocess.run(["ip", "-n", self.names[role], "-o", "addr", "show", "dev", "eth0"],
                                 capture_output=True, text=True).stdout
            if f" {self.vip}/" in out:
                return role
        return None

    def host(self, role: str, priority: int) -> _Child:
        """A real C{twistd -n salvus} front-end in C{role}'s namespace: C{Balanced} on :8080 and
        C{Vip(...)}, the keepalived deploy run by the host's own supervisor."""
        var = os.path.join(self.runDir, role)
        os.makedirs(var)
        other = self.addr["fe2" if role == "fe1" else "fe1"]
        tac = os.path.join(var, "host.tac")
        with open(tac, "w") as f:
            f.write(f"""
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.balancer.vip import Vip
from salvusctl.host import Host

host = Host(name={role!r}, store="sqlite:{var}/salvus.db", var={var!r})
host.add(Balanced("web", listen=["tcp:8080"],
                  groups=[Group("main", [Server("127.0.0.1:9000")], health=HealthCheck(interval=2))]))
host.add(Vip("{self.vip}/24", interface="eth0", peers=[{other!r}], priority={priority},
             source={self.addr[role]!r}, check=["127.0.0.1:8080"]))
application = host.application()
""")
        child = self.spawn(role, TWISTD + ["-n", "--pidfile=", "salvus", "--config", tac],
                           f"twistd {role}")
        child.ready.addErrback(lambda f: None)
        return child

    @inlineCallbacks
    def startFrontEnds(self, hosts: bool = False):
        """Backends, balancers and the supervised keepalived pair; fires with the holder.

        C{hosts}: each front-end is one real twistd host (balancer and keepalived in it);
        otherwise a balancer process each and keepalived under a supervisor in this process.
        """
        self.balancers = {}
        for role in ("fe1", "fe2"):
            backend = self.spawn(role, [sys.executable, "-m", "tests.balancer.nsbackend", "127.0.0.1",
                                        "9000", role], f"backend {role}")
            yield backend.ready
            if hosts:
                self.balancers[role] = self.host(role, 150 if role == "fe1" else 100)
            else:
                self.balancers[role] = self.balancer(role)
                yield self.balancers[role].ready
        if not hosts:
            self.supervisor = self.keepalived({"fe1": 150, "fe2": 100})
        ok = yield waitUntil(reactor, lambda: self.holder() is not None, timeout=30.0, step=0.1)
        self.assertTrue(ok, "no front-end took the floating address: "
                        + " | ".join(c.out.decode(errors="replace")[-3000:] for c in self.children))
        first = self.holder()
        self.events: list[tuple[float, str, str]] = []

        def line(text: str) -> None:
            parts = text.split()
            if len(parts) == 3:
                self.events.append((reactor.seconds(), parts[0], parts[1]))

        self.client = self.spawn("cl", [sys.executable, "-m", "tests.balancer.vipclient", self.vip,
                                        "8080", "6000"], "client", line)
        ok = yield waitUntil(reactor, lambda: sum(1 for e in self.events if e[1] == "ok") >= 50,
                             timeout=20.0)
        self.assertTrue(ok, f"the client got no answers: {self.events[-5:]}")
        self.assertEqual({e[2] for e in self.events if e[1] == "ok"}, {first})
        return first

    @inlineCallbacks
    def moved(self, since: float, to: str, within: float):
        """Wait for the first answer from C{to} after C{since}; fires with (seconds, failures)."""
        events = self.events
        ok = yield waitUntil(reactor, lambda: any(e[0] > since and e[2] == to for e in events),
                             timeout=15.0)
        self.assertTrue(ok, f"the address did not move: holder {self.holder()}, last {events[-5:]}")
        moved_at = next(e[0] for e in events if e[0] > since and e[2] == to)
        failed = [e for e in events if since < e[0] < moved_at and e[1] == "fail"]
        late = [e for e in events if e[0] > moved_at and e[1] == "fail"]
        self.assertEqual(self.holder(), to)
        self.assertLess(moved_at - since, within, f"{len(failed)} failed connections")
        return moved_at - since, len(failed), len(late)

    @inlineCallbacks
    def test_killedBalancerMovesTheAddressAndItsReturnDoesNotFlap(self):
        """SIGKILL the active front-end's balancer: the address moves to the other; connections
        fail only until then (bounded, under 3 s), and its return moves nothing back."""
        first = yield self.startFrontEnds()
        other = "fe2" if first == "fe1" else "fe1"
        killed_at = reactor.seconds()
        yield self.balancers[first].kill("KILL")
        took, failed, late = yield self.moved(killed_at, other, 3.0)
        self.assertEqual(late, 0, "connections failed after the address moved")

        # bring it back: keepalived's check passes again, the address stays where it is
        self.balancers[first] = self.balancer(first)
        yield self.balancers[first].ready
        back_at = reactor.seconds()
        yield waitUntil(reactor, lambda: False, timeout=4.0, step=0.1)
        after = [e for e in self.events if e[0] > back_at]
        self.assertEqual(self.holder(), other)
        self.assertEqual({e[2] for e in after}, {other}, "the address flapped back")
        self.client.transport.closeStdin()
        yield self.client.ended
        print(f"\nVIP failover, balancer killed: moved after {took:.2f} s, {failed} failed, "
              f"{len(after)} after its return all on {other}", file=sys.stderr)

    @inlineCallbacks
    def test_linkDownMovesTheAddressAndItsReturnDoesNotFlap(self):
        """The active front-end's link goes down (a dead host, a cut cable): the other stops
        hearing its adverts and takes the address (keepalived's master-down interval, about
        3.6 s with a 1 s advert); the link back up moves nothing."""
        first = yield self.startFrontEnds()
        other = "fe2" if first == "fe1" else "fe1"
        cut_at = reactor.seconds()
        _run("ip", "-n", self.names[first], "link", "set", "eth0", "down")
        took, failed, late = yield self.moved(cut_at, other, 6.0)
        self.assertEqual(late, 0, "connections failed after the address moved")
        # the link comes back: the address stays where it is
        _run("ip", "-n", self.names[first], "link", "set", "eth0", "up")
        back_at = reactor.seconds()
        yield waitUntil(reactor, lambda: False, timeout=5.0, step=0.1)
        after = [e for e in self.events if e[0] > back_at]
        self.assertEqual(self.holder(), other)
        self.assertEqual({e[2] for e in after}, {other}, "the address flapped back")
        self.client.transport.closeStdin()
        yield self.client.ended
        print(f"\nVIP failover, link down: moved after {took:.2f} s, {failed} failed", file=sys.stderr)

    @inlineCallbacks
    def test_killedHostMovesTheAddress(self):
        """SIGKILL the active front-end's whole twistd host: the kernel stops its supervised
        keepalived (the deploy's death signal), which gives the address up at once; the other
        host takes it and new connections succeed within 3 s."""
        first = yield self.startFrontEnds(hosts=True)
        other = "fe2" if first == "fe1" else "fe1"
        killed_at = reactor.seconds()
        yield self.balancers[first].kill("KILL")
        took, failed, late = yield self.moved(killed_at, other, 3.0)
        self.assertEqual(late, 0, "connections failed after the address moved")
        self.client.transport.closeStdin()
        yield self.client.ended
        print(f"\nVIP failover, twistd host killed: moved after {took:.2f} s, {failed} failed",
              file=sys.stderr)

"""The demo host: `twistd -n salvus` serves through the balancer, the admin answers over HTTPS with the
printed password, and Ctrl-C leaves no child behind.  Plus: every example host file in tac/ loads and
validates.
"""

from __future__ import annotations

import glob
import os
import signal
import sys

import psutil
import treq
from twisted.internet import reactor
from twisted.internet import ssl as tssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from salvusctl.errors import ConfigError
from salvusctl.host.demo import defaultHost
from salvusctl.host.loading import loadHost
from tests.demohost import TWISTD_INT, Collect
from tests.helpers import REPO, childEnv, freePort


def basic(user: str, password: str) -> dict:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {b"Authorization": [f"Basic {token}".encode()]}


class _Get(Protocol):
    def __init__(self):
        self.answer = b""
        self.done: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")

    def dataReceived(self, data):
        self.answer += data

    def connectionLost(self, reason):
        self.done.callback(self.answer)


@inlineCallbacks
def httpGet(port: int):
    try:
        proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2).connect(
            Factory.forProtocol(_Get))
        answer = yield proto.done
    except Exception:
        return b""
    return answer


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DemoHostTests(TestCase):
    """A real twistd subprocess of the default host, on free ports, in a temporary directory."""

    timeout = 90

    @inlineCallbacks
    def test_demo_serves_admin_logs_in_and_ctrl_c_leaves_nothing(self):
        """Balancer → worker, HTTPS admin with the printed password; SIGINT: clean stop, no worker left."""
        tmp = self.mktemp()
        os.makedirs(tmp)
        var = os.path.join(tmp, "var")
        web, admin = freePort(), freePort()
        proto = Collect()
        env = childEnv(SALVUS_WEB_PORT=str(web), SALVUS_ADMIN_PORT=str(admin),
                       SALVUS_ADMIN_HTTP_PORT=str(freePort()))
        process = reactor.spawnProcess(proto, sys.executable,
                                       TWISTD_INT + ["-n", "--pidfile=", "salvus", "--var", var],
                                       env=env, path=tmp)

        def kill():
            if not proto.ended.called:
                process.signalProcess("KILL")
                return proto.ended

        self.addCleanup(kill)

        answers = []

        @inlineCallbacks
        def served():
            answer = yield httpGet(web)
            answers.append(answer)
            return b"hello from worker:" in answer

        @inlineCallbacks
        def poll():
            deadline = reactor.seconds() + 40
            while reactor.seconds() < deadline and not proto.ended.called:
                ok = yield served()
                if ok:
                    return True
                yield deferLater(reactor, 0.2, lambda: None)
            return False

        ok = yield poll()
        self.assertTrue(ok, proto.output.decode(errors="replace")[-3000:])
        self.assertTrue(answers[-1].startswith(b"HTTP/1."))

        with open(os.path.join(var, "admin", "admin.password")) as f:
            password = f.read().strip()
        self.assertNotIn(password.encode(), proto.output)
        with open(os.path.join(var, "admin", "admin.crt"), "rb") as f:
            authority = tssl.Certificate.loadPEM(f.read())
        agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=authority))
        url = f"https://127.0.0.1:{admin}/"
        response = yield treq.get(url, headers=basic("admin", password), agent=agent)
        page = yield response.text()
        self.assertEqual(response.code, 200, page[:500])
        self.assertIn("Backends up", page)
        response = yield treq.get(url, headers=basic("admin", password + "x"), agent=agent)
        yield response.content()
        self.assertEqual(response.code, 401)
        balancer_page = yield (yield treq.get(url + "balancer", headers=basic("admin", password),
                                              agent=agent)).text()
        self.assertIn("worker:0", balancer_page)
        self.assertIn("worker:1", balancer_page)

        workers = [p for p in psutil.Process(process.pid).children(recursive=True)
                   if "salvusctl.demo.worker" in " ".join(p.cmdline())]
        self.assertEqual(len(workers), 2, [p.cmdline() for p in workers])
        pids = [p.pid for p in workers]

        process.signalProcess("INT")
        code, sig = yield proto.ended
        # twistd shuts the host down, then ends itself with the signal it got (Twisted's
        # app._exitWithSignal), so a shell sees 130 as for any program stopped by Ctrl-C.
        self.assertEqual((code, sig), (None, signal.SIGINT), proto.output.decode(errors="replace")[-3000:])
        self.assertIn(b"Server Shut Down.", proto.output)
        self.assertEqual([p for p in pids if _alive(p)], [])
        self.assertNotIn(b"Traceback", proto.output)
        answer = yield httpGet(web)
        self.assertEqual(answer, b"")  # the port is closed


class DefaultHostTests(SynchronousTestCase):
    def setUp(self):
        for name in ("SALVUS_WEB_PORT", "SALVUS_ADMIN_PORT", "SALVUS_ADMIN_HTTP_PORT"):
            old = os.environ.pop(name, None)
            if old is not None:
                self.addCleanup(os.environ.__setitem__, name, old)

    def test_default_ports_and_components(self):
        """8080 and 8443 on loopback; every service of the demo is declared and validates."""
        host = defaultHost(var=self.mktemp())
        host.validate()
        components = sorted({d.component for d in host.declarations()})
        self.assertEqual(components, ["admin", "alerts", "backup", "balancer", "monitor", "supervisor"])
        [web] = host.declarations("balancer")
        self.assertEqual(web.listen, ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(web.groups[0].deploy, "worker")
        [admin] = host.declarations("admin")
        self.assertEqual(admin.listen[0], "ssl:8443:interface=127.0.0.1")
        self.assertEqual(admin.bootstrap_user, "admin")

    def test_ports_from_arguments_and_environment(self):
        """Arguments win, then SALVUS_WEB_PORT / SALVUS_ADMIN_PORT, then the defaults."""
        os.environ["SALVUS_WEB_PORT"] = "18080"
        self.addCleanup(os.environ.pop, "SALVUS_WEB_PORT", None)
        host = defaultHost(var=self.mktemp(), admin_port=18443)
        self.assertEqual(host.declarations("balancer")[0].listen, ["tcp:18080:interface=127.0.0.1"])
        self.assertEqual(host.declarations("admin")[0].listen[0], "ssl:18443:interface=127.0.0.1")
        host = defaultHost(var=self.mktemp(), web_port=18081)
        self.assertEqual(host.declarations("balancer")[0].listen, ["tcp:18081:interface=127.0.0.1"])

    def test_bad_port_is_a_clear_error(self):
        os.environ["SALVUS_ADMIN_PORT"] = "https"
        self.addCleanup(os.environ.pop, "SALVUS_ADMIN_PORT", None)
        e = self.assertRaises(ConfigError, defaultHost, var=self.mktemp())
        self.assertIn("SALVUS_ADMIN_PORT='https' is not a port number", str(e))
        os.environ.pop("SALVUS_ADMIN_PORT")
        e = self.assertRaises(ConfigError, defaultHost, var=self.mktemp(), web_port=70000)
        self.assertIn("web_port must be a port 1..65535", str(e))


class TacFilesTests(SynchronousTestCase):
    """Each example host file loads, validates and builds (nothing is started or bound)."""

    def test_every_tac_loads_and_builds(self):
        paths = sorted(glob.glob(os.path.join(REPO, "tac", "*.tac")))
        self.assertEqual([os.path.basename(p) for p in paths],
                         ["default.tac", "frontend.tac", "services.tac", "worker.tac"])
        # services.tac needs PostgreSQL, Redis, memcached and HAProxy installed: it is loaded,
        # built and run for real by tests/integration/test_services_tac.py.
        paths = [p for p in paths if not p.endswith("services.tac")]
        expected = {
            "default.tac": ["store", "supervisor", "balancer", "monitor", "alerts", "backup", "admin"],
            "frontend.tac": ["store", "balancer", "cluster", "admin"],
            "worker.tac": ["store", "supervisor", "monitor", "alerts", "cluster", "admin"],
        }
        saved = {k: os.environ.get(k) for k in ("SALVUS_VAR", "SALVUS_STORE")}
        self.addCleanup(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
                                 for k, v in saved.items()])
        os.environ.pop("SALVUS_STORE", None)
        for path in paths:
            os.environ["SALVUS_VAR"] = os.path.join(self.mktemp(), "var")
            host = loadHost(path)
            host.validate()
            top = host.build(reactor)
            self.assertFalse(top.running)
            self.assertEqual([s.name for s in top], expected[os.path.basename(path)], path)
            self.assertTrue(host.store_url.startswith("sqlite:"), host.store_url)
            self.assertFalse(os.path.exists(os.path.join(os.environ["SALVUS_VAR"], "salvus.db")))

    def test_worker_tac_takes_its_store_from_the_environment(self):
        """SALVUS_STORE selects a PostgreSQL store (parsed only; nothing connects here)."""
        self.addCleanup(os.environ.pop, "SALVUS_STORE", None)
        self.addCleanup(os.environ.pop, "SALVUS_VAR", None)
        os.environ["SALVUS_STORE"] = "postgresql://salvus@db.example:5432/salvus"
        os.environ["SALVUS_VAR"] = os.path.join(self.mktemp(), "var")
        host = loadHost(os.path.join(REPO, "tac", "worker.tac"))
        self.assertEqual(host.store_url, "postgresql://salvus@db.example:5432/salvus")
        host.validate()

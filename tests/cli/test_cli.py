"""C{salvusctl} against a real admin server (on the test reactor, over real sockets).

The CLI is a blocking client, so each invocation runs in a thread (the reactor keeps serving) or,
for the console script itself, in a child process.
"""

from __future__ import annotations

import io
import os
import shutil
import sys

from twisted.internet import defer, reactor, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.admin.users import UsersFile
from salvusctl.cli import ExitCode, run
from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor
from tests.admin.helpers import OP, VIEW, tempDir, writeUsers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CLITestBase(TestCase):
    timeout = 60
    listeners = ("tcp:0:interface=127.0.0.1",)

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.users = os.path.join(self.tmp, "users")
        writeUsers(self.users)
        self.supervisor = FakeSupervisor({"web": 2, "worker": 1}, clock=reactor)
        self.balancer = FakeBalancer()
        self.monitor = FakeMonitor(self.supervisor)
        self.alerts = FakeAlerts()
        now = reactor.seconds()
        for i in range(5):
            self.monitor.record("web:0", now - 50 + i * 10, 10.0 + i, 50_000_000 + i * 1_000_000)
        self.monitor.record("worker:0", now, 80.0, 200_000_000)
        self.alerts.fire("cpu-high", "worker:0", "cpu above 75% for 60 s", now - 30)
        services = {
            "supervisor": self.supervisor,
            "balancer": self.balancer,
            "monitor": self.monitor,
            "alerts": self.alerts,
        }
        state = AdminState(services=services, clock=reactor, host_name="clihost")
        self.admin = AdminService(reactor, [Admin(*self.listeners, users=self.users)], state, self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        ports = yield self.admin.ready
        self.port = getattr(ports[0].getHost(), "port", None)
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"

    scheme = "http"

    def cli(self, *argv, user=OP, env=None, stdin=""):
        """Run salvusctl in a thread; fires with (exit code, stdout, stderr)."""
        full_env = {
            "SALVUS_URL": self.url,
            "SALVUS_USER": user[0],
            "SALVUS_PASSWORD": user[1],
            "HOME": self.tmp,
        }
        full_env.update(env or {})
        out, err = io.StringIO(), io.StringIO()

        def call():
            code = run(list(argv), full_env, out, err, io.StringIO(stdin))
            return code, out.getvalue(), err.getvalue()

        return threads.deferToThread(call)


class CLITests(CLITestBase):
    @defer.inlineCallbacks
    def test_status(self):
        code, out, err = yield self.cli("status")
        self.assertEqual(code, ExitCode.OK, err)
        lines = out.splitlines()
        self.assertEqual(
            [line.split()[:2] for line in lines],
            [["web:0", "RUNNING"], ["web:1", "RUNNING"], ["worker:0", "RUNNING"]],
        )
        code, out, err = yield self.cli("status", "web:*")
        self.assertEqual(len(out.splitlines()), 2)
        code, out, err = yield self.cli("status", "ghost")
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        self.assertEqual(err, "salvusctl: ghost: no such process\n")

    @defer.inlineCallbacks
    def test_stopStartRestartQuietByDefault(self):
        """Actions print nothing on success; -v says what happened; status exits 3 when stopped."""
        code, out, err = yield self.cli("stop", "web:0")
        self.assertEqual((code, out, err), (ExitCode.OK, "", ""))
        code, out, err = yield self.cli("status")
        self.assertEqual(code, ExitCode.NOT_RUNNING)
        code, out, err = yield self.cli("-v", "start", "all")
        self.assertEqual(code, ExitCode.OK)
        self.assertEqual(out, "web:0: started\n")
        pid = self.supervisor.instanceInfo("worker:0")["pid"]
        code, out, err = yield self.cli("-v", "restart", "worker:*")
        self.assertEqual(out, "worker:*: restarted (1 at a time)\n")
        self.assertNotEqual(self.supervisor.instanceInfo("worker:0")["pid"], pid)
        code, out, err = yield self.cli("stop", "web:*", "worker")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual({i["state"] for i in self.supervisor.instanceInfos()}, {"STOPPED"})

    @defer.inlineCallbacks
    def test_restartIsRollingForDeploysGroupsAndAll(self):
        """DEPLOY:*, GROUP:* and all restart one instance at a time (each back before the next
        stops); NAME:i restarts only that instance; --no-rolling stops all, then starts all."""
        events = []
        self.supervisor.addObserver(lambda name, old, new, info: events.append((name, new.name)))
        code, out, err = yield self.cli("restart", "web:*")
        self.assertEqual((code, out, err), (ExitCode.OK, "", ""))
        self.assertEqual(
            [e for e in events if e[1] in ("STOPPED", "RUNNING")],
            [("web:0", "STOPPED"), ("web:0", "RUNNING"), ("web:1", "STOPPED"), ("web:1", "RUNNING")],
        )
        del events[:]
        code, out, err = yield self.cli("-v", "restart", "--batch", "2", "all")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(out, "web:*: restarted (2 at a time)\nworker:*: restarted (2 at a time)\n")
        self.assertEqual([e[0] for e in events if e[1] == "STOPPED"][:2], ["web:0", "web:1"])
        del events[:]
        code, out, err = yield self.cli("restart", "web:1")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual({e[0] for e in events}, {"web:1"})
        del events[:]
        code, out, err = yield self.cli("restart", "--no-rolling", "web:*")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(
            [e for e in events if e[1] in ("STOPPED", "RUNNING")],
            [("web:0", "STOPPED"), ("web:1", "STOPPED"), ("web:0", "RUNNING"), ("web:1", "RUNNING")],
        )

    @defer.inlineCallbacks
    def test_restartErrors(self):
        """An unknown deploy exits 6, a bad batch 2, a viewer 5; each in one line."""
        code, out, err = yield self.cli("restart", "ghost:*")
        self.assertEqual((code, out), (ExitCode.NO_SUCH_NAME, ""))
        self.assertEqual(err, "salvusctl: ghost: no such deploy or group\n")
        code, out, err = yield self.cli("restart", "--batch", "0", "web:*")
        self.assertEqual(code, ExitCode.USAGE)
        self.assertEqual(err, "salvusctl: --batch must be at least 1, not 0\n")
        code, out, err = yield self.cli("restart", "web:*", user=VIEW)
        self.assertEqual(code, ExitCode.AUTH)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertEqual({i["state"] for i in self.supervisor.instanceInfos()}, {"RUNNING"})
        self.supervisor.failNextStart("web:0", "exec: ./server: not found")
        code, out, err = yield self.cli("restart", "web:*")
        self.assertEqual(code, ExitCode.FAILED)
        self.assertEqual(err, "salvusctl: restart of web stopped: exec: ./server: not found: "
                              "abnormal termination\n")
        self.assertEqual(self.supervisor.instanceInfo("web:1")["state"], "RUNNING")

    @defer.inlineCallbacks
    def test_failuresAreOneLine(self):
        self.supervisor.stopInstance("web:1")
        self.supervisor.failNextStart("web:1", "exec: ./server: not found")
        code, out, err = yield self.cli("start", "web:1")
        self.assertEqual(code, ExitCode.FAILED)
        self.assertEqual(err, "salvusctl: web:1: exec: ./server: not found: spawn error\n")
        code, out, err = yield self.cli("start", "nope:3")
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        self.assertEqual(err.count("\n"), 1)

    @defer.inlineCallbacks
    def test_tail(self):
        self.supervisor.emit("web:0", "line one")
        code, out, err = yield self.cli("tail", "web:0")
        self.assertIn("line one\n", out)
        self.supervisor.emit("web:0", "to stderr", stream="stderr")
        code, out, err = yield self.cli("tail", "web:0", "stderr")
        self.assertEqual(out, "to stderr\n")

    @defer.inlineCallbacks
    def test_tailFollow(self):
        """tail -f prints what was there, then what arrives while it polls."""
        self.supervisor.clearLogs("web:0")
        self.supervisor.emit("web:0", "before")
        reactor.callLater(0.15, self.supervisor.emit, "web:0", "after")
        code, out, err = yield self.cli("tail", "-f", "--interval", "0.1", "--polls", "4", "web:0")
        self.assertEqual(out, "before\nafter\n", err)

    @defer.inlineCallbacks
    def test_auth(self):
        code, out, err = yield self.cli("status", user=("op", "bad"))
        self.assertEqual(code, ExitCode.AUTH)
        self.assertIn("authentication failed", err)
        code, out, err = yield self.cli("stop", "web:0", user=VIEW)
        self.assertEqual(code, ExitCode.AUTH)
        self.assertIn("needs the operator role", err)

    @defer.inlineCallbacks
    def test_balancer(self):
        code, out, err = yield self.cli("balancer", "show")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIn("www/web/127.0.0.1:8000", out)
        code, out, err = yield self.cli("balancer", "drain", "www/web/127.0.0.1:8000")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(
            self.balancer.services["www"]["groups"]["web"]["hosts"]["127.0.0.1:8000"]["state"], "drain"
        )
        yield self.cli("balancer", "down", "www/web/127.0.0.1:8001")
        hosts = self.balancer.snapshot()["services"]["www"]["groups"]["web"]["hosts"]
        self.assertEqual(hosts[1]["state"], "maint")
        code, out, err = yield self.cli("balancer", "weight", "www/web/127.0.0.1:8001", "5")
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("balancer", "add", "www/web", "10.0.0.9:81", "--weight", "3")
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("balancer", "remove", "www/web/127.0.0.1:8000")
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("balancer", "show")
        self.assertIn("www/web/10.0.0.9:81", out)
        self.assertNotIn("127.0.0.1:8000", out)
        code, out, err = yield self.cli("balancer", "up", "www/nope/x")
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        code, out, err = yield self.cli("balancer", "weight", "www/web/10.0.0.9:81", "0")
        self.assertEqual(code, ExitCode.USAGE)
        self.assertIn("weight must be > 0", err)
        code, out, err = yield self.cli("balancer", "up", "just-a-host")
        self.assertEqual(code, ExitCode.USAGE)
        for argv in (
            ("balancer", "add-service", "api", "tcp:8081:interface=127.0.0.1"),
            ("balancer", "add-group", "api/blue", "--scheduler", "leastconns"),
            ("balancer", "add", "api/blue", "10.0.0.1:80"),
            ("balancer", "retry", "api/blue/10.0.0.1:80"),
            ("balancer", "remove-all", "api/blue"),
            ("balancer", "remove-group", "api/blue"),
            ("balancer", "remove-service", "api"),
        ):
            code, out, err = yield self.cli(*argv)
            self.assertEqual(code, ExitCode.OK, (argv, err))
        self.assertNotIn("api", self.balancer.services)

    @defer.inlineCallbacks
    def test_backupWithoutBackupService(self):
        """A host that declares no backup says so with the no-service exit code, in one line."""
        for argv in (("backup", "status"), ("restore", "--dry-run")):
            code, out, err = yield self.cli(*argv)
            self.assertEqual(code, ExitCode.NO_SERVICE, (argv, out, err))
            self.assertEqual(err, "salvusctl: this host runs no backup service\n")
        code, out, err = yield self.cli("backup", "frobnicate")
        self.assertEqual(code, ExitCode.USAGE)

    @defer.inlineCallbacks
    def test_monitorAlertsDiff(self):
        code, out, err = yield self.cli("monitor", "top")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(out.splitlines()[1].split()[:2], ["worker:0", "80.0"])
        code, out, err = yield self.cli("monitor", "history", "web:0", "--since", "3600")
        self.assertEqual(len(out.splitlines()), 6, out)
        code, out, err = yield self.cli("alerts")
        self.assertIn("cpu-high", out)
        code, out, err = yield self.cli("diff")
        self.assertEqual((code, out), (ExitCode.OK, ""))
        self.balancer.removeHost("www", "web", "127.0.0.1:8001")
        code, out, err = yield self.cli("diff")
        self.assertEqual(code, ExitCode.NOT_RUNNING)
        self.assertEqual(out, "+ balancer www/web/127.0.0.1:8001 (added)\n")
        code, out, err = yield self.cli("reconcile", user=VIEW)
        self.assertEqual(code, ExitCode.AUTH)
        code, out, err = yield self.cli("-v", "reconcile")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIn("127.0.0.1:8001", self.balancer.services["www"]["groups"]["web"]["hosts"])
        code, out, err = yield self.cli("diff")
        self.assertEqual(code, ExitCode.OK)

    @defer.inlineCallbacks
    def test_settingsFromConfigFile(self):
        """Options beat the environment, which beats ~/.salvusctl.conf."""
        with open(os.path.join(self.tmp, ".salvusctl.conf"), "w") as f:
            f.write(f"[salvusctl]\nurl = {self.url}\nuser = view\npassword = view-secret\n")
        code, out, err = yield self.cli(
            "status", env={"SALVUS_URL": "", "SALVUS_USER": "", "SALVUS_PASSWORD": ""}
        )
        # an empty SALVUS_URL is set, and empty: an error rather than a silent fallback
        self.assertEqual(code, ExitCode.USAGE)
        env = {"HOME": self.tmp}

        def call():
            out, err = io.StringIO(), io.StringIO()
            code = run(["stop", "web:0"], env, out, err, io.StringIO())
            return code, err.getvalue()

        code, err = yield threads.deferToThread(call)
        self.assertEqual(code, ExitCode.AUTH, err)  # the file's viewer may not stop

        def call2():
            out, err = io.StringIO(), io.StringIO()
            code = run(["-u", "op", "-p", "op-secret", "stop", "web:0"], env, out, err, io.StringIO())
            return code, err.getvalue()

        code, err = yield threads.deferToThread(call2)
        self.assertEqual(code, ExitCode.OK, err)

    @defer.inlineCallbacks
    def test_unreachable(self):
        code, out, err = yield self.cli("status", env={"SALVUS_URL": "http://127.0.0.1:1"})
        self.assertEqual(code, ExitCode.UNREACHABLE)
        self.assertIn("connection refused", err)
        code, out, err = yield self.cli("status", env={"SALVUS_URL": "unix:///nonexistent/admin.sock"})
        self.assertEqual(code, ExitCode.UNREACHABLE)
        code, out, err = yield self.cli("status", env={"SALVUS_URL": "ftp://x"})
        self.assertEqual(code, ExitCode.USAGE)

    @defer.inlineCallbacks
    def test_usage(self):
        code, out, err = yield self.cli("frobnicate")
        self.assertEqual(code, ExitCode.USAGE)
        self.assertEqual(err.count("\n"), 1)
        self.assertTrue(err.startswith("salvusctl: "))

    @defer.inlineCallbacks
    def test_consoleScript(self):
        """The entry point exits with the code (a child process, as a shell script sees it)."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": ROOT,
            "HOME": self.tmp,
            "SALVUS_URL": self.url,
            "SALVUS_USER": "op",
            "SALVUS_PASSWORD": "op-secret",
        }
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "from salvusctl.cli import main; main()", "status"],
            env=env,
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"worker:0", out)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "from salvusctl.cli import main; main()", "stop", "nope:1"],
            env=env,
            reactor=reactor,
        )
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        self.assertEqual(err.decode().count("\n"), 1)


class HTTPSTests(CLITestBase):
    """The admin over ssl: with a self-signed certificate made under var/, pinned or trusted."""

    listeners = ("ssl:0:interface=127.0.0.1",)
    scheme = "https"

    def test_certificateMadeOnce(self):
        cert = os.path.join(self.tmp, "admin", "admin.crt")
        key = os.path.join(self.tmp, "admin", "admin.key")
        self.assertTrue(os.path.exists(cert))
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertRegex(self.admin.fingerprint, r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")

    @defer.inlineCallbacks
    def test_cacert(self):
        cert = os.path.join(self.tmp, "admin", "admin.crt")
        code, out, err = yield self.cli("--cacert", cert, "status")
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("status")
        self.assertEqual(code, ExitCode.UNREACHABLE)
        self.assertIn("certificate not trusted", err)

    @defer.inlineCallbacks
    def test_fingerprint(self):
        code, out, err = yield self.cli("--fingerprint", self.admin.fingerprint.lower(), "status")
        self.assertEqual(code, ExitCode.OK, err)
        wrong = "00" * 32
        code, out, err = yield self.cli("--fingerprint", wrong, "status")
        self.assertEqual(code, ExitCode.UNREACHABLE)
        self.assertIn("is not the pinned", err)


class UserCommandTests(TestCase):
    """`salvusctl user` edits the local users file (no server involved)."""

    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.path = os.path.join(self.tmp, "users")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def cli(self, *argv, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        code = run(list(argv), {"SALVUS_USERS": self.path}, out, err, io.StringIO(stdin))
        return code, out.getvalue(), err.getvalue()

    def test_addPasswdRemove(self):
        self.assertEqual(self.cli("user", "add", "alice", "--password-stdin", stdin="pw1\n")[0], 0)
        self.assertEqual(UsersFile(self.path).check("alice", "pw1").role, "operator")
        self.assertEqual(
            self.cli("user", "passwd", "alice", "--role", "viewer", "--password-stdin", stdin="pw2\n")[0], 0
        )
        self.assertEqual(UsersFile(self.path).check("alice", "pw2").role, "viewer")
        code, out, err = self.cli("user", "add", "bob", "--random")
        self.assertEqual(code, 0)
        self.assertIsNotNone(UsersFile(self.path).check("bob", out.strip()))
        code, out, err = self.cli("user", "list")
        self.assertEqual(out, "alice  viewer\nbob  operator\n")
        self.assertEqual(self.cli("user", "remove", "alice")[0], 0)
        code, out, err = self.cli("user", "remove", "alice")
        self.assertEqual((code, err), (ExitCode.FAILED, "salvusctl: no user 'alice'\n"))
        code, out, err = self.cli("user", "add", "carol", "--password-stdin", stdin="\n")
        self.assertEqual(code, ExitCode.USAGE)


class UnixSocketTests(CLITestBase):
    """salvusctl over the owner-only unix socket."""

    sockdir = os.path.join("/tmp", f"salvus-cli-{os.getpid()}")
    listeners = (f"unix:{sockdir}/admin.sock",)

    @defer.inlineCallbacks
    def setUp(self):
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        yield super().setUp()

    @defer.inlineCallbacks
    def test_statusAndStop(self):
        url = f"unix://{self.sockdir}/admin.sock"
        code, out, err = yield self.cli("status", env={"SALVUS_URL": url})
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(len(out.splitlines()), 3)
        code, out, err = yield self.cli("-s", url, "stop", "worker")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(self.supervisor.instanceInfo("worker:0")["state"], "STOPPED")


class FaultTextTests(TestCase):
    def test_oneReadableLine(self):
        from xmlrpc.client import Fault

        from salvusctl.cli.main import _faultText

        self.assertEqual(_faultText(Fault(60, "ALREADY_STARTED: web:0")), "web:0: already started")
        self.assertEqual(_faultText(Fault(10, "BAD_NAME")), "no such name")
        self.assertEqual(
            _faultText(Fault(1002, "NO_SERVICE: this host runs no supervisor")),
            "this host runs no supervisor",
        )
        self.assertEqual(_faultText(Fault(8002, "error")), "error")


class PrintDiffTests(SynchronousTestCase):
    def test_restartReasonAndFailure(self):
        """A restart-needed entry prints its names and, once, why; a failed apply goes to stderr."""
        import io

        from salvusctl.cli.main import Output, _printDiff

        out, err = io.StringIO(), io.StringIO()
        diff = {
            "admin": {"added": [], "changed": ["listen"], "removed": [], "restart": True,
                      "reason": "listeners are bound once"},
            "monitor": {"added": [], "changed": ["interval"], "removed": []},
            "backup": {"added": ["x"], "changed": [], "removed": [], "failed": "OSError: boom"},
        }
        self.assertTrue(_printDiff(diff, Output(0, out, err), always=True))
        self.assertEqual(out.getvalue().splitlines(), [
            "~ admin listen (changed, restart needed)",
            "  admin: restart needed: listeners are bound once",
            "+ backup x (added)",
            "~ monitor interval (changed)",
        ])
        self.assertIn("backup: not applied: OSError: boom", err.getvalue())

"""The real C{supervisorctl} (PyPI C{supervisor}) drives a Salvus admin unchanged.

Over a C{unix://} admin socket and over C{http://} on loopback, with C{-u/-p} basic auth, for
status, start, stop, restart and tail.  The admin runs on the test's reactor, backed by the
FakeSupervisor; C{supervisorctl} is a real child process.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import OP, VIEW, tempDir, writeUsers

SUPERVISORCTL = os.path.join(os.path.dirname(sys.executable), "supervisorctl")


class _AdminForSupervisorctl(TestCase):
    timeout = 60
    skip = (
        None
        if os.path.exists(SUPERVISORCTL)
        else f"needs {SUPERVISORCTL}: pip install supervisor (test dependency)"
    )

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        # unix socket paths are limited to ~100 bytes: keep the socket in a short directory
        self.sockdir = os.path.join("/tmp", f"salvus-t-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        self.sock = os.path.join(self.sockdir, "admin.sock")
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        self.supervisor = FakeSupervisor({"web": 2, "worker": 1}, clock=reactor)
        self.supervisor.emit("web:0", "request served in 3 ms")
        state = AdminState(services={"supervisor": self.supervisor}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{self.sock}", "tcp:0:interface=127.0.0.1", users=users)
        declaration.validate(None)
        self.service = AdminService(reactor, [declaration], state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        self.http = f"http://127.0.0.1:{[p for p in ports if hasattr(p.getHost(), 'port')][0].getHost().port}"

    def ctl(self, server, *args, user=OP):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp, "LANG": "C.UTF-8"}
        argv = ["-s", server, "-u", user[0], "-p", user[1], *args]
        return getProcessOutputAndValue(SUPERVISORCTL, argv, env=env, path=self.tmp, reactor=reactor)


class SupervisorctlTests(_AdminForSupervisorctl):
    @defer.inlineCallbacks
    def test_observesSupervisorWhileRunning(self):
        """The admin counts state changes while it runs and stops observing when it stops."""
        self.assertEqual(len(self.supervisor._observers), 1)
        yield self.service.stopService()
        self.assertEqual(self.supervisor._observers, [])

    def test_socketIsOwnerOnly(self):
        """The unix socket is created 0600, as supervisord's default socket is."""
        self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o600)

    @defer.inlineCallbacks
    def test_statusOverUnixSocket(self):
        out, err, code = yield self.ctl(f"unix://{self.sock}", "status")
        lines = out.decode().splitlines()
        self.assertEqual(
            [line.split()[:2] for line in lines],
            [["web:0", "RUNNING"], ["web:1", "RUNNING"], ["worker:0", "RUNNING"]],
            out,
        )
        self.assertIn("pid 40", lines[0])
        self.assertEqual(code, 0, err)

    @defer.inlineCallbacks
    def test_stopStartRestartOverHTTP(self):
        out, err, code = yield self.ctl(self.http, "stop", "web:0")
        self.assertEqual(out.decode().strip(), "web:0: stopped", err)
        self.assertEqual(self.supervisor.instanceInfo("web:0")["state"], "STOPPED")
        out, err, code = yield self.ctl(self.http, "status", "web:0")
        self.assertIn("STOPPED", out.decode())
        self.assertEqual(code, 3)  # LSB "not running", as with supervisord
        out, err, code = yield self.ctl(self.http, "start", "web:0")
        self.assertEqual(out.decode().strip(), "web:0: started", err)
        out, err, code = yield self.ctl(self.http, "start", "web:0")
        self.assertIn("already started", out.decode())
        pid = self.supervisor.instanceInfo("web:1")["pid"]
        out, err, code = yield self.ctl(self.http, "restart", "web:*")
        self.assertEqual(
            out.decode().split("\n")[:4],
            ["web:0: stopped", "web:1: stopped", "web:0: started", "web:1: started"],
        )
        self.assertNotEqual(self.supervisor.instanceInfo("web:1")["pid"], pid)
        out, err, code = yield self.ctl(self.http, "stop", "all")
        self.assertEqual(
            sorted(out.decode().split()),
            sorted(["web:0:", "stopped", "web:1:", "stopped", "worker:0:", "stopped"]),
        )

    @defer.inlineCallbacks
    def test_avail(self):
        out, err, code = yield self.ctl(self.http, "avail")
        self.assertEqual(
            [line.split()[:4] for line in out.decode().splitlines()],
            [
                ["web:0", "in", "use", "auto"],
                ["web:1", "in", "use", "auto"],
                ["worker:0", "in", "use", "auto"],
            ],
            err,
        )

    @defer.inlineCallbacks
    def test_tail(self):
        out, err, code = yield self.ctl(f"unix://{self.sock}", "tail", "web:0")
        self.assertIn("request served in 3 ms", out.decode())
        out, err, code = yield self.ctl(self.http, "tail", "nope:0")
        self.assertIn("no such process name", out.decode())

    @defer.inlineCallbacks
    def test_authentication(self):
        """Wrong credentials are refused; a viewer sees status but cannot stop anything."""
        out, err, code = yield self.ctl(self.http, "status", user=("op", "wrong"))
        self.assertIn("401", out.decode() + err.decode())
        self.assertNotEqual(code, 0)
        out, err, code = yield self.ctl(self.http, "status", user=VIEW)
        self.assertIn("RUNNING", out.decode())
        out, err, code = yield self.ctl(f"unix://{self.sock}", "stop", "web:0", user=VIEW)
        self.assertNotEqual(code, 0)
        self.assertEqual(self.supervisor.instanceInfo("web:0")["state"], "RUNNING")


class _Collect(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.ended = defer.Deferred()
        self.waiters: list[tuple[bytes, defer.Deferred]] = []

    def outReceived(self, data):
        self.out += data
        for text, d in list(self.waiters):
            if text in self.out:
                self.waiters.remove((text, d))
                d.callback(None)

    def waitFor(self, text: bytes) -> defer.Deferred:
        d = defer.Deferred()
        if text in self.out:
            d.callback(None)
        else:
            self.waiters.append((text, d))
        return d

    def processEnded(self, reason):
        self.ended.callback(None)


class SupervisorctlFollowTests(_AdminForSupervisorctl):
    """`supervisorctl tail -f` streams from /logtail until interrupted."""

    timeout = 20

    @defer.inlineCallbacks
    def test_tailFollow(self):
        for server in (self.http, f"unix://{self.sock}"):
            collector = _Collect()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": self.tmp,
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            }
            argv = [SUPERVISORCTL, "-s", server, "-u", OP[0], "-p", OP[1], "tail", "-f", "web:0"]
            process = reactor.spawnProcess(collector, SUPERVISORCTL, argv, env=env, path=self.tmp)
            try:
                yield collector.waitFor(b"request served in 3 ms")
                self.supervisor.emit("web:0", f"a new line for {server}")
                yield collector.waitFor(f"a new line for {server}".encode())
            finally:
                process.signalProcess("KILL")
                yield collector.ended

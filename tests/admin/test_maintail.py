"""The supervisor's main log, read by the real C{supervisorctl maintail} (and C{maintail -f}).

A real SupervisorService runs a steady program and one that crashes until FATAL; the admin
serves them on a unix socket.  The main log must say what happened to each (spawned with its
pid, exited, gave up and why, stopped), in the file that C{readLog} serves, in the host log
and in the store hook.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.faults import Faults
from salvusctl.admin.state import AdminState
from salvusctl.supervisor.deploy import Backoff, Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import OP, Harness, tempDir, writeUsers
from tests.admin.test_supervisorctl import SUPERVISORCTL, _Collect
from tests.helpers import waitFor
from tests.supervisor import scratch


class MainLogTests(TestCase):
    timeout = 60
    skip = None if os.path.exists(SUPERVISORCTL) else f"needs {SUPERVISORCTL}"

    @inlineCallbacks
    def setUp(self):
        self.stored = []
        self.hostLog = []

        def observe(event):
            if event.get("log_namespace") == "salvus.supervisor":
                self.hostLog.append(event.get("text", ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.svc = SupervisorService(reactor, [
            Deploy("steady", command=["sleep", "1000"], startsecs=0, stopwaitsecs=2),
            Deploy("crashy", command=["sh", "-c", "echo boom >&2; exit 4"], startsecs=0.5,
                   backoff=Backoff(0.05, 1, 0.05, 1)),
        ], runDir=scratch(self), reapInterval=0.2)
        self.svc.setStoreHook(self.stored.append)
        self.addCleanup(lambda: self.svc.stopService() if self.svc.running else None)
        self.svc.startService()
        yield waitFor(lambda: self.svc.instanceInfo("crashy:0")["state"] == "FATAL"
                      and self.svc.instanceInfo("steady:0")["state"] == "RUNNING")
        self.tmp = tempDir(self)
        sockdir = os.path.join("/tmp", f"salvus-ml-{os.getpid()}")
        os.makedirs(sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, sockdir, True)
        self.sock = f"unix://{sockdir}/admin.sock"
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        state = AdminState(services={"supervisor": self.svc}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{sockdir}/admin.sock", users=users)
        declaration.validate(None)
        self.admin = AdminService(reactor, [declaration], state, self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        yield self.admin.ready

    def ctl(self, *args):
        from twisted.internet.utils import getProcessOutputAndValue

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp, "LANG": "C.UTF-8"}
        return getProcessOutputAndValue(SUPERVISORCTL, ["-s", self.sock, "-u", OP[0], "-p", OP[1], *args],
                                        env=env, path=self.tmp, reactor=reactor)

    @inlineCallbacks
    def test_maintailShowsSpawnsExitsAndFatal(self):
        """`supervisorctl maintail` prints the events, with the pid and FATAL's reason; the same
        lines went to the host log and, under each instance's name, to the store hook."""
        out, err, code = yield self.ctl("maintail")
        text = out.decode()
        pid = self.svc.instanceInfo("steady:0")["pid"]
        self.assertIn(f"spawned: 'steady:0' with pid {pid}", text, err)
        self.assertIn("success: steady:0 entered RUNNING state", text)
        self.assertIn("exited: crashy:0 (exit status 4; not expected)", text)
        self.assertIn("gave up: crashy:0 entered FATAL state", text)
        self.assertEqual(code, 0)
        self.assertIn(f"spawned: 'steady:0' with pid {pid}", self.hostLog)
        events = {(line.instance, line.text) for line in self.stored if line.stream == "supervisor"}
        self.assertIn(("steady:0", f"spawned: 'steady:0' with pid {pid}"), events)
        self.assertTrue(any(i == "crashy:0" and t.startswith("gave up:") for i, t in events))

    @inlineCallbacks
    def test_maintailFollowGetsNewEvents(self):
        """`supervisorctl maintail -f` is pushed each new event: a stop and a signal."""
        collector = _Collect()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp, "PYTHONUNBUFFERED": "1"}
        argv = [SUPERVISORCTL, "-s", self.sock, "-u", OP[0], "-p", OP[1], "maintail", "-f"]
        process = reactor.spawnProcess(collector, SUPERVISORCTL, argv, env=env, path=self.tmp)
        try:
            yield collector.waitFor(b"gave up: crashy:0")
            self.svc.signalInstance("steady:0", "HUP")
            yield collector.waitFor(b"signalled: steady:0")
            out, err, code = yield self.ctl("stop", "steady:0")
            yield collector.waitFor(b"waiting for steady:0 to stop")
            yield collector.waitFor(b"stopped: steady:0")
        finally:
            process.signalProcess("KILL")
            yield collector.ended

    def test_readLogAndClearLogOverRPC(self):
        """readLog follows supervisord's offset rules on the file; clearLog empties it."""
        h = Harness(tempDir(self), services={"supervisor": self.svc})
        whole = h.rpc(self, "supervisor.readLog", 0, 0)
        self.assertIn("spawned: 'steady:0'", whole)
        self.assertEqual(h.rpc(self, "supervisor.readLog", -10, 0), whole[-10:])
        self.assertEqual(h.rpc(self, "supervisor.readLog", 0, 10), whole[:10])
        self.assertEqual(h.rpc(self, "supervisor.readLog", -1, 5).faultCode, Faults.BAD_ARGUMENTS)
        self.assertIs(h.rpc(self, "supervisor.clearLog"), True)
        self.assertEqual(h.rpc(self, "supervisor.readLog", 0, 0), "")
        self.svc.signalInstance("steady:0", "USR1")
        self.assertIn("signalled: steady:0", h.rpc(self, "supervisor.readLog", 0, 0))

"""C{supervisor.sendProcessStdin}: what an operator types reaches the instance's stdin.

Through Python's C{xmlrpc.client} and through the real C{supervisorctl fg} (which reads lines from
its own stdin and sends each with C{sendProcessStdin}), against a real admin on real sockets over
a real supervisor with real child processes.  Fault codes are supervisord's: NOT_RUNNING for a
stopped process, NO_FILE for one with no stdin pipe, BAD_NAME for an unknown one.
"""

from __future__ import annotations

import os
import shutil
import sys
import xmlrpc.client as xmlrpclib

from twisted.internet import defer, reactor, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.faults import Faults
from salvusctl.admin.state import AdminState
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import OP, tempDir, writeUsers
from tests.admin.test_supervisorctl import SUPERVISORCTL
from tests.helpers import waitFor
from tests.supervisor import scratch

ECHO = ("import sys\n"
        "print('up', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', line.strip(), flush=True)\n")
SLEEP = "import signal; print('up', flush=True); signal.pause()"


class SendProcessStdinTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.sockdir = os.path.join("/tmp", f"salvus-in-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        self.sock = os.path.join(self.sockdir, "admin.sock")
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        deploys = [
            Deploy("echo", command=[sys.executable, "-c", ECHO], stdin=True, startsecs=0),
            Deploy("deaf", command=[sys.executable, "-c", SLEEP], startsecs=0),
        ]
        self.sup = SupervisorService(reactor, deploys, runDir=scratch(self), reapInterval=0.2)
        self.sup.startService()
        self.addCleanup(lambda: self.sup.stopService() if self.sup.running else None)
        yield self.sup.ready
        state = AdminState(services={"supervisor": self.sup}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{self.sock}", "tcp:0:interface=127.0.0.1", users=users)
        declaration.validate(None)
        self.admin = AdminService(reactor, [declaration], state, self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        ports = yield self.admin.ready
        self.port = [p for p in ports if hasattr(p.getHost(), "port")][0].getHost().port
        yield waitFor(lambda: "up" in self.sup.tailLog("echo:0"), timeout=20)

    def rpc(self, method: str, *args):
        """One XML-RPC call over the admin's TCP socket, in a thread (the reactor keeps running)."""
        url = f"http://{OP[0]}:{OP[1]}@127.0.0.1:{self.port}/RPC2"

        def call():
            try:
                return getattr(xmlrpclib.ServerProxy(url), method)(*args)
            except xmlrpclib.Fault as f:
                return ("fault", f.faultCode, f.faultString)

        return threads.deferToThread(call)

    @defer.inlineCallbacks
    def test_xmlrpc_client(self):
        """Text and binary both arrive; each refusal has supervisord's fault code."""
        self.assertIs((yield self.rpc("supervisor.sendProcessStdin", "echo:0", "hello\n")), True)
        self.assertIs((yield self.rpc("supervisor.sendProcessStdin", "echo", "w\u00f6rld\n")), True)
        self.assertIs((yield self.rpc("supervisor.sendProcessStdin", "echo:0",
                                      xmlrpclib.Binary(b"raw\n"))), True)
        yield waitFor(lambda: len(self.sup.tailLog("echo:0")) >= 4, timeout=20)
        self.assertEqual(self.sup.tailLog("echo:0"), ["up", "got hello", "got w\u00f6rld", "got raw"])
        fault = yield self.rpc("supervisor.sendProcessStdin", "deaf:0", "x\n")
        self.assertEqual(fault[:2], ("fault", Faults.NO_FILE))
        self.assertIn("stdin=True", fault[2])
        fault = yield self.rpc("supervisor.sendProcessStdin", "nope:0", "x\n")
        self.assertEqual(fault[:2], ("fault", Faults.BAD_NAME))
        fault = yield self.rpc("supervisor.sendProcessStdin", "echo:0", 42)
        # every verb's wrong type is BAD_ARGUMENTS naming the argument (supervisord: INCORRECT_PARAMETERS)
        self.assertEqual(fault[:2], ("fault", Faults.BAD_ARGUMENTS))
        self.assertIn("chars must be a string or base64 data, not int", fault[2])
        yield self.sup.stopInstance("echo:0")
        fault = yield self.rpc("supervisor.sendProcessStdin", "echo:0", "x\n")
        self.assertEqual(fault[:2], ("fault", Faults.NOT_RUNNING))

    @defer.inlineCallbacks
    def test_supervisorctl_fg(self):
        """C{supervisorctl fg echo:0} with two lines on its stdin: the instance reads both."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp, "LANG": "C.UTF-8"}
        argv = ["-s", f"unix://{self.sock}", "-u", OP[0], "-p", OP[1], "fg", "echo:0"]
        stdin = os.path.join(self.tmp, "typed")
        with open(stdin, "w") as f:
            f.write("first line\nsecond line\n")
        # supervisorctl reads the operator's lines from its stdin; the shell gives it the file.
        script = f'exec "$0" "$@" < {stdin}'
        out, err, code = yield getProcessOutputAndValue(
            "/bin/sh", ["-c", script, SUPERVISORCTL, *argv], env=env, path=self.tmp, reactor=reactor)
        self.assertIn("Press Ctrl-C to exit", out.decode(), err)
        yield waitFor(lambda: len(self.sup.tailLog("echo:0")) >= 3, timeout=20)
        self.assertEqual(self.sup.tailLog("echo:0"), ["up", "got first line", "got second line"])
        self.assertEqual(self.sup.instanceInfo("echo:0")["state"], "RUNNING")

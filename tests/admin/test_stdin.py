"""C{supervisor.sendProcessStdin}: what an operator types reaches the instance's stdin.

Through Python's C{xmlrpc.client} and through the real C{supervisorctl fg} (which reads lines from
its own stdin and sends each with C{sendProcessStdin}), against a real admin on real sockets over
a real supervisor with real child processes.  Fault codes are supervisord's: NOT_RUNNING for a
stopped process, NO_FILE for one with no stdin pipe, BAD_NAME for an unknown one.
"""

from __future__ import annotations

import os
import sys
import xmlrpc.client as xmlrpclib

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.admin.faults import Faults
from salvusctl.supervisor import Deploy
from tests.admin.helpers import OP
from tests.admin.supervised import SupervisedAdmin, ctlEnv
from tests.admin.test_supervisorctl import SUPERVISORCTL
from tests.helpers import waitFor

ECHO = ("import sys\n"
        "print('up', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', line.strip(), flush=True)\n")
SLEEP = "import signal; print('up', flush=True); signal.pause()"


class SendProcessStdinTests(SupervisedAdmin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        yield self.startSupervisedAdmin([
            Deploy("echo", command=[sys.executable, "-c", ECHO], stdin=True, startsecs=0),
            Deploy("deaf", command=[sys.executable, "-c", SLEEP], startsecs=0),
        ], "in")
        yield waitFor(lambda: "up" in self.sup.tailLog("echo:0"), timeout=20)

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
        env = ctlEnv(self.tmp)
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

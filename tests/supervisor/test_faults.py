"""One stop signal per process, counted by a real child that takes its signals with sigtimedwait
(a queued real-time signal for the exact count at the oscalls level, TERM through the service)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import oscalls
from salvusctl.supervisor.deploy import Deploy, Ready
from salvusctl.supervisor.service import SupervisorService
from tests.supervisor import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTER = os.path.join(HERE, "sigcounter.py")


def counted(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


class OneStopSignalTests(TestCase):
    timeout = 60

    def service(self, *deploys, **kw) -> SupervisorService:
        svc = SupervisorService(reactor, list(deploys), runDir=scratch(self), reapInterval=0.2, **kw)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    def test_group_and_member_signalled_once(self):
        """signalMembers given a leader both as a group and as a member signals it once.

        A real-time signal is queued by the kernel, never merged with a pending one of the same
        number, so the child's count is exact: before, it was 2 every time."""
        out = scratch(self) + ".count"
        child = subprocess.Popen([sys.executable, COUNTER, out, "RT", "0.2"], stdout=subprocess.PIPE,
                                 start_new_session=True)
        self.addCleanup(child.wait)
        self.addCleanup(lambda: child.poll() is None and child.kill())
        self.assertEqual(child.stdout.readline(), b"ready\n")
        starttime = oscalls.readStat(child.pid).starttime
        oscalls.signalMembers({child.pid: starttime}, signal.SIGRTMIN + 1, [child.pid])
        self.assertEqual(child.wait(timeout=10), 0)
        self.assertEqual(len(counted(out)), 1)

    @inlineCallbacks
    def test_each_stop_sends_one_term(self):
        """Ten stops of a program that lingers after its first TERM: one TERM each.

        Such a program (uvicorn, gunicorn, Celery, Node) reads a second TERM as "force quit";
        before, 102 of 120 stops delivered two."""
        out = scratch(self) + ".count"
        svc = self.service(Deploy("c", [sys.executable, COUNTER, out, "TERM", "0.15"],
                                  ready=Ready("log", pattern="^ready$"), stopwaitsecs=10))
        svc.startService()
        yield svc.ready
        for round in range(10):
            if round:
                yield svc.startInstance("c:0")
            yield svc.stopInstance("c:0")
            self.assertEqual(len(counted(out)), round + 1, f"round {round}: {counted(out)}")
        self.assertEqual(svc.instanceInfo("c:0")["exitstatus"], 0)

"""Instances of a C{Deploy(group=...)} answer one by one to every sensible spelling.

For deploy C{web} in group C{g}, C{supervisorctl status} prints C{g:web:0} (supervisord's
C{group:process} form); an operator types that back, or the instance's own name C{web:0}.  Both
reach the instance through XML-RPC, the real C{supervisorctl} and C{salvusctl}, against a real admin on
real sockets over a real supervisor with real child processes.
"""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import Deploy
from tests.admin.helpers import OP
from tests.admin.supervised import SupervisedAdmin

CHILD = ("import signal, sys; print('up', flush=True); "
         "print('err line', file=sys.stderr, flush=True); signal.pause()")


class GroupedInstanceNamesTests(SupervisedAdmin, TestCase):
    timeout = 60

    def setUp(self):
        return self.startSupervisedAdmin([
            Deploy("web", command=[sys.executable, "-c", CHILD], numprocs=2, group="g", startsecs=0),
            Deploy("api", command=[sys.executable, "-c", CHILD], group="g", startsecs=0),
        ], "g")

    def state(self, instance: str) -> str:
        return self.sup.instanceInfo(instance)["state"]

    @defer.inlineCallbacks
    def test_xmlrpcEverySpelling(self):
        """C{g:web:0} and C{web:0} both stop, start, signal, describe and read one instance."""
        for spelling in ("g:web:0", "web:0"):
            info = yield self.rpc("supervisor.getProcessInfo", spelling)
            self.assertEqual((info["group"], info["name"], info["statename"]), ("g", "web:0", "RUNNING"))
            result = yield self.rpc("supervisor.stopProcess", spelling)
            self.assertIs(result, True, spelling)
            self.assertEqual(self.state("web:0"), "STOPPED")
            self.assertEqual(self.state("web:1"), "RUNNING")
            result = yield self.rpc("supervisor.startProcess", spelling)
            self.assertIs(result, True, spelling)
            self.assertEqual(self.state("web:0"), "RUNNING")
            pid = self.sup.instanceInfo("web:0")["pid"]
            result = yield self.rpc("supervisor.signalProcess", spelling, "KILL")
            self.assertIs(result, True, spelling)
            yield _until(lambda pid=pid: self.sup.instanceInfo("web:0")["pid"] not in (pid, 0)
                         and self.state("web:0") == "RUNNING")
            yield _until(lambda: "err line" in self.sup.tailLog("web:0", 100, "stderr"))
            out = yield self.rpc("supervisor.readProcessStdoutLog", spelling, 0, 0)
            self.assertIn("up", out)
            tail = yield self.rpc("supervisor.tailProcessStderrLog", spelling, 0, 1000)
            self.assertIn("err line", tail[0])
        for spelling in ("g:web:0", "web:0"):
            self.assertIs((yield self.rpc("supervisor.clearProcessLogs", spelling)), True)
        for bad in ("g:nope:0", "h:web:0", "web:7", "g:api:1"):
            fault = yield self.rpc("supervisor.stopProcess", bad)
            self.assertEqual(fault[:2], ("fault", 10), bad)
        self.assertEqual(self.state("web:0"), "RUNNING")

    @defer.inlineCallbacks
    def test_groupStopReportsGroupProcessNames(self):
        """A group stop's result names each instance as C{g} / C{web:0}, what status prints."""
        results = yield self.rpc("supervisor.stopProcessGroup", "g")
        self.assertEqual(sorted((r["group"], r["name"]) for r in results),
                         [("g", "api:0"), ("g", "web:0"), ("g", "web:1")])

    @defer.inlineCallbacks
    def test_supervisorctlStopStartOneByOne(self):
        """The real C{supervisorctl} stops and starts C{g:web:0} alone, as its status names it."""
        out, err, code = yield self.ctl("status")
        self.assertIn("g:web:0", out.decode(), err)
        out, err, code = yield self.ctl("stop", "g:web:0")
        self.assertEqual(out.decode().strip(), "g:web:0: stopped", err)
        self.assertEqual(self.state("web:0"), "STOPPED")
        self.assertEqual(self.state("web:1"), "RUNNING")
        out, err, code = yield self.ctl("status", "g:web:0")
        self.assertIn("STOPPED", out.decode())
        out, err, code = yield self.ctl("start", "g:web:0")
        self.assertEqual(out.decode().strip(), "g:web:0: started", err)
        self.assertEqual(self.state("web:0"), "RUNNING")
        out, err, code = yield self.ctl("stop", "web:1")
        self.assertEqual(out.decode().strip(), "web:1: stopped", err)
        self.assertEqual(self.state("web:1"), "STOPPED")
        out, err, code = yield self.ctl("tail", "g:web:0")
        self.assertIn("up", out.decode())
        out, err, code = yield self.ctl("stop", "g:nope:0")
        self.assertIn("no such process", out.decode())

    def salvusctl(self, *args):
        from tests.helpers import childEnv

        env = childEnv(SALVUS_USER=OP[0], SALVUS_PASSWORD=OP[1], HOME=self.tmp)
        d = getProcessOutputAndValue(sys.executable, ["-m", "salvusctl.cli", "-s", f"unix://{self.sock}",
                                                      *args], env=env, path=self.tmp, reactor=reactor)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    @defer.inlineCallbacks
    def test_salvusctlStopStartOneByOne(self):
        """C{salvusctl stop g:web:0} and C{stop web:1} each stop that instance alone; start and
        tail reach one instance by either spelling; an unknown one is exit 6 in one line."""
        for name, other in (("g:web:0", "web:1"), ("web:1", "web:0")):
            out, err, code = yield self.salvusctl("stop", name)
            self.assertEqual(code, 0, (out, err))
            bare = name.removeprefix("g:")
            self.assertEqual(self.state(bare), "STOPPED")
            self.assertEqual(self.state(other), "RUNNING")
            out, err, code = yield self.salvusctl("start", name)
            self.assertEqual(code, 0, (out, err))
            self.assertEqual(self.state(bare), "RUNNING")
        out, err, code = yield self.salvusctl("restart", "g:web:0")
        self.assertEqual((code, self.state("web:0"), self.state("web:1")), (0, "RUNNING", "RUNNING"), err)
        out, err, code = yield self.salvusctl("tail", "g:web:1")
        self.assertEqual(code, 0, err)
        self.assertIn("up", out)
        out, err, code = yield self.salvusctl("stop", "g:nope:0")
        self.assertEqual(code, 6, (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)


def _until(predicate, timeout: float = 10.0):
    from tests.helpers import waitFor

    return waitFor(predicate, timeout=timeout)

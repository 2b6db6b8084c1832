"""The bulk verbs of the real supervisorctl against a real Salvus host (twistd), beside supervisord.

C{stop all}, C{signal HUP all}, C{signal HUP group:*} and C{clear all} call
C{supervisor.stopAllProcesses}, C{signalAllProcesses}, C{signalProcessGroup} and
C{clearAllProcessLogs}.  Each is sent to both supervisors running the same two groups of two real
children (L{hupcounter}, which writes a line for each HUP and for its TERM), and compared: the
same supervisorctl output and exit code, and the same effect on the children as their own stdout
logs tell it.  Only groups of two are used, so no one-instance name enters the comparison.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer

from tests.admin.test_sidebyside import SideBySideBase
from tests.helpers import waitFor

HUPCOUNTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hupcounter.py")

PROGRAMS = {
    group: ({"command": f"{sys.executable} {HUPCOUNTER}", "numprocs": "2",
             "process_name": "%%(process_num)d", "startsecs": "1"},
            f"command=[{sys.executable!r}, {HUPCOUNTER!r}], numprocs=2, startsecs=1")
    for group in ("pool", "crew")
}
NAMES = ("pool:0", "pool:1", "crew:0", "crew:1")
SUPERVISORS = ("supervisord", "salvus")


class BulkVerbTests(SideBySideBase):
    programs = PROGRAMS

    def isReady(self, which: str) -> bool:
        return all(self.info(which, name)["statename"] == "RUNNING"
                   and self.out(which, name).startswith("ready") for name in NAMES)

    def info(self, which: str, name: str) -> dict:
        return self.call(which, "supervisor.getProcessInfo", name)

    def out(self, which: str, name: str) -> str:
        """The instance's whole stdout log, as the supervisor serves it."""
        return self.call(which, "supervisor.tailProcessStdoutLog", name, 0, 100000)[0]

    def outs(self) -> dict[str, dict[str, str]]:
        return {w: {name: self.out(w, name) for name in NAMES} for w in SUPERVISORS}

    @defer.inlineCallbacks
    def sameCommand(self, *args: str) -> defer.Deferred:
        """Run one supervisorctl command on both; the same (order-free) output and exit code."""
        (ref, refcode), (sal, salcode) = yield self.both(*args)
        self.assertEqual((sorted(ref.splitlines()), refcode), (sorted(sal.splitlines()), salcode),
                         f"supervisorctl {' '.join(args)}")
        return ref

    def waitForLogs(self, expected: dict[str, str]) -> defer.Deferred:
        """Until every instance's log on both supervisors is what C{expected} says."""
        want = {w: expected for w in SUPERVISORS}
        d = waitFor(lambda: self.outs() == want, timeout=15)
        d.addErrback(lambda f: self.assertEqual(self.outs(), want))
        return d

    @defer.inlineCallbacks
    def test_signalGroupReachesOnlyThatGroup(self):
        """C{signal HUP pool:*} (signalProcessGroup): both pool children get one HUP, crew none."""
        yield self.sameCommand("signal", "HUP", "pool:*")
        yield self.waitForLogs({"pool:0": "ready\nhup 1\n", "pool:1": "ready\nhup 1\n",
                                "crew:0": "ready\n", "crew:1": "ready\n"})
        yield self.sameCommand("signal", "HUP", "nosuch:*")

    @defer.inlineCallbacks
    def test_signalAllReachesEveryChildOnce(self):
        """C{signal HUP all} (signalAllProcesses), twice: each child counts two HUPs."""
        yield self.sameCommand("signal", "HUP", "all")
        yield self.waitForLogs({name: "ready\nhup 1\n" for name in NAMES})
        yield self.sameCommand("signal", "HUP", "all")
        yield self.waitForLogs({name: "ready\nhup 1\nhup 2\n" for name in NAMES})

    @defer.inlineCallbacks
    def test_clearAllEmptiesEveryLogAndLoggingGoesOn(self):
        """C{clear all} (clearAllProcessLogs): every log is empty, also on disk, and what the
        children write next is logged from the start."""
        yield self.sameCommand("signal", "HUP", "all")
        yield self.waitForLogs({name: "ready\nhup 1\n" for name in NAMES})
        yield self.sameCommand("clear", "all")
        self.assertEqual(self.outs(), {w: {name: "" for name in NAMES} for w in SUPERVISORS})
        for name in NAMES:
            path = self.call("salvus", "supervisor.getProcessInfo", name)["stdout_logfile"]
            self.assertEqual(os.path.getsize(path), 0, path)
        yield self.sameCommand("signal", "HUP", "all")
        yield self.waitForLogs({name: "hup 2\n" for name in NAMES})

    @defer.inlineCallbacks
    def test_stopAllStopsEveryChildWithOneTerm(self):
        """C{stop all} (stopAllProcesses): every instance STOPPED, its process gone, and each
        child saw one TERM (its last line), as under supervisord."""
        pids = {w: {name: self.info(w, name)["pid"] for name in NAMES} for w in SUPERVISORS}
        yield self.sameCommand("stop", "all")
        for which in SUPERVISORS:
            for name in NAMES:
                info = self.info(which, name)
                self.assertEqual((info["statename"], info["exitstatus"], info["pid"]),
                                 ("STOPPED", 0, 0), f"{which} {name}")
                self.assertFalse(alive(pids[which][name]), f"{which} {name}")
        yield self.waitForLogs({name: "ready\nterm after 0 hups\n" for name in NAMES})
        yield self.sameCommand("status")
        yield self.sameCommand("stop", "all")


def alive(pid: int) -> bool:
    """Is C{pid} a running process (not gone, not a zombie waiting for its parent)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

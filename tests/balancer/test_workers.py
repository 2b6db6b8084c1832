"""
N worker processes on the same listening sockets, and the hand-over of the whole group.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer.workers import mergeStates, zeroCounters
from tests.balancer.test_handover import ProcessCase


class WorkerTests(ProcessCase):
    """A master with two workers; the stream of connections comes from this reactor."""

    timeout = 90

    @defer.inlineCallbacks
    def test_twoWorkersServeTheSharedSocket(self):
        """Both workers adopt the master's socket; every request is answered."""
        master = self.spawn(0, ["--workers", "2"])
        info = yield master.ready
        self.assertEqual(len(info["workers"]), 2)
        for pid in info["workers"]:
            os.kill(pid, 0)  # alive
        port = info["ports"]["web"]
        got = yield defer.gatherResults([self.request(port) for _ in range(40)])
        self.assertEqual(got, [b"ok ping\n"] * 40)
        master.transport.signalProcess("TERM")
        code = yield master.ended
        self.assertEqual(code, 0)

    @defer.inlineCallbacks
    def test_deadWorkerIsReplacedWithoutFailures(self):
        """A worker that dies is started again; clients keep being served meanwhile."""
        master = self.spawn(0, ["--workers", "2"])
        info = yield master.ready
        port = info["ports"]["web"]
        stop, results = [], {"ok": 0, "failed": []}
        running = self.stream(port, stop, results, workers=4)
        yield task.deferLater(reactor, 0.3, lambda: None)
        os.kill(info["workers"][0], signal.SIGKILL)
        yield task.deferLater(reactor, 1.5, lambda: None)
        stop.append(True)
        yield running
        # A connection the killed worker had accepted dies with it; new ones never fail.
        self.assertLessEqual(len(results["failed"]), 4, results["failed"])
        self.assertGreater(results["ok"], 20)
        master.transport.signalProcess("TERM")
        yield master.ended

    @defer.inlineCallbacks
    def test_workersLeaveWhenTheMasterIsKilled(self):
        """A master killed outright must not leave its workers holding the sockets forever."""
        master = self.spawn(0, ["--workers", "2", "--drain-timeout", "1", "--hard-stop", "2"])
        info = yield master.ready
        master.transport.signalProcess("KILL")
        yield master.ended
        for pid in info["workers"]:
            for _ in range(100):
                if not _alive(pid):
                    break
                yield task.deferLater(reactor, 0.1, lambda: None)
            self.assertFalse(_alive(pid), "worker %d still running" % (pid,))

    @defer.inlineCallbacks
    def test_groupHandoverDropsNothing(self):
        """A new master with its own workers takes over from the old group while clients connect."""
        old = self.spawn(0, ["--workers", "2", "--drain-timeout", "5", "--hard-stop", "10"])
        info = yield old.ready
        port = info["ports"]["web"]
        stop, results = [], {"ok": 0, "failed": []}
        running = self.stream(port, stop, results)
        yield task.deferLater(reactor, 0.5, lambda: None)
        before = results["ok"]
        new = self.spawn(port, ["--workers", "2"])
        newInfo = yield new.ready
        code = yield old.ended
        yield task.deferLater(reactor, 0.5, lambda: None)
        stop.append(True)
        yield running
        self.assertEqual(results["failed"], [])
        self.assertEqual(code, 0)
        self.assertGreater(results["ok"], before + 20)
        self.assertEqual(newInfo["ports"]["web"], port)
        # The group's counters (summed over the old workers) were handed to the new group.
        self.assertGreaterEqual(newInfo["inherited"], before)
        for pid in info["workers"]:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        new.transport.signalProcess("TERM")
        yield new.ended


def _alive(pid: int) -> bool:
    """Running (not exited, and not an unreaped zombie: PID 1 here does not reap)."""
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class MergeTests(SynchronousTestCase):
    """How the states of a group's workers become the one state a new group inherits."""

    def rows(self, total, admin="up"):
        return {
            "hosts": [{"service": "web", "grp": "g", "host": "a", "admin": admin, "weight": 3,
                       "total": total, "bytes_in": 10 * total, "faults": 0, "bytes_out": 0,
                       "connect_failures": 0, "retries": 0, "health_changes": 0}],
            "groups": [{"service": "web", "grp": "g", "scheduler": "roundrobin", "active": 1}],
        }  # fmt: skip

    def test_countersAreSummedStatesTakenFromOneWorker(self):
        merged = mergeStates([self.rows(5, "drain"), self.rows(7)])
        host = merged["hosts"][0]
        self.assertEqual((host["total"], host["bytes_in"], host["admin"]), (12, 120, "drain"))
        self.assertEqual(mergeStates([]), {})

    def test_zeroCountersKeepsStates(self):
        zeroed = zeroCounters(self.rows(5, "maint"))["hosts"][0]
        self.assertEqual((zeroed["total"], zeroed["bytes_in"], zeroed["admin"], zeroed["weight"]),
                         (0, 0, "maint", 3))  # fmt: skip

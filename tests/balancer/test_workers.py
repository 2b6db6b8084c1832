"""
N worker processes on the same listening sockets, and the hand-over of the whole group.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer.workers import mergeStates, zeroCounters
from tests.balancer.test_handover import ProcessCase
from tests.helpers import LoadLoops, waitFor


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
        """A new master with its own workers takes over from the old group while clients connect.

        Each step waits for its event (traffic through the old group, the new group's ready line,
        the old master's exit, traffic through the new group alone), never for a time; the client
        loops are bounded in count, so on a loaded machine they cannot starve the masters forever.
        """
        old = self.spawn(0, ["--workers", "2", "--drain-timeout", "5", "--hard-stop", "10"])
        info = yield old.ready
        port = info["ports"]["web"]
        loops = LoadLoops(lambda: self.request(port), loops=8, limit=5000)
        yield waitFor(lambda: len(loops.bodies) >= 100 or loops.failures)
        before = len(loops.bodies)
        new = self.spawn(port, ["--workers", "2"])
        newInfo = yield self.within(new.ready, 60, "the new group's ready line", old, new)
        code = yield self.within(old.ended, 60, "the old master's exit", old, new)
        after = len(loops.bodies)
        yield waitFor(lambda: len(loops.bodies) >= after + 20 or loops.failures, timeout=30)
        yield loops.stop()
        self.assertEqual(loops.failures, [])
        self.assertEqual(set(loops.bodies), {b"ok ping\n"})
        self.assertEqual(code, 0)
        self.assertGreater(len(loops.bodies), before + 20)
        self.assertEqual(newInfo["ports"]["web"], port)
        # The group's counters (summed over the old workers) were handed to the new group.
        self.assertGreaterEqual(newInfo["inherited"], before)
        for pid in info["workers"]:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        new.transport.signalProcess("TERM")
        yield new.ended

    def within(self, d, seconds, what, *procs):
        """A Deferred with C{d}'s result, or failing after C{seconds} with C{what} and the
        balancers' stderr: a step that never comes says which one it was, not only that the test
        ran out of time.  C{d} itself is left alone (the clean-up still waits on it)."""
        waiter = defer.Deferred()

        def passOn(result):
            if not waiter.called:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            return result

        def late():
            if not waiter.called:
                errs = " | ".join(p.err[-2000:].decode(errors="replace") for p in procs)
                waiter.errback(AssertionError("no %s after %s s; stderr: %s" % (what, seconds, errs)))

        timer = reactor.callLater(seconds, late)
        d.addBoth(passOn)
        waiter.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
        return waiter


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

"""
N worker processes on the same listening sockets, and the hand-over of the whole group.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor, task

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
        for pid in info["workers"]:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        new.transport.signalProcess("TERM")
        yield new.ended

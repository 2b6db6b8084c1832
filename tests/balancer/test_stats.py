"""Refusals logged by kind at a bounded rate, and the stats socket of the balancer process."""

from __future__ import annotations

import os
import re

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer import stats
from salvusctl.balancer.refusals import KINDS, RefusalLog
from tests.balancer.test_handover import ProcessCase
from tests.helpers import deadPort


class RefusalLogTests(SynchronousTestCase):
    """The rate limit, driven by a Clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.events: list[dict] = []
        self.refusals = RefusalLog(self.clock, "web", interval=10, log=Logger(observer=self.events.append))

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_firstRefusalOfAKindIsLoggedAtOnce(self):
        """An operator sees the first refused client right away, with its reason."""
        self.refusals.refused("queue_full")
        self.assertEqual(self.lines(), ["service web refused 1 client (queue full); 1 since start"])

    def test_aFloodIsOneLinePerKindPerInterval(self):
        """1,000 refusals in a few seconds make two lines, the second with the count."""
        for i in range(1000):
            self.refusals.refused("queue_full")
            if i % 100 == 0:
                self.clock.advance(0.5)
        self.refusals.refused("all_down")
        self.assertEqual(len(self.events), 2)
        self.clock.advance(10)
        self.assertEqual(self.lines()[2:], [
            "service web refused 999 clients (queue full) in the last 10 s; 1000 since start"])
        self.assertEqual(self.refusals.counts, {"queue_full": 1000, "all_down": 1})
        # quiet for an interval: the window closes, the next refusal is logged at once again
        self.clock.advance(10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.refusals.refused("queue_full")
        self.assertEqual(self.lines()[-1], "service web refused 1 client (queue full); 1001 since start")

    def test_stopLogsWhatIsPendingAndLeavesNoCall(self):
        """A process that exits mid-window still logs the count it had not logged yet."""
        for _ in range(5):
            self.refusals.refused("retries_exhausted")
        self.refusals.stop()
        self.assertEqual(self.lines()[-1], "service web refused 4 clients (retries exhausted); 5 since start")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SumTests(SynchronousTestCase):
    def test_sumsCountersAndKinds(self):
        a = {"open": 1, "services": {"web": {"total": 3, "refused_by": {"all_down": 2}}}}
        b = {"open": 2, "services": {"web": {"total": 4, "refused_by": {"all_down": 1, "queue_full": 5}}}}
        self.assertEqual(stats.sumStats([a, b]), {"open": 3, "services": {
            "web": {"total": 7, "refused_by": {"all_down": 3, "queue_full": 5}}}})


KINDS_BY_REASON = {why: kind for kind, why in KINDS.items()}


class _Dead:
    def __init__(self):
        self.port = deadPort()

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self):
        pass


_REFUSAL_LINE = re.compile(rb"service web refused (\d+) clients? \(([^)]+)\)")


class StatsSocketTests(ProcessCase):
    """A real balancer process whose only backend is down refuses every client."""

    @defer.inlineCallbacks
    def refuseClients(self, extra, n=30):
        self.statsPath = os.path.join(self.dir, "stats.sock")
        yield self.backend.stopListening()
        self.backend = _Dead()  # nothing answers: every client is refused
        proc = self.spawn(0, ["--stats", self.statsPath, "--retries", "0", *extra])
        info = yield proc.ready
        port = info["ports"]["web"]
        for _ in range(n):
            got = yield self.request(port)
            self.assertEqual(got, b"")  # closed cleanly, nothing served
        return proc

    @defer.inlineCallbacks
    def test_refusalsAreLoggedByKindAndCountedInStats(self):
        """30 refused clients: one log line at once, the stats socket counts all 30 by kind, and
        the line logged at exit carries the rest of the count."""
        proc = yield self.refuseClients([])
        answer = yield deferToThread(stats.query, self.statsPath)
        web = answer["services"]["web"]
        self.assertEqual((web["refused"], web["total"]), (30, 30))
        # the first client may find the host not yet marked down (its connect fails, no retry left)
        self.assertEqual(sum(web["refused_by"].values()), 30)
        self.assertLessEqual(set(web["refused_by"]), {"all_down", "retries_exhausted"})
        self.assertEqual(answer["open"], 0)
        snapshot = yield deferToThread(stats.query, self.statsPath, "snapshot")
        self.assertEqual(snapshot["services"]["web"]["counters"]["refused"], 30)
        self.assertIn("unknown command", (yield deferToThread(stats.query, self.statsPath, "bogus"))["error"])
        proc.transport.signalProcess("TERM")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err)
        lines = _REFUSAL_LINE.findall(proc.err)
        logged: dict[str, int] = {}
        for count, why in lines:
            logged[KINDS_BY_REASON[why.decode()]] = logged.get(KINDS_BY_REASON[why.decode()], 0) + int(count)
        self.assertEqual(logged, web["refused_by"], proc.err)  # every refusal is in the log's counts
        # at most one line at once and one at exit per kind, not one per client
        self.assertLessEqual(len(lines), 2 * len(logged), proc.err)

    @defer.inlineCallbacks
    def test_masterSumsItsWorkersStats(self):
        """With two workers the master's stats socket answers for the group."""
        proc = yield self.refuseClients(["--workers", "2"], n=20)
        answer = yield deferToThread(stats.query, self.statsPath)
        self.assertEqual(answer["workers"], 2)
        self.assertEqual(answer["services"]["web"]["refused"], 20)
        self.assertEqual(sum(answer["services"]["web"]["refused_by"].values()), 20)
        proc.transport.signalProcess("TERM")
        yield proc.ended

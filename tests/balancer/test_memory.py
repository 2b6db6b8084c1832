"""Closed connections leave the balancer's bookkeeping at once (#20 item 2).

The timeout wheel used to keep every closed pair until its idle deadline (C{client_timeout}, 300 s
by default): about 2.8 KiB each, 397 MB after 125k short connections where HAProxy stays flat.
These tests count objects, not time: after N short connections through a real balancer, nothing
of a closed pair is left in the wheel, the queue, or anywhere the collector can find it.
"""

from __future__ import annotations

import gc

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.proxy import Backend, Frontend
from salvusctl.balancer.wheel import TimeoutWheel
from tests.balancer.helpers import address, balanced, fetch, openHolding, startBackend
from tests.helpers import waitFor


def _live(kind) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


class ClosedPairsLeaveTests(TestCase):
    """Short connections through a real balancer on 127.0.0.1, with HAProxy's 300 s timeouts."""

    timeout = 30

    @inlineCallbacks
    def startBalancer(self, mode="reply-close", **kwargs):
        backend = startBackend(self, b"b", mode)
        decl = balanced([address(backend)], client_timeout=300.0, server_timeout=300.0,
                        connect_timeout=5.0, **kwargs)
        balancer = BalancerService(reactor, [decl], wheel_resolution=0.05)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced[decl.name]
        yield svc.listening
        return balancer, svc, svc.ports[0].getHost().port

    @inlineCallbacks
    def test_shortConnectionsLeaveNothingInTheWheel(self):
        """
        After 300 short connections (20 at a time) the wheel holds no entry and no Frontend or
        Backend object is alive: a closed pair costs nothing until its idle deadline.
        """
        balancer, svc, port = yield self.startBalancer()
        before = (_live(Frontend), _live(Backend))
        for _ in range(15):
            answers = yield gatherResults([fetch(port, b"x") for _ in range(20)])
            self.assertEqual({a for a, _ in answers}, {b"b:x"})
        yield waitFor(lambda: svc.open == 0)
        self.assertEqual(svc.total, 300)
        self.assertEqual(balancer.wheel.size, 0)
        self.assertEqual(balancer.snapshot()["wheel"]["entries"], 0)
        self.assertEqual((_live(Frontend), _live(Backend)), before)

    @inlineCallbacks
    def test_closedPairsAreFreedWithoutTheCycleCollector(self):
        """
        A closed pair holds no reference cycle (client and backend protocol, the connect's
        handle and factory): reference counting frees it the moment it closes, so short
        connections leave the cycle collector, whose full runs are pauses every waiting request
        sees, nothing to find.
        """
        balancer, svc, port = yield self.startBalancer()
        yield fetch(port, b"x")  # first-use allocations
        yield waitFor(lambda: svc.open == 0)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

        def uncollected(kind):
            return sum(1 for o in gc.get_objects() if type(o) is kind)

        before = (uncollected(Frontend), uncollected(Backend))
        for _ in range(5):
            answers = yield gatherResults([fetch(port, b"x") for _ in range(10)])
            self.assertEqual({a for a, _ in answers}, {b"b:x"})
        yield waitFor(lambda: svc.open == 0)
        self.assertEqual((uncollected(Frontend), uncollected(Backend)), before)

    @inlineCallbacks
    def test_anOpenConnectionKeepsItsOneEntry(self):
        """An open pair is in the wheel exactly once (its idle timeout still runs); closed, it leaves."""
        balancer, svc, port = yield self.startBalancer("echo")
        client = yield openHolding(self, port)
        client.transport.write(b"hi")
        yield client.next()
        self.assertEqual(svc.open, 1)
        self.assertEqual(balancer.wheel.size, 1)
        client.transport.loseConnection()
        yield client.lost
        yield waitFor(lambda: svc.open == 0)
        self.assertEqual(balancer.wheel.size, 0)

    @inlineCallbacks
    def test_clientsThatLeaveTheQueueLeaveNoTrace(self):
        """Clients that time out in the queue (maxconn reached) are dropped from it too."""
        balancer, svc, port = yield self.startBalancer("echo", maxconn=1, queue=1000,
                                                       queue_timeout=0.2)
        first = yield openHolding(self, port)
        first.transport.write(b"hi")
        yield first.next()
        for _ in range(5):
            waiting = yield gatherResults([openHolding(self, port) for _ in range(20)])
            yield waitFor(lambda: svc.queued == 20)
            yield gatherResults([c.lost for c in waiting])
            self.assertEqual(svc.queued, 0)
        self.assertLessEqual(len(svc.queue), 20)
        self.assertEqual(balancer.wheel.size, 1)  # the first client's pair
        first.transport.loseConnection()
        yield first.lost
        yield waitFor(lambda: svc.open == 0)
        self.assertEqual(balancer.wheel.size, 0)
        self.assertEqual(len(svc.queue), 0)


class Entry:
    def __init__(self):
        self.fired = 0

    def wheelExpired(self):
        self.fired += 1
        return None


class WheelCancelTests(SynchronousTestCase):
    """The wheel side: an entry can leave before its deadline, and is then never called."""

    def test_cancelRemovesTheEntryAtOnce(self):
        clock = Clock()
        wheel = TimeoutWheel(clock, resolution=0.5)
        entries = [Entry() for _ in range(1000)]
        for i, e in enumerate(entries):
            wheel.schedule(e, 300 + i % 7)
        for e in entries[:999]:
            wheel.cancel(e)
        self.assertEqual(wheel.size, 1)
        wheel.cancel(entries[0])  # twice is harmless
        self.assertEqual(wheel.size, 1)
        clock.pump([0.5] * 700)
        self.assertEqual([e.fired for e in entries], [0] * 999 + [1])
        self.assertEqual(wheel.size, 0)
        self.assertEqual(wheel._buckets, {})

    def test_rescheduleMovesTheEntry(self):
        """Scheduling an entry again moves it: it is never in two buckets."""
        clock = Clock()
        wheel = TimeoutWheel(clock, resolution=0.5)
        e = Entry()
        wheel.schedule(e, 300)
        wheel.schedule(e, 1)
        self.assertEqual(wheel.size, 1)
        clock.pump([0.5] * 4)
        self.assertEqual(e.fired, 1)
        self.assertEqual(wheel.size, 0)

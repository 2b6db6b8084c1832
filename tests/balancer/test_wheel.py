"""The shared timeout wheel, driven by a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer.wheel import TimeoutWheel


class Entry:
    def __init__(self, wheel, again=None):
        self.wheel = wheel
        self.fired = []
        self.again = list(again or [])

    def wheelExpired(self):
        self.fired.append(self.wheel._clock.seconds())
        return self.again.pop(0) if self.again else None


class WheelTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.wheel = TimeoutWheel(self.clock, resolution=0.5)

    def test_fires_at_the_resolution(self):
        e = Entry(self.wheel)
        self.wheel.schedule(e, 2.0)
        self.clock.pump([0.5] * 3)
        self.assertEqual(e.fired, [])
        self.clock.advance(0.5)
        self.assertEqual(e.fired, [2.0])
        self.assertEqual(self.wheel.size, 0)

    def test_one_timer_for_many_entries(self):
        """Ten thousand deadlines cost one pending DelayedCall."""
        entries = [Entry(self.wheel) for _ in range(10000)]
        for i, e in enumerate(entries):
            self.wheel.schedule(e, 1 + i % 10)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.pump([0.5] * 22)
        self.assertTrue(all(len(e.fired) == 1 for e in entries))

    def test_entry_asks_to_be_looked_at_again(self):
        e = Entry(self.wheel, again=[3.0])
        self.wheel.schedule(e, 1.0)
        self.clock.pump([0.5] * 10)
        self.assertEqual(e.fired, [1.0, 4.0])

    def test_timer_stops_when_empty_and_restarts(self):
        e = Entry(self.wheel)
        self.wheel.schedule(e, 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        e2 = Entry(self.wheel)
        self.wheel.schedule(e2, 1.0)
        self.clock.pump([0.5, 0.5])
        self.assertEqual(e2.fired, [101.5])

    def test_late_reactor_catches_up(self):
        """A reactor that stalled past many ticks still fires every due entry once."""
        entries = [Entry(self.wheel) for _ in range(5)]
        for i, e in enumerate(entries):
            self.wheel.schedule(e, 1 + i)
        self.clock.advance(60)
        self.assertEqual([len(e.fired) for e in entries], [1] * 5)

    def test_bad_resolution(self):
        self.assertRaises(ValueError, TimeoutWheel, self.clock, 0)

"""Schedulers, unit-tested for their distribution (no sockets, a Clock for time)."""

from __future__ import annotations

import random
from collections import Counter

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from salvusctl.balancer.model import BackendHost, HostGroup
from salvusctl.balancer.schedulers import SCHEDULERS, makeScheduler
from salvusctl.balancer.schedulers.leastload import StaticLoadSource
from salvusctl.errors import ConfigError
from salvusctl.interfaces import ILoadSource, IScheduler


def hosts(clock, n, weights=None):
    return [BackendHost(clock, f"10.0.0.{i + 1}", 8000, (weights or [1] * n)[i], name=f"h{i}")
            for i in range(n)]


def client(i: int) -> IPv4Address:
    return IPv4Address("TCP", f"192.168.{i // 250}.{i % 250 + 1}", 40000 + i % 1000)


@implementer(ILoadSource)
class FakeLoadSource:
    """A load source the test sets directly; verified against ILoadSource."""

    def __init__(self):
        self.loads = {}

    def loadOf(self, host):
        return self.loads.get(host.name)


class SchedulerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def test_every_scheduler_provides_the_interface(self):
        """All registered schedulers can be built and verify against IScheduler."""
        for name in SCHEDULERS:
            options = {"source": StaticLoadSource()} if name == "leastload" else {}
            s = makeScheduler(name, self.clock, random.Random(1), **options)
            verifyObject(IScheduler, s)
            self.assertEqual(s.name, name)
            self.assertIsNone(s.choose([], client(0)))

    def test_unknown_scheduler_is_a_config_error(self):
        """An unknown name says which names exist."""
        e = self.assertRaises(ConfigError, makeScheduler, "fastest", self.clock)
        self.assertIn("unknown scheduler 'fastest'", str(e))
        self.assertIn("roundrobin", str(e))

    def test_bad_options_are_a_config_error(self):
        e = self.assertRaises(ConfigError, makeScheduler, "roundrobin", self.clock, spread=3)
        self.assertIn("bad options", str(e))
        self.assertRaises(ConfigError, makeScheduler, "leastload", self.clock)

    def test_roundrobin_is_exactly_even(self):
        hs = hosts(self.clock, 3)
        s = makeScheduler("roundrobin", self.clock)
        counts = Counter(s.choose(hs, client(i)).name for i in range(300))
        self.assertEqual(counts, {"h0": 100, "h1": 100, "h2": 100})

    def test_leastconns_prefers_fewest_open(self):
        hs = hosts(self.clock, 3)
        hs[0].active, hs[1].active, hs[2].active = 5, 1, 3
        s = makeScheduler("leastconns", self.clock)
        self.assertIs(s.choose(hs, client(0)), hs[1])

    def test_leastconns_ties_spread_evenly(self):
        """Equal hosts share new connections equally; no host wins ties by its name.

        Sorting on (count, name) would send every tie to h0: with short connections that is
        nearly all traffic.  Here each connection closes before the next arrives (every host
        at zero), and the picks must be even.
        """
        hs = hosts(self.clock, 4)
        s = makeScheduler("leastconns", self.clock)
        counts = Counter(s.choose(hs, client(i)).name for i in range(4000))
        self.assertEqual(set(counts.values()), {1000})

    def test_leastconns_ties_spread_evenly_under_partial_load(self):
        """With some hosts busy, the idle ones still share evenly among themselves."""
        hs = hosts(self.clock, 5)
        hs[4].active = 3
        s = makeScheduler("leastconns", self.clock)
        counts = Counter(s.choose(hs, client(i)).name for i in range(4000))
        self.assertNotIn("h4", counts)
        self.assertEqual(set(counts.values()), {1000})

    def test_leastconns_steady_state_balances_load(self):
        """Connections that stay open end up balanced across hosts."""
        hs = hosts(self.clock, 4)
        s = makeScheduler("leastconns", self.clock)
        for i in range(400):
            s.choose(hs, client(i)).active += 1
        self.assertEqual([h.active for h in hs], [100, 100, 100, 100])

    def test_weighted_is_smooth_and_proportional(self):
        """Weights 5:1:1 give 5:1:1 and never five in a row for the heavy host (smooth)."""
        hs = hosts(self.clock, 3, [5, 1, 1])
        s = makeScheduler("weighted", self.clock)
        picks = [s.choose(hs, client(i)).name for i in range(700)]
        self.assertEqual(Counter(picks), {"h0": 500, "h1": 100, "h2": 100})
        self.assertEqual(picks[:7], ["h0", "h0", "h1", "h0", "h2", "h0", "h0"])

    def test_weighted_follows_live_weight_change(self):
        hs = hosts(self.clock, 2, [1, 1])
        group = HostGroup("g", makeScheduler("weighted", self.clock))
        for h in hs:
            group.add(h)
        hs[1].setWeight(3)
        counts = Counter(group.scheduler.choose(group.rotation, client(i)).name for i in range(400))
        self.assertEqual(counts, {"h0": 100, "h1": 300})

    def test_two_choices_avoids_the_loaded_host(self):
        """Two random choices never pick the most loaded host while another is idle."""
        hs = hosts(self.clock, 2)
        hs[0].active = 10
        s = makeScheduler("random2", self.clock, random.Random(7))
        self.assertEqual({s.choose(hs, client(i)).name for i in range(50)}, {"h1"})

    def test_two_choices_spreads_with_injected_random(self):
        hs = hosts(self.clock, 4)
        s = makeScheduler("random2", self.clock, random.Random(3))
        for i in range(4000):
            s.choose(hs, client(i)).active += 1
        actives = [h.active for h in hs]
        self.assertLessEqual(max(actives) - min(actives), 2)

    def test_sticky_keeps_a_client_on_its_host(self):
        hs = hosts(self.clock, 3)
        s = makeScheduler("sticky", self.clock, ttl=60)
        first = {i: s.choose(hs, client(i)) for i in range(30)}
        for _ in range(3):
            for i in range(30):
                self.assertIs(s.choose(hs, client(i)), first[i])

    def test_sticky_cache_is_bounded(self):
        hs = hosts(self.clock, 2)
        s = makeScheduler("sticky", self.clock, ttl=60, max_entries=10)
        for i in range(100):
            s.choose(hs, client(i))
        self.assertEqual(len(s), 10)

    def test_sticky_entries_expire_and_cleanup_drops_them(self):
        """Entries expire after ttl of disuse; the periodic cleanup shrinks the cache."""
        hs = hosts(self.clock, 2)
        s = makeScheduler("sticky", self.clock, ttl=30)
        for i in range(20):
            s.choose(hs, client(i))
        self.clock.advance(20)
        for i in range(5):
            s.choose(hs, client(i))  # refreshes five
        self.clock.advance(15)
        self.assertEqual(s.cleanup(), 15)
        self.assertEqual(len(s), 5)

    def test_sticky_client_moves_when_its_host_leaves_rotation(self):
        hs = hosts(self.clock, 2)
        s = makeScheduler("sticky", self.clock, ttl=60)
        h = s.choose(hs, client(1))
        other = [x for x in hs if x is not h]
        self.assertIs(s.choose(other, client(1)), other[0])
        self.assertIs(s.choose(hs, client(1)), other[0])

    def test_sourcehash_is_stable_and_spread(self):
        hs = hosts(self.clock, 4)
        s = makeScheduler("sourcehash", self.clock)
        picks = {i: s.choose(hs, client(i)).name for i in range(4000)}
        again = {i: s.choose(list(reversed(hs)), client(i)).name for i in range(4000)}
        self.assertEqual(picks, again)
        counts = Counter(picks.values())
        for n in counts.values():
            self.assertTrue(850 < n < 1150, counts)

    def test_sourcehash_moves_only_the_removed_hosts_share(self):
        """Removing one host of five moves only its clients; adding it back moves only them back."""
        hs = hosts(self.clock, 5)
        s = makeScheduler("sourcehash", self.clock)
        before = {i: s.choose(hs, client(i)) for i in range(5000)}
        fewer = hs[:2] + hs[3:]
        after = {i: s.choose(fewer, client(i)) for i in range(5000)}
        moved = [i for i in before if before[i] is not after[i]]
        self.assertTrue(all(before[i] is hs[2] for i in moved))
        self.assertEqual(len(moved), sum(1 for h in before.values() if h is hs[2]))
        self.assertTrue(800 < len(moved) < 1200)

    def test_sourcehash_honours_weights(self):
        hs = hosts(self.clock, 2, [3, 1])
        s = makeScheduler("sourcehash", self.clock)
        counts = Counter(s.choose(hs, client(i)).name for i in range(8000))
        self.assertTrue(5600 < counts["h0"] < 6400, counts)

    def test_leastload_picks_least_loaded_from_source(self):
        source = FakeLoadSource()
        verifyObject(ILoadSource, source)
        hs = hosts(self.clock, 3)
        s = makeScheduler("leastload", self.clock, source=source)
        source.loads = {"h0": 0.9, "h1": 0.2, "h2": 0.5}
        self.assertIs(s.choose(hs, client(0)), hs[1])
        source.loads["h2"] = 0.1
        self.assertIs(s.choose(hs, client(0)), hs[2])

    def test_leastload_ties_rotate_and_unknown_falls_back(self):
        source = FakeLoadSource()
        hs = hosts(self.clock, 3)
        s = makeScheduler("leastload", self.clock, source=source)
        source.loads = {"h0": 0.5, "h1": 0.5}
        counts = Counter(s.choose(hs, client(i)).name for i in range(100))
        self.assertEqual(counts, {"h0": 50, "h1": 50})
        source.loads = {}
        counts = Counter(s.choose(hs, client(i)).name for i in range(99))
        self.assertEqual(counts, {"h0": 33, "h1": 33, "h2": 33})

    def test_static_load_source(self):
        source = StaticLoadSource({"h0": 2.0, "10.0.0.2:8000": 1.0})
        verifyObject(ILoadSource, source)
        hs = hosts(self.clock, 3)
        self.assertEqual([source.loadOf(h) for h in hs], [2.0, 1.0, None])

    def test_slow_start_ramps_weight(self):
        """A host that comes back ramps its weight linearly over slowstart seconds."""
        h = hosts(self.clock, 1, [10])[0]
        h.slowstart = 100
        h.markDown("test")
        h.markUp()
        self.assertLess(h.currentWeight(), 0.5)
        self.clock.advance(50)
        self.assertAlmostEqual(h.currentWeight(), 5.0)
        self.clock.advance(60)
        self.assertEqual(h.currentWeight(), 10.0)

    def test_slow_start_shapes_weighted_distribution(self):
        hs = hosts(self.clock, 2, [1, 1])
        for h in hs:
            h.slowstart = 10
        hs[1].markDown("x")
        hs[1].markUp()
        self.clock.advance(2.5)  # h1 at 25 %
        s = makeScheduler("weighted", self.clock)
        counts = Counter(s.choose(hs, client(i)).name for i in range(500))
        self.assertEqual(counts, {"h0": 400, "h1": 100})

    def test_scheduler_switched_live_on_a_group(self):
        hs = hosts(self.clock, 2)
        group = HostGroup("g", makeScheduler("roundrobin", self.clock))
        for h in hs:
            group.add(h)
        hs[0].active = 3
        group.setScheduler(makeScheduler("leastconns", self.clock))
        self.assertEqual({group.scheduler.choose(group.rotation, client(i)).name for i in range(10)}, {"h1"})

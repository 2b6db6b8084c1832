"""The admin's readers of the real services' data (salvusctl.admin.shapes)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin import shapes
from salvusctl.testing import FakeBalancer


class ShapeTests(SynchronousTestCase):
    def test_balancerDiffInNames(self):
        """The balancer's diff operations become the admin's added / changed / removed names."""
        ops = [
            {"op": "add-service", "service": "api"},
            {"op": "remove-host", "service": "www", "group": "web", "host": "b"},
            {"op": "add-host", "service": "www", "group": "web", "host": "b"},
            {"op": "set-weight", "service": "www", "group": "web", "host": "a", "weight": 2, "running": 1},
            {"op": "set-active", "service": "www", "group": "blue", "running": "green"},
            {"op": "remove-group", "service": "www", "group": "old"},
        ]
        self.assertEqual(
            shapes.balancerDiff(ops),
            {"added": ["api", "www/web/b"], "changed": ["www", "www/web/a"],
             "removed": ["www/old", "www/web/b"]},
        )

    def test_hostsOfASnapshot(self):
        """Hosts are read from services and groups keyed by name, with active / total counters."""
        balancer = FakeBalancer({"www": {"web": [("127.0.0.1", 1), ("127.0.0.1", 2)]}})
        balancer.host("www", "web", "127.0.0.1:1").update(active=2, total=9, healthy=False)
        rows = [(s["name"], g["name"], h["name"], shapes.hostOpen(h), shapes.hostTotal(h),
                 shapes.hostTakesTraffic(h)) for s, g, h in shapes.balancerHosts(balancer.snapshot())]
        self.assertEqual(rows, [("www", "web", "127.0.0.1:1", 2, 9, False),
                                ("www", "web", "127.0.0.1:2", 0, 0, True)])

    def test_samples(self):
        """Latest samples and stored ones (the monitor's history rows) share their keys."""
        from salvusctl.monitor.queries import SAMPLE_KEYS

        self.assertEqual((shapes.sampleCpu({"cpu_percent": 3}), shapes.sampleRss({"rss": 7})), (3.0, 7))
        stored = dict.fromkeys(SAMPLE_KEYS)
        stored.update(cpu_percent=4, rss=8)
        self.assertEqual((shapes.sampleCpu(stored), shapes.sampleRss(stored)), (4.0, 8))
        self.assertEqual((shapes.sampleCpu({}), shapes.sampleRss({}), shapes.sampleTime({})),
                         (None, None, None))


class PlainTests(SynchronousTestCase):
    def test_enumsBecomePlainValues(self):
        """Enum members (the supervisor's ProcessState is an IntEnum) marshal as their value."""
        import enum
        import xmlrpc.client

        from salvusctl.admin.rpcbase import plain

        class Code(enum.IntEnum):
            RUNNING = 20

        class Word(enum.StrEnum):
            UP = "up"

        value = plain({"state": Code.RUNNING, "word": Word.UP, "n": 2**40, "t": (1, 2), "ok": True})
        self.assertEqual(value, {"state": 20, "word": "up", "n": float(2**40), "t": [1, 2], "ok": True})
        self.assertIs(type(value["state"]), int)
        self.assertIs(type(value["word"]), str)
        xmlrpc.client.dumps((value,), allow_none=True)

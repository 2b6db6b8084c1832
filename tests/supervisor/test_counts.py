"""The bookkeeping that keeps a start O(1): live-instance counters and the environment copy."""

from __future__ import annotations

import os

from salvusctl.supervisor.process import _inheritedEnvironment
from salvusctl.supervisor.states import RUNNING_STATES
from tests.supervisor.test_lifecycle import Harness, deploy


class LiveCountTests(Harness):
    def assertCounts(self) -> None:
        """The counters equal a full count over the instance table."""
        svc = self.svc
        live = [i for i in svc.instances.values() if i.state in RUNNING_STATES]
        self.assertEqual(svc._liveTotal, len(live))
        for name in svc.deploys:
            self.assertEqual(svc._live.get(name, 0), len([i for i in live if i.deploy.name == name]), name)
        for name, n in svc._live.items():
            if name not in svc.deploys:
                self.assertEqual(n, 0, name)

    def test_counts_follow_starts_crashes_stops_and_reloads(self):
        svc = self.make(deploy("a", numprocs=3, startsecs=1, stopwaitsecs=1),
                        deploy("b", numprocs=2, startsecs=0), maxProcesses=10)
        self.assertCounts()
        svc.startAll()
        self.assertCounts()
        self.clock.advance(1.5)
        self.assertCounts()
        self.fake.exit(self.pid("a:1"), 1)  # crash: BACKOFF, then a respawn
        self.assertCounts()
        self.clock.advance(5)
        self.assertCounts()
        self.assertEqual(svc._liveTotal, 5)
        svc.stopInstance("b:0")
        self.assertCounts()
        self.fake.exit(self.pid("b:0"), sig=15)
        self.clock.advance(1)
        self.assertCounts()
        self.assertEqual(svc._live["b"], 1)
        # Shrink a, drop b, add c: removed instances stop counting.
        d = svc.reload([deploy("a", numprocs=1, startsecs=1, stopwaitsecs=1), deploy("c", startsecs=0)])
        for _ in range(20):
            for pid in list(self.fake.live):
                self.fake.exit(pid, sig=15)
            self.clock.advance(1)
        self.successResultOf(d)
        self.assertCounts()
        self.assertEqual(svc._live.get("b", 0), 0)

    def test_limit_counts_other_instances_only(self):
        """An instance already alive does not count against itself (a start while STARTING)."""
        svc = self.make(deploy("a", numprocs=2, startsecs=5, max_processes=1))
        svc.startInstance("a:0")
        self.assertIsNone(svc.refuseStart(svc.instances["a:0"]))
        self.assertIn("limit of 1", svc.refuseStart(svc.instances["a:1"]))


class EnvironmentTests(Harness):
    def test_copy_follows_changes(self):
        """The decoded copy is reused while os.environ is unchanged, and is a fresh dict each time."""
        first = _inheritedEnvironment()
        self.assertEqual(first, dict(os.environ))
        first["SALVUS_TEST_MUTATED"] = "1"
        self.assertNotIn("SALVUS_TEST_MUTATED", _inheritedEnvironment())
        os.environ["SALVUS_TEST_ADDED"] = "x"
        try:
            self.assertEqual(_inheritedEnvironment()["SALVUS_TEST_ADDED"], "x")
        finally:
            del os.environ["SALVUS_TEST_ADDED"]
        self.assertNotIn("SALVUS_TEST_ADDED", _inheritedEnvironment())

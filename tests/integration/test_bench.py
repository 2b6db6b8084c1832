"""Benchmarks that have a C{--quick} mode run here, so a broken benchmark fails the build.

No figure is judged (two shared cores make timings meaningless in a test): only that each one runs
to the end and prints its table.
"""

from __future__ import annotations

import os
import shutil
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.helpers import REPO, childEnv

#: bench/NAME -> a word its table prints (or several).
QUICK = {"backup": b"full_seconds", "store": b"writes", "balancer": b"Salvus/HAProxy",
         "admin/rpc_vs_supervisord.py": b"getState_per_s", "monitor": b"ingest rows/s",
         "supervisor": (b"crash->respawn median", b"log lines per CPU-second", b"log lines of 60 KiB"),
         "logs": b"lines per CPU-second", "cluster/clients.py": b"p50 vs mailbox",
         "cluster/netns.py": b"kill -9 of c",
         "balancer/pathcost.py": b"Python calls (cProfile)"}


def benchmarks() -> set[str]:
    """Every benchmark in bench/: a directory run as C{python bench/NAME}, or a script in one."""
    found = set()
    for name in sorted(os.listdir(os.path.join(REPO, "bench"))):
        path = os.path.join(REPO, "bench", name)
        if not os.path.isdir(path) or name.startswith(("_", ".")):
            continue
        if os.path.exists(os.path.join(path, "__main__.py")):
            found.add(name)
        else:
            found |= {f"{name}/{script}" for script in os.listdir(path)
                      if script.endswith(".py") and not script.startswith("_")}
    return found


class QuickBenchTests(TestCase):
    timeout = 120

    def test_everyBenchmarkRunsHere(self):
        """A benchmark added to bench/ without a quick run here would break unseen."""
        self.assertEqual(benchmarks() - set(QUICK), set())
        for name in QUICK:
            self.assertTrue(hasattr(self, "test_" + name.split("/")[0]), name)

    @inlineCallbacks
    def _bench(self, name: str):
        args = [os.path.join(REPO, "bench", name), "--quick"]
        out, err, code = yield getProcessOutputAndValue(sys.executable, args, env=childEnv(), path=REPO)
        self.assertEqual(code, 0, (out[-2000:], err[-2000:]))
        words = QUICK[name]
        for word in words if isinstance(words, tuple) else (words,):
            self.assertIn(word, out)

    def test_backup(self):
        """bench/backup --quick: salvus and rsync, 50 files, one run."""
        return self._bench("backup")

    def test_store(self):
        """bench/store --quick: 50 writes per measurement (PostgreSQL rows when it is configured)."""
        return self._bench("store")

    def test_balancer(self):
        """bench/balancer --quick: one 1-second round against HAProxy and nginx (.ci/run installs them)."""
        missing = [t for t in ("nginx", "haproxy", "wrk", "curl")
                   if shutil.which(t) is None and not os.path.exists("/usr/sbin/" + t)]
        if missing:
            raise SkipTest(f"not installed: {', '.join(missing)}")
        return self._bench("balancer")

    def test_balancer_pathcost(self):
        """bench/balancer/pathcost.py --quick: 100 connections counted under cProfile."""
        return self._bench("balancer/pathcost.py")

    def test_admin(self):
        """bench/admin --quick: salvus's XML-RPC against supervisord's, 20 calls."""
        return self._bench("admin/rpc_vs_supervisord.py")

    def test_monitor(self):
        """bench/monitor --quick: 5 services' hour of samples, 5 ingest ticks, 10 processes for 2 s."""
        if not os.environ.get("SALVUS_TEST_POSTGRES"):
            raise SkipTest("SALVUS_TEST_POSTGRES not set: bench/monitor needs PostgreSQL, NOT RUN")
        return self._bench("monitor")

    def test_supervisor(self):
        """bench/supervisor --quick: salvus and the test extras' supervisord, 10 instances, one round,
        and the log rows (throughput, RSS under long lines) from bench/logs's workloads."""
        return self._bench("supervisor")

    def test_cluster(self):
        """bench/cluster/clients.py --quick: 100 clients, over the link and the mailbox."""
        if not os.environ.get("SALVUS_TEST_POSTGRES"):
            raise SkipTest("SALVUS_TEST_POSTGRES is not set: bench/cluster needs PostgreSQL")
        return self._bench("cluster/clients.py")

    def test_cluster_netns(self):
        """bench/cluster/netns.py --quick: three twistd hosts in namespaces, 100 clients."""
        from tests.integration.threehosts import netnsUnavailable

        if not os.environ.get("SALVUS_TEST_POSTGRES"):
            raise SkipTest("SALVUS_TEST_POSTGRES is not set: bench/cluster needs PostgreSQL")
        reason = netnsUnavailable()
        if reason:
            raise SkipTest(f"network namespaces unavailable ({reason}): bench/cluster/netns.py not run")
        return self._bench("cluster/netns.py")

    def test_logs(self):
        """bench/logs --quick: an 8 MiB log tailed, 5,000 lines and 4 x 20 long lines, salvus and
        the test extras' supervisord."""
        return self._bench("logs")

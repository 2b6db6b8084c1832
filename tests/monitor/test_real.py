"""The monitor on real processes and the real SQLite store (threads, /proc, a file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.monitor.sampler import Sampler, directorySize
from salvusctl.monitor.service import MonitorService
from salvusctl.store.sqlite import SQLiteStore
from tests.monitor.fakes import FakeSupervisor, tempDir

# A parent that starts one child and both wait: a tree of two processes, with a few threads.
TREE = """
import subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print(child.pid, flush=True)
time.sleep(60)
"""


class RealProcessTests(TestCase):
    timeout = 60

    def spawnTree(self):
        proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE,
                                start_new_session=True)
        self.addCleanup(self.killTree, proc)
        child = int(proc.stdout.readline())
        return proc.pid, child

    def killTree(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stdout.close()

    @inlineCallbacks
    def test_samplesTheTreeIntoSQLite(self):
        """An instance and its child are sampled (summed and per process) off the reactor thread,
        and land in the SQLite store."""
        parent, child = self.spawnTree()
        store = SQLiteStore(reactor, os.path.join(tempDir(self), "s.db"))
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=parent, port=8001)
        deploy_dir = tempDir(self)
        os.makedirs(os.path.join(deploy_dir, "sub"))
        with open(os.path.join(deploy_dir, "sub", "f"), "wb") as f:
            f.write(b"x" * 5000)
        monitor = MonitorService(reactor, store, supervisor, host_name="h1", interval=3600,
                                 deploy_dirs={"web": deploy_dir})
        yield store.start()
        self.addCleanup(store.close)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        yield monitor.sampleOnce()
        entry = monitor.latest()["web:0"]
        self.assertEqual(entry["nprocs"], 2)
        self.assertEqual(sorted(p["pid"] for p in entry["processes"]), sorted([parent, child]))
        self.assertGreaterEqual(entry["threads"], 5)
        self.assertGreater(entry["fds"], 0)
        self.assertEqual(entry["rss"], sum(p["rss"] for p in entry["processes"]))
        self.assertGreater(entry["walltime"], 0)
        host = monitor.latestHost()
        self.assertEqual([(d["deploy"], d["path"], d["bytes"]) for d in host["deploys"]],
                         [("web", deploy_dir, 5000)])
        self.assertGreater(host["mem_available"], 0)
        yield monitor.flush()
        rows = yield store.runQuery("SELECT nprocs, threads FROM status")
        self.assertEqual(rows[0][0], 2)
        count = yield store.runQuery("SELECT COUNT(*) FROM process_status WHERE timestamp ="
                                     " (SELECT MAX(timestamp) FROM process_status)")
        self.assertEqual(count, [(2,)])

    @inlineCallbacks
    def test_samplingRunsOffTheReactorThread(self):
        """psutil's blocking reads happen on the monitor's own thread, never the reactor's."""
        import threading

        threads = []

        class Recording(Sampler):
            def sample(self, *args, **kwargs):
                threads.append(threading.current_thread())
                return super().sample(*args, **kwargs)

        store = SQLiteStore(reactor, os.path.join(tempDir(self), "s.db"))
        monitor = MonitorService(reactor, store, FakeSupervisor(), host_name="h1", interval=3600,
                                 sampler=Recording(mounts=False))
        yield store.start()
        self.addCleanup(store.close)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        yield monitor.sampleOnce()
        self.assertTrue(threads)
        self.assertNotIn(threading.main_thread(), threads)
        self.assertEqual({t.name for t in threads}, {threads[0].name})

    def test_goneProcessIsNone(self):
        """A pid that no longer exists samples as None, not an exception."""
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        result = Sampler(mounts=False).sample([("x:0", proc.pid)], 0.0)
        self.assertIsNone(result["instances"]["x:0"])

    def test_directorySizeMissing(self):
        self.assertIsNone(directorySize("/nonexistent/salvus"))


class FastPathTests(TestCase):
    def test_agreesWithPsutil(self):
        """The /proc fast path reports what psutil reports for the same process."""
        import psutil

        sampler = Sampler(mounts=False)
        me = psutil.Process(os.getpid())
        sampler.sample([("me:0", os.getpid())], 0.0)
        start = time.process_time()
        while time.process_time() - start < 0.05:  # some CPU for the cpu % to see (bounded)
            pass
        before = sum(me.cpu_times()[:2])
        got = sampler.sample([("me:0", os.getpid())], 1.0)["instances"]["me:0"]["processes"][0]
        after = sum(me.cpu_times()[:2])
        self.assertEqual(got["name"], me.name())
        self.assertEqual(got["threads"], me.num_threads())
        self.assertLessEqual(abs(got["vms"] - me.memory_info().vms), 16 << 20)
        self.assertLessEqual(abs(got["rss"] - me.memory_info().rss), 4 << 20)
        # Bracketed by psutil's readings just before and after (other threads of this test process
        # may burn CPU meanwhile); /proc counts in 10 ms ticks.
        self.assertGreaterEqual(got["cputime"], before - 0.02)
        self.assertLessEqual(got["cputime"], after + 0.02)
        self.assertLessEqual(abs(got["walltime"] - (time.time() - me.create_time())), 0.5)
        self.assertEqual(got["status"], me.status())
        self.assertEqual(got["ppid"], me.ppid())
        self.assertGreater(got["cpu_percent"], 0.0)

    def test_portablePathAgrees(self):
        """Where /proc has no stat files the sampler asks psutil for every figure instead; the
        figures are the same kind."""
        from salvusctl.monitor import sampler as module

        self.patch(module, "_PROC_STAT", False)
        sampler = Sampler(mounts=False)
        sampler.sample([("me:0", os.getpid())], 0.0)
        got = sampler.sample([("me:0", os.getpid())], 1.0)["instances"]["me:0"]
        self.assertEqual(got["nprocs"], 1)
        proc = got["processes"][0]
        self.assertEqual(proc["pid"], os.getpid())
        self.assertGreater(proc["threads"], 0)
        self.assertGreater(proc["rss"], 0)
        self.assertIn(proc["status"], ("running", "sleeping"))

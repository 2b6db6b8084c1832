"""The latest status in a real memcached, killed and restarted mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.monitor.memcache import MemcachePublisher, memcacheKey
from salvusctl.monitor.service import MonitorService
from tests.helpers import freePort, waitFor
from tests.monitor.fakes import FakeSampler, FakeSupervisor, SyncSQLiteStore, inline

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


class KeyTests(SynchronousTestCase):
    def test_keysAreSafe(self):
        """Spaces and control characters never reach the memcached protocol."""
        self.assertEqual(memcacheKey("salvus", "h 1", "web:0"), b"salvus:h_1:web:0")
        with self.assertRaises(ValueError):
            memcacheKey("x" * 300)


class MemcachedTests(TestCase):
    timeout = 60

    def startMemcached(self, port):
        if not os.path.exists(MEMCACHED):
            raise AssertionError(f"memcached not installed at {MEMCACHED} (apt-get install memcached)")
        proc = subprocess.Popen(
            [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-u", "nobody"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self.kill, proc)
        return proc

    def kill(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    @inlineCallbacks
    def test_degradesAndRecovers(self):
        """With memcached killed the monitor keeps sampling and storing; when memcached returns,
        publishing resumes by itself."""
        port = freePort()
        proc = self.startMemcached(port)
        store = SyncSQLiteStore(reactor)
        supervisor = FakeSupervisor()
        supervisor.add("web:0", pid=4242, port=8001)
        publisher = MemcachePublisher(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                      timeout=1.0)
        monitor = MonitorService(reactor, store, supervisor, host_name="h1", sampler=FakeSampler(),
                                 run=inline, publisher=publisher, interval=3600)
        yield store.start()
        self.addCleanup(store.close)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        yield waitFor(lambda: publisher.connected)

        snapshot = yield monitor.sampleOnce()
        yield publisher.publish("h1", snapshot)
        entry = yield publisher.read("h1", "web:0")
        self.assertEqual((entry["pid"], entry["port"], entry["state"]), (4242, 8001, "RUNNING"))
        index = yield publisher.read("h1")
        self.assertEqual(index["instances"], ["web:0"])

        self.kill(proc)
        yield waitFor(lambda: not publisher.connected)
        skipped = publisher.skipped
        for _ in range(3):
            yield monitor.sampleOnce()
        yield monitor.flush()
        self.assertEqual(publisher.skipped, skipped + 3)
        self.assertEqual(monitor.latest()["web:0"]["pid"], 4242)
        self.assertEqual(store.rows("SELECT COUNT(*) FROM status"), [(5,)])

        self.startMemcached(port)
        yield waitFor(lambda: publisher.connected, timeout=20)
        snapshot = yield monitor.sampleOnce()
        yield publisher.publish("h1", snapshot)
        entry = yield publisher.read("h1", "web:0")
        self.assertEqual(entry["timestamp"], snapshot["timestamp"])

"""Readiness with real processes: sd_notify from Python, Redis and PostgreSQL, a log line, a probe,
and a start that never becomes ready."""

from __future__ import annotations

import os
import shutil
import socket
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest

from salvusctl.supervisor.deploy import Backoff, Deploy, Probe, Ready
from tests.helpers import freePort, waitFor
from tests.store.pgcluster import CLUSTER_SKIP, PrivateCluster
from tests.supervisor.test_realprocs import RealTestCase, gone, pidsWithArg

HERE = os.path.dirname(os.path.abspath(__file__))

# An sd_notify client as daemons implement it: '@' names an abstract socket.
NOTIFIER = """
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\\0" + addr[1:]
def notify(text):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(addr)
    s.send(text.encode())
    s.close()
notify("STATUS=warming up")
# Ready only once the test has seen it starting: it creates "go" in the instance's run dir.
while not os.path.exists(os.path.join(os.environ["SALVUS_RUN_DIR"], "go")):
    time.sleep(0.01)
if sys.argv[1] == "fork":
    if os.fork() == 0:
        notify("READY=1\\nSTATUS=worker ready")
        time.sleep(2)
        os._exit(0)
    os.wait()
else:
    notify("READY=1\\nSTATUS=serving")
time.sleep(int(sys.argv[2]))
"""


# A daemon using systemd's watchdog: pings at a quarter of WATCHDOG_USEC, then hangs (still alive).
WATCHDOG_CHILD = """
import os, socket, sys, time
addr = "\\0" + os.environ["NOTIFY_SOCKET"][1:]
period = int(os.environ["WATCHDOG_USEC"]) / 1e6
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(b"WATCHDOG=1", addr)
    time.sleep(period / 4)
time.sleep(int(sys.argv[2]))
"""


def go(svc, name: str) -> None:
    """Let a gated child go on (it waits for C{go} in its run directory)."""
    with open(os.path.join(svc.instances[name].runDir, "go"), "w"):
        pass


def tagged() -> str:
    return f"58{os.getpid() % 1000:03d}"


class NotifyTests(RealTestCase):
    @inlineCallbacks
    def test_python_child_notifies_ready(self):
        """A child that speaks sd_notify is RUNNING when it says READY=1, well before startsecs
        (30 s) would have let it; its STATUS is kept."""
        tag = tagged()
        svc = self.service(Deploy("app", command=[sys.executable, "-c", NOTIFIER, "self", tag],
                                  ready="notify", startsecs=30))
        svc.startService()
        t0 = reactor.seconds()
        yield waitFor(lambda: svc.instanceInfo("app:0")["status"] == "warming up")
        self.assertEqual(svc.instanceInfo("app:0")["state"], "STARTING")
        go(svc, "app:0")
        yield svc.ready
        self.assertLess(reactor.seconds() - t0, 10)
        info = svc.instanceInfo("app:0")
        self.assertEqual((info["state"], info["ready"], info["status"]), ("RUNNING", True, "serving"))
        yield svc.stopService()
        self.assertEqual(pidsWithArg(tag), [])

    @inlineCallbacks
    def test_worker_process_may_notify(self):
        """READY=1 from a process the leader forked counts for the instance (found by its
        environment marker), as systemd's NotifyAccess=all; the socket goes with the stop."""
        tag = tagged()
        svc = self.service(Deploy("app", command=[sys.executable, "-c", NOTIFIER, "fork", tag],
                                  ready="notify", startsecs=30))
        svc.startService()
        go(svc, "app:0")
        yield svc.ready
        self.assertEqual(svc.instanceInfo("app:0")["status"], "worker ready")
        address = "\0" + svc._notify.address[1:]
        yield svc.stopService()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        self.assertRaises(ConnectionRefusedError, s.connect, address)

    @inlineCallbacks
    def test_notifications_from_strangers_count_for_nothing(self):
        """Anyone may send to the socket, but the kernel names the sender: READY=1 from a
        process that is no instance's is ignored, and the instance stays STARTING."""
        tag = tagged()
        svc = self.service(Deploy("app", command=["/bin/sleep", tag], ready="notify"))
        svc.startService()
        yield waitFor(lambda: svc._notify is not None and svc.instanceInfo("app:0")["pid"])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.connect("\0" + svc._notify.address[1:])
        s.send(b"READY=1\nSTATUS=forged")
        yield deferLater(reactor, 0.2, lambda: None)
        info = svc.instanceInfo("app:0")
        self.assertEqual((info["state"], info["status"]), ("STARTING", ""))
        yield svc.stopService()

    @inlineCallbacks
    def test_redis_is_ready_when_it_says_so(self):
        """A real Redis (C{--supervised systemd}) run as a deploy is RUNNING when Redis itself
        reports ready, and answers PING then."""
        redis = shutil.which("redis-server")
        if redis is None:
            raise SkipTest("redis-server not installed (apt-get install redis-server): NOT RUN")
        port = freePort()
        svc = self.service(Deploy("cache", command=[redis, "--port", "{port}", "--bind", "127.0.0.1",
                                                    "--save", "", "--appendonly", "no",
                                                    "--supervised", "systemd", "--dir", "{run_dir}"],
                                  port=port, ready="notify", startsecs=30))
        svc.startService()
        yield svc.ready
        self.assertEqual(svc.instanceInfo("cache:0")["state"], "RUNNING")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING\r\n")
            self.assertEqual(s.recv(100), b"+PONG\r\n")
        yield svc.stopService()

    @inlineCallbacks
    def postgres(self):
        """A fresh data directory (initdb) and the deploy that runs PostgreSQL on it, notify-ready
        (as the postgres user when the tests run as root, since PostgreSQL refuses root)."""
        if CLUSTER_SKIP:
            raise SkipTest(CLUSTER_SKIP)
        cluster = PrivateCluster(reactor)
        self.addCleanup(shutil.rmtree, cluster.dir, True)
        yield cluster._check("initdb", "-D", cluster.data, "-A", "trust", "-U", "postgres", "--no-sync")
        db = Deploy("db", command=[os.path.join(cluster.bin, "postgres"), "-D", cluster.data, "-p", "{port}",
                                   "-k", cluster.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                    port=cluster.port, user="postgres" if os.geteuid() == 0 else None, ready="notify",
                    startsecs=60, stopsignal="INT", stopwaitsecs=20)
        return cluster, db

    @inlineCallbacks
    def test_postgresql_is_ready_when_it_says_so(self):
        """A real PostgreSQL server run as a deploy (as the postgres user when Salvus is root)
        becomes RUNNING on its own READY=1, after crash recovery and start-up, and accepts
        connections at that moment."""
        cluster, db = yield self.postgres()
        svc = self.service(db)
        svc.startService()
        yield svc.ready
        info = svc.instanceInfo("db:0")
        self.assertEqual(info["state"], "RUNNING")
        socket.create_connection(("127.0.0.1", cluster.port), timeout=5).close()
        yield svc.stopService()
        self.assertFalse(os.path.exists(os.path.join(cluster.data, "postmaster.pid")))

    @inlineCallbacks
    def test_dependent_starts_when_postgresql_accepts(self):
        """depends_on a notify-ready PostgreSQL: the dependent is spawned only once the server
        accepts connections, so its very first attempt to connect succeeds (no crash loop while
        the database starts, which is what startsecs-based ordering gives)."""
        cluster, db = yield self.postgres()
        client = ("import socket, sys, time\n"
                  "socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close()\n"
                  "print('connected', flush=True)\n"
                  "time.sleep(int(sys.argv[2]))\n")
        tag = tagged()
        svc = self.service(
            db,
            Deploy("app", command=[sys.executable, "-c", client, str(cluster.port), tag], depends_on=["db"],
                   startsecs=0, backoff=Backoff(initial=0.1, retries=0)))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: svc.tailLog("app:0") == ["connected"])
        info = svc.instanceInfo("app:0")
        self.assertEqual((info["state"], info["restarts"]), ("RUNNING", 0))
        yield svc.stopService()


class WatchdogRealTests(RealTestCase):
    @inlineCallbacks
    def test_hung_daemon_is_restarted(self):
        """A process that stops pinging its watchdog while staying alive (a hang) is restarted;
        the hung process is gone, and a fresh one runs."""
        tag = tagged()
        svc = self.service(Deploy("app", command=[sys.executable, "-c", WATCHDOG_CHILD, "8", tag],
                                  startsecs=0,
                                  probe=Probe(kind="watchdog", interval=0.1, timeout=0.5, failures=1)))
        svc.startService()
        yield svc.ready
        first = svc.instanceInfo("app:0")["pid"]
        yield waitFor(lambda: svc.instanceInfo("app:0")["pid"] not in (0, first), timeout=20)
        self.assertIn("liveness probe failed", svc.instanceInfo("app:0")["restart_reason"])
        self.assertTrue(gone(first))
        yield svc.stopService()

class LogAndProbeTests(RealTestCase):
    @inlineCallbacks
    def test_log_line_makes_running(self):
        """ready=Ready('log', pattern): RUNNING when that line arrives on stdout, not before."""
        tag = tagged()
        script = ("echo booting; while [ ! -e \"$SALVUS_RUN_DIR/go\" ]; do sleep 0.01; done; "
                  f"echo 'server ready on port 1'; exec sleep {tag}")
        svc = self.service(Deploy("app", command=["/bin/sh", "-c", script], startsecs=30,
                                  ready=Ready("log", pattern=r"ready on port \d+")))
        svc.startService()
        yield waitFor(lambda: svc.tailLog("app:0") == ["booting"])
        self.assertEqual(svc.instanceInfo("app:0")["state"], "STARTING")
        go(svc, "app:0")
        yield svc.ready
        self.assertEqual(svc.instanceInfo("app:0")["state"], "RUNNING")
        yield svc.stopService()

    @inlineCallbacks
    def test_probe_makes_running(self):
        """ready='probe': RUNNING once the instance accepts TCP connections on its port."""
        port = freePort()
        script = f"sleep 0.3; exec {sys.executable} {os.path.join(HERE, 'echo_backend.py')} {port}"
        svc = self.service(Deploy("app", command=["/bin/sh", "-c", script], port=port, startsecs=30,
                                  probe=Probe(kind="tcp", interval=1), ready=Ready("probe", interval=0.05)))
        svc.startService()
        yield svc.ready
        self.assertEqual(svc.instanceInfo("app:0")["state"], "RUNNING")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        yield svc.stopService()

    @inlineCallbacks
    def test_never_ready_is_stopped_and_fatal(self):
        """A start that never becomes ready is stopped at the timeout (nothing of it survives) and,
        out of retries, FATAL with the reason."""
        tag = tagged()
        svc = self.service(Deploy("app", command=["/bin/sh", "-c", f"sleep {tag} & exec sleep {tag}"],
                                  ready=Ready("notify", timeout=2), stopwaitsecs=1,
                                  backoff=Backoff(initial=0.1, retries=0)))
        svc.startService()
        yield waitFor(lambda: len(pidsWithArg(tag)) == 2)
        pids = pidsWithArg(tag)
        yield waitFor(lambda: svc.instanceInfo("app:0")["state"] == "FATAL")
        self.assertIn("not ready within 2s", svc.instanceInfo("app:0")["description"])
        yield waitFor(lambda: all(gone(p) for p in pids))
        yield svc.stopService()

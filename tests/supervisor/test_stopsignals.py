"""One stop signal per process: a program that reads a second TERM/INT as "force quit" (uvicorn,
gunicorn, Celery, Node) must stop cleanly under Salvus, as it does under supervisord.

The supervised program (C{signal_counter.py}) and the child it forks into its own process group
write one line per signal they receive; each stop, through the real supervisor, must leave exactly
one stop-signal line per process.  SIGKILL after C{stopwaitsecs} is the only second signal.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.host import Host
from salvusctl.supervisor import Deploy, SupervisorSettings
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import childEnv, waitFor
from tests.supervisor import scratch
from tests.supervisor.test_realprocs import _Lines, gone

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTER = os.path.join(HERE, "signal_counter.py")


def counted(path: str) -> dict[str, list[str]]:
    """{role: [signal names, in order]} from the counter's file."""
    out: dict[str, list[str]] = {}
    try:
        with open(path) as f:
            lines = f.read().split()
    except FileNotFoundError:
        return out
    for _pid, role, name in zip(lines[0::3], lines[1::3], lines[2::3], strict=False):
        out.setdefault(role, []).append(name)
    return out


class OneStopSignalTests(TestCase):
    timeout = 60
    fast = True
    helper = True
    cgroups = True

    def counter(self, name="count", linger=0.3, **kw) -> tuple[Deploy, str]:
        base = os.path.dirname(scratch(self))
        out = os.path.join(base, f"{name}.signals")
        deploy = Deploy(name, command=[sys.executable, COUNTER, out, str(linger)], startsecs=0, **kw)
        return deploy, out

    def service(self, *deploys) -> SupervisorService:
        svc = SupervisorService(reactor, list(deploys), runDir=scratch(self), reapInterval=0.2,
                                fastSpawn=self.fast, spawnHelper=self.helper,
                                cgroups=self.cgroups)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    @inlineCallbacks
    def up(self, svc: SupervisorService, name: str):
        """Wait until the instance's leader and its child both count signals; their pids."""
        yield waitFor(lambda: any(line.startswith("up ") for line in svc.tailLog(name)), timeout=20)
        line = next(line for line in svc.tailLog(name) if line.startswith("up "))
        return [int(p) for p in line.split()[1:]]

    @inlineCallbacks
    def test_stop_sends_one_term_to_leader_and_child(self):
        """C{stop}: the leader and the child in its group each get exactly one SIGTERM."""
        deploy, out = self.counter(stopwaitsecs=10)
        svc = self.service(deploy)
        svc.startService()
        yield svc.ready
        pids = yield self.up(svc, "count:0")
        yield svc.stopInstance("count:0")
        self.assertEqual(svc.instanceInfo("count:0")["state"], "STOPPED")
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})
        self.assertTrue(all(gone(p) for p in pids))

    @inlineCallbacks
    def test_stopsignal_int_sent_once(self):
        """Whatever the stop signal is (here INT, as for uvicorn or Celery), it comes once."""
        deploy, out = self.counter(stopsignal="INT", stopwaitsecs=10)
        svc = self.service(deploy)
        svc.startService()
        yield svc.ready
        yield self.up(svc, "count:0")
        yield svc.stopInstance("count:0")
        self.assertEqual(counted(out), {"leader": ["SIGINT"], "child": ["SIGINT"]})

    @inlineCallbacks
    def test_sigkill_is_the_only_second_signal(self):
        """A process still lingering after C{stopwaitsecs} gets SIGKILL, never a second TERM."""
        deploy, out = self.counter(linger=30, stopwaitsecs=0.5)
        svc = self.service(deploy)
        svc.startService()
        yield svc.ready
        pids = yield self.up(svc, "count:0")
        start = reactor.seconds()
        yield svc.stopInstance("count:0")
        self.assertGreaterEqual(reactor.seconds() - start, 0.45)
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})
        self.assertTrue(all(gone(p) for p in pids))

    @inlineCallbacks
    def test_restart_sends_one_term(self):
        """A restart stops the old processes with one TERM each, like a stop."""
        deploy, out = self.counter(stopwaitsecs=10)
        svc = self.service(deploy)
        svc.startService()
        yield svc.ready
        yield self.up(svc, "count:0")
        yield svc.restartInstance("count:0")
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})
        yield svc.stopService()

    @inlineCallbacks
    def test_leftover_of_an_exited_leader_gets_one_term(self):
        """A leader that exits on its own: the child it left in the group gets one TERM."""
        base = os.path.dirname(scratch(self))
        out = os.path.join(base, "left.signals")
        # The leader forks the counter's leader+child pair and exits at once.
        script = f"import subprocess, sys; subprocess.Popen([sys.executable, {COUNTER!r}, {out!r}]); " \
                 "import select; select.select([], [], [], 1.0)"
        svc = self.service(Deploy("left", command=[sys.executable, "-c", script], startsecs=0,
                                  autorestart="never", stopwaitsecs=10))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: svc.instanceInfo("left:0")["state"] == "EXITED", timeout=20)
        yield waitFor(lambda: len(counted(out).get("child", [])) >= 1, timeout=10)
        yield waitFor(lambda: not svc.instances["left:0"]._leftovers, timeout=10)
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})

    @inlineCallbacks
    def test_host_shutdown_sends_one_term(self):
        """Stopping the whole host (what twistd does at shutdown) signals each process once."""
        var = os.path.abspath(scratch(self))
        deploy, out = self.counter(stopwaitsecs=10)
        host = Host(name="t", store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
        host.add(SupervisorSettings(max_processes=4))
        host.add(deploy)
        top = host.build(reactor)
        svc = top.getServiceNamed("supervisor")
        top.startService()
        yield svc.ready
        pids = yield self.up(svc, "count:0")
        yield top.stopService()
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})
        self.assertTrue(all(gone(p) for p in pids))

    @inlineCallbacks
    def test_supervisor_process_sigterm_sends_one_term(self):
        """A real supervisor process told to quit (SIGTERM, its reactor shuts down) signals each
        of its processes once."""
        runDir = os.path.abspath(scratch(self))
        out = os.path.join(os.path.dirname(runDir), "proc.signals")
        proto = _Lines()
        transport = reactor.spawnProcess(
            proto, sys.executable,
            [sys.executable, os.path.join(HERE, "supervisor_main.py"), runDir, sys.executable, COUNTER, out],
            env=childEnv())
        yield waitFor(lambda: proto.find("READY"), timeout=20)
        yield waitFor(lambda: os.path.exists(out + ".up"), timeout=10)
        transport.signalProcess("TERM")
        yield proto.ended
        self.assertEqual(counted(out), {"leader": ["SIGTERM"], "child": ["SIGTERM"]})


class ForkPathOneStopSignalTests(OneStopSignalTests):
    """The same when spawning by fork."""

    fast = False


class SetprivPathOneStopSignalTests(OneStopSignalTests):
    """The same without the C helper (setpriv)."""

    helper = False
    cgroups = False  # with a cgroup, no helper means the fork path

"""Programs that daemonize themselves leave no daemon behind: not after each failed start, not
after FATAL, not after C{stop all}, not after the host's own stop.

The program (C{daemonizer.py}) forks, its child calls C{setsid} and forks the daemon, and the
leader exits 0 at once, before C{startsecs}: a failed start, retried until FATAL.  Survivors are
counted with psutil, by a token on the daemons' command line, independently of Salvus's own
bookkeeping.  Where cgroup v2 is writable, each instance has its own cgroup, and even a daemon
that also clears its environment (no marker, no session, no group in common) is caught; those
tests skip, saying so, on a host without it.
"""

from __future__ import annotations

import os
import sys
import uuid

import psutil
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import Backoff, Deploy, clonespawn
from salvusctl.supervisor.cgroups import CgroupTree
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
DAEMONIZER = os.path.join(HERE, "daemonizer.py")
QUICK = Backoff(initial=0.05, factor=1, cap=0.05, retries=3)


def survivors(token: str) -> list[int]:
    """Live (not zombie) processes with C{token} on their command line."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if token in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def _cgroupsHere() -> str | None:
    """None when this host lets Salvus make cgroups, else why not."""
    tree, why = CgroupTree.probe("probe-" + uuid.uuid4().hex[:8])
    if tree is None:
        return why
    tree.removeAll()
    return None


class DaemonTests(TestCase):
    timeout = 90
    cgroups = False
    fast = True
    helper = True

    def setUp(self):
        if self.cgroups:
            why = _cgroupsHere()
            if why is not None:
                self.skipTest(f"SKIPPED LOUDLY: no writable cgroup v2 here ({why}); the daemons that "
                              f"clear their environment cannot be caught on this host")
        self.token = f"salvus-daemon-{uuid.uuid4().hex[:12]}"
        self.addCleanup(self._killSurvivors)

    def _killSurvivors(self):
        for pid in survivors(self.token):
            try:
                os.kill(pid, 9)
            except OSError:
                pass

    def service(self, *args: str, stopwaitsecs: float = 2.0) -> SupervisorService:
        deploy = Deploy("d", [sys.executable, DAEMONIZER, self.token, *args], backoff=QUICK,
                        startsecs=10, stopwaitsecs=stopwaitsecs)
        svc = SupervisorService(reactor, [deploy], runDir=scratch(self), reapInterval=0.2,
                                cgroups=self.cgroups, fastSpawn=self.fast, spawnHelper=self.helper)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        if self.cgroups:
            self.assertIsNotNone(svc.os.cgroups)
        return svc

    @inlineCallbacks
    def fatal(self, svc):
        yield waitFor(lambda: svc.instanceInfo("d:0")["state"] == "FATAL", timeout=30)
        self.assertEqual(svc.instanceInfo("d:0")["restarts"], 3)

    @inlineCallbacks
    def test_each_failed_start_stops_its_daemon(self):
        """Four failed starts, four daemons: each is stopped (stopsignal) when its leader's exit is
        seen, so none is left once the instance is FATAL."""
        svc = self.service()
        yield self.fatal(svc)
        yield waitFor(lambda: not survivors(self.token), timeout=20)

    @inlineCallbacks
    def test_stop_all_and_host_stop_kill_the_daemons(self):
        """Daemons that ignore SIGTERM outlive their stop signal until stopwaitsecs; stop all
        (and then the host's stop) kills every one of them at once."""
        svc = self.service("stubborn", stopwaitsecs=60)
        yield self.fatal(svc)
        yield waitFor(lambda: len(survivors(self.token)) == 4, timeout=20)
        # The pid registry knows them too (the last one once the reaper has seen it): after a
        # SIGKILL of Salvus, the next start kills them.
        yield waitFor(lambda: set(survivors(self.token)) <= set(svc.registry.entries.get("d:0", {})),
                      timeout=10)
        yield svc.stopAll()
        yield waitFor(lambda: not survivors(self.token), timeout=10)
        self.assertEqual(svc.instanceInfo("d:0")["state"], "FATAL")
        yield svc.stopService()
        self.assertEqual(survivors(self.token), [])

    @inlineCallbacks
    def test_host_stop_kills_the_daemons(self):
        """No stop all: the host's own stop (stopService) kills the lingering daemons."""
        svc = self.service("stubborn", stopwaitsecs=60)
        yield self.fatal(svc)
        yield waitFor(lambda: len(survivors(self.token)) == 4, timeout=20)
        yield svc.stopService()
        yield waitFor(lambda: not survivors(self.token), timeout=10)

    @inlineCallbacks
    def test_daemon_of_a_running_instance_dies_with_it(self):
        """A long-lived leader whose daemon escaped the session: the stop takes both."""
        deploy = Deploy("d", [sys.executable, "-c", RUNNING_PARENT, DAEMONIZER, self.token, "stubborn"],
                        startsecs=0, stopwaitsecs=1)
        svc = SupervisorService(reactor, [deploy], runDir=scratch(self), reapInterval=0.2,
                                cgroups=self.cgroups, fastSpawn=self.fast, spawnHelper=self.helper)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        yield waitFor(lambda: survivors(self.token), timeout=20)
        yield svc.stopInstance("d:0")
        self.assertEqual(survivors(self.token), [])


RUNNING_PARENT = ("import subprocess, sys, time; subprocess.run([sys.executable] + sys.argv[1:]); "
                  "time.sleep(120)")


class CgroupDaemonTests(DaemonTests):
    """The same, each instance in its own cgroup, and daemons that clear their environment."""

    cgroups = True

    @inlineCallbacks
    def test_clean_environment_daemon_is_caught(self):
        """setsid, double fork and an empty environment: only the cgroup knows; it is enough."""
        svc = self.service("clean")
        yield self.fatal(svc)
        yield waitFor(lambda: not survivors(self.token), timeout=20)

    @inlineCallbacks
    def test_clean_stubborn_daemons_die_at_stop_all(self):
        svc = self.service("clean", "stubborn", stopwaitsecs=60)
        yield self.fatal(svc)
        yield waitFor(lambda: len(survivors(self.token)) == 4, timeout=20)
        yield svc.stopAll()
        yield waitFor(lambda: not survivors(self.token), timeout=10)
        yield svc.stopService()
        self.assertEqual(survivors(self.token), [])
        self.assertFalse(os.path.exists(svc.os.cgroups.base))

    @inlineCallbacks
    def test_clean_daemon_of_a_running_instance_dies_with_it(self):
        deploy = Deploy("d", [sys.executable, "-c", RUNNING_PARENT, DAEMONIZER, self.token, "clean",
                              "stubborn"], startsecs=0, stopwaitsecs=1)
        svc = SupervisorService(reactor, [deploy], runDir=scratch(self), reapInterval=0.2,
                                cgroups=True, fastSpawn=self.fast, spawnHelper=self.helper)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        yield waitFor(lambda: survivors(self.token), timeout=20)
        yield svc.stopInstance("d:0")
        self.assertEqual(survivors(self.token), [])


class HelperJoinsCgroupDaemonTests(CgroupDaemonTests):
    """Without the clone3 spawn (an older kernel, no compiler): the helper joins the cgroup by
    writing its pid to C{cgroup.procs} before it execs."""

    def setUp(self):
        super().setUp()
        saved = clonespawn._lib
        self.addCleanup(setattr, clonespawn, "_lib", saved)
        clonespawn._lib = None


class ForkPathCgroupDaemonTests(CgroupDaemonTests):
    """The forked child joins its cgroup itself, before exec."""

    fast = False


class SetprivPathCgroupDaemonTests(CgroupDaemonTests):
    """No helper: setpriv cannot join a cgroup, so an instance with one takes the fork path."""

    helper = False


class TrackingTests(TestCase):
    """Which mechanism finds an instance's processes is said once, at start; a previous run's
    cgroups are emptied at the next start, as its pid registry is."""

    timeout = 60

    def started(self, cgroups: bool, deploys=()):
        from twisted.logger import globalLogPublisher

        lines: list[str] = []

        def observer(event):
            from twisted.logger import formatEvent

            text = formatEvent(event)
            if text.startswith("process tracking:"):
                lines.append(text)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        svc = SupervisorService(reactor, list(deploys), runDir=self.runDir, reapInterval=0.2,
                                cgroups=cgroups)
        svc.startService()
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc, lines

    def setUp(self):
        self.runDir = scratch(self)

    def test_without_cgroups_the_log_says_what_is_not_caught(self):
        svc, lines = self.started(False)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("environment marker", lines[0])
        self.assertIn("cgroups=False", lines[0])
        self.assertIsNone(svc.os.cgroups)

    def test_with_cgroups_the_log_names_the_tree(self):
        why = _cgroupsHere()
        if why is not None:
            self.skipTest(f"SKIPPED LOUDLY: no writable cgroup v2 here ({why})")
        svc, lines = self.started(True)
        self.assertEqual(lines, [f"process tracking: cgroup v2, each instance in its own cgroup under "
                                 f"{svc.os.cgroups.base}"])

    def test_previous_runs_cgroup_is_emptied_at_start(self):
        """A process left in an instance cgroup by a run that was SIGKILLed (no marker, no
        registry entry) is killed when the next run starts."""
        import hashlib
        import subprocess

        why = _cgroupsHere()
        if why is not None:
            self.skipTest(f"SKIPPED LOUDLY: no writable cgroup v2 here ({why})")
        token = hashlib.sha1(os.path.abspath(self.runDir).encode()).hexdigest()[:12]
        tree, _ = CgroupTree.probe(token)
        left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={})
        self.addCleanup(lambda: left.poll() is None and left.kill())
        with open(tree.prepare("d:0"), "w") as f:
            f.write(str(left.pid))
        deploy = Deploy("d", ["/bin/sleep", "30"], autostart=False)
        svc, _ = self.started(True, [deploy])
        self.assertIn(left.pid, svc.leftoversKilled)
        self.assertEqual(left.wait(timeout=10), -9)

"""Real child processes: process groups, escaped descendants, signals, rlimits, log capture,
the crash/respawn soak, and a supervisor killed with SIGKILL."""

from __future__ import annotations

import os
import sys
import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import oscalls
from salvusctl.supervisor.deploy import Deploy, Probe, Ready
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def pidsWithArg(token: str) -> list[int]:
    """Live processes whose command line contains C{token} (independent of Salvus's own tracking)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        st = oscalls.readStat(int(name))
        if token in cmd and st is not None and not st.zombie:
            out.append(int(name))
    return out


def gone(pid: int) -> bool:
    st = oscalls.readStat(pid)
    return st is None or st.zombie


class RealTestCase(TestCase):
    timeout = 60
    fast = True
    helper = True
    cgroups = True

    def service(self, *deploys, **kw) -> SupervisorService:
        svc = SupervisorService(reactor, list(deploys), runDir=scratch(self), reapInterval=0.2,
                                fastSpawn=self.fast, spawnHelper=self.helper,
                                cgroups=self.cgroups, **kw)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc


class TreeTests(RealTestCase):
    @inlineCallbacks
    def test_tree_with_setsid_and_double_fork_dies(self):
        """A deploy forking sleepers (same group, setsid'd, double-forked, TERM-ignoring): after stop
        none survives and none is left as a zombie of ours."""
        tag = f"77{os.getpid() % 1000:03d}"
        script = (
            f"sleep {tag}1 & "
            f"setsid sleep {tag}2 & "
            f"(sh -c 'sleep {tag}3 &' &) ; "
            f"(setsid sh -c 'trap \"\" TERM; sleep {tag}4' &) ; "
            f"echo started; sleep {tag}5"
        )
        svc = self.service(Deploy("tree", command=["/bin/sh", "-c", script], startsecs=0.1, stopwaitsecs=1))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: len(pidsWithArg(tag)) >= 5)
        pids = pidsWithArg(tag)
        leader = svc.instanceInfo("tree:0")["pid"]
        yield svc.stopService()
        self.assertEqual(svc.instanceInfo("tree:0")["state"], "STOPPED")
        self.assertEqual(pidsWithArg(tag), [])
        me = os.getpid()
        for pid in pids + [leader]:
            st = oscalls.readStat(pid)
            self.assertTrue(st is None or (st.zombie and st.ppid != me), f"{pid} left as {st}")

    @inlineCallbacks
    def test_leftovers_of_a_crash_are_stopped(self):
        """A leader that dies on its own does not leave its background children running."""
        tag = f"66{os.getpid() % 1000:03d}"
        svc = self.service(Deploy("crashy", command=["/bin/sh", "-c", f"sleep {tag}1 & setsid sleep {tag}2 & "
                                                     "sleep 0.3; exit 3"],
                                  startsecs=0, autorestart="never", stopwaitsecs=1))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: len(pidsWithArg(tag)) >= 3)
        sleepers = [p for p in pidsWithArg(tag) if p != svc.instanceInfo("crashy:0")["pid"]]
        yield waitFor(lambda: svc.instanceInfo("crashy:0")["state"] == "EXITED")
        yield waitFor(lambda: all(gone(p) for p in sleepers) and pidsWithArg(tag) == [], timeout=5)
        self.assertEqual(svc.instanceInfo("crashy:0")["exitstatus"], 3)
        yield svc.stopService()

    @inlineCallbacks
    def test_term_ignored_gets_sigkill(self):
        """A process ignoring SIGTERM is SIGKILLed after stopwaitsecs."""
        svc = self.service(Deploy("stubborn", command=["/bin/sh", "-c", "trap '' TERM; echo ok; "
                                                       "while :; do sleep 0.05; done"],
                                  startsecs=0.1, stopwaitsecs=0.5))
        svc.startService()
        yield svc.ready
        pid = svc.instanceInfo("stubborn:0")["pid"]
        start = reactor.seconds()
        yield svc.stopInstance("stubborn:0")
        self.assertGreaterEqual(reactor.seconds() - start, 0.45)
        self.assertTrue(gone(pid))

    @inlineCallbacks
    def test_own_session(self):
        """Each instance leads its own session and process group."""
        svc = self.service(Deploy("s", command=["/bin/sleep", "30"], startsecs=0, numprocs=2))
        svc.startService()
        yield svc.ready
        for name in ("s:0", "s:1"):
            pid = svc.instanceInfo(name)["pid"]
            # (the fork path's child calls setsid() a moment after fork returns)
            yield waitFor(lambda pid=pid: oscalls.readStat(pid).sid == pid, timeout=5)
            st = oscalls.readStat(pid)
            self.assertEqual((st.sid, st.pgid), (pid, pid))
        yield svc.stopService()

    @inlineCallbacks
    def test_signal_reaches_group(self):
        svc = self.service(Deploy("g", command=["/bin/sh", "-c", "trap 'echo got-usr1' USR1; echo up; "
                                                "while :; do sleep 0.05; done"], startsecs=0))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: svc.tailLog("g:0") == ["up"])
        svc.signalInstance("g:0", "USR1")
        yield waitFor(lambda: "got-usr1" in svc.tailLog("g:0"))
        yield svc.stopService()


class LimitAndLogTests(RealTestCase):
    @inlineCallbacks
    def test_rlimits_applied(self):
        svc = self.service(Deploy("r", command=["/bin/sh", "-c", "ulimit -n; ulimit -t; sleep 30"],
                                  rlimits={"nofile": 64, "cpu": (7, 9)}, startsecs=0))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: len(svc.tailLog("r:0")) == 2)
        self.assertEqual(svc.tailLog("r:0"), ["64", "7"])
        yield svc.stopService()

    @inlineCallbacks
    def test_huge_line_and_garbage(self):
        """A 10 MB line and binary garbage are survived; the next line is captured intact."""
        script = ("head -c 10000000 /dev/zero | tr '\\0' x; echo; "
                  "head -c 20000 /dev/urandom; echo; echo 'ERROR after garbage'; sleep 30")
        stored = []
        svc = self.service(Deploy("noisy", command=["/bin/sh", "-c", script], startsecs=0,
                                  store_level="error"), storeHook=stored.append)
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: "ERROR after garbage" in svc.tailLog("noisy:0", 1))
        lines = svc.tailLog("noisy:0", 1000)
        self.assertLessEqual(max(len(line) for line in lines), 64 * 1024)
        self.assertEqual(lines[0], "x" * 64 * 1024)
        self.assertEqual(stored[-1].text, "ERROR after garbage")
        with open(svc.instanceInfo("noisy:0")["stdout_logfile"], "rb") as f:
            data = f.read()
        # the file holds what the program wrote, the over-long line cut at the cap (the cut is
        # counted in the line's record, not written into the stream)
        self.assertTrue(data.startswith(b"x" * 64 * 1024 + b"\n"), data[64 * 1024 - 8:64 * 1024 + 40])
        self.assertNotIn(b"[truncated", data)
        self.assertTrue(data.endswith(b"\nERROR after garbage\n"))
        self.assertLess(len(data), 1_000_000)
        yield svc.stopService()

    @inlineCallbacks
    def test_runs_as_user(self):
        """user= switches uid and gid (Salvus runs as root here)."""
        svc = self.service(Deploy("who", command=["/bin/sh", "-c", "id -u; id -g; sleep 30"], user="nobody",
                                  startsecs=0))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: len(svc.tailLog("who:0")) == 2)
        import pwd

        pw = pwd.getpwnam("nobody")
        self.assertEqual(svc.tailLog("who:0"), [str(pw.pw_uid), str(pw.pw_gid)])
        yield svc.stopService()

    @inlineCallbacks
    def test_child_gets_only_stdio(self):
        """An instance sees descriptors 0-2 only, even ones this process left inheritable."""
        r, w = os.pipe()
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        svc = self.service(Deploy("fds", command=["/bin/sh", "-c", "ls /proc/$$/fd; sleep 30"],
                                  startsecs=0))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: len(svc.tailLog("fds:0")) >= 3)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(sorted(svc.tailLog("fds:0")), ["0", "1", "2"])
        yield svc.stopService()

    @inlineCallbacks
    def test_leader_start_times_recorded(self):
        """Each leader's start time (read after the burst of spawns) reaches members and the registry."""
        svc = self.service(Deploy("st", command=["/bin/sleep", "30"], numprocs=5, startsecs=0.2))
        svc.startService()
        yield svc.ready
        yield deferLater(reactor, 1.2, lambda: None)  # past the registry's one-write-a-second
        onDisk = oscalls.PidRegistry(svc.registry.path).load()
        for i in range(5):
            instance = svc.instances[f"st:{i}"]
            expected = oscalls.readStat(instance.pid).starttime
            self.assertEqual(instance.members, {instance.pid: expected})
            self.assertEqual(onDisk[instance.name], {instance.pid: expected})
        yield svc.stopService()

    @inlineCallbacks
    def test_stderr_captured_separately(self):
        svc = self.service(Deploy("e", command=["/bin/sh", "-c", "echo out; echo err >&2; sleep 30"],
                                  startsecs=0))
        svc.startService()
        yield svc.ready
        yield waitFor(lambda: svc.tailLog("e:0", 5, "stderr") == ["err"])
        self.assertEqual(svc.tailLog("e:0", 5, "stdout"), ["out"])
        yield svc.stopService()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


class SoakTests(RealTestCase):
    timeout = 120

    @inlineCallbacks
    def test_thousand_crash_cycles_leak_nothing(self):
        """1,000 crash/respawn cycles: the supervisor's open fds and threads do not grow."""
        svc = self.service(Deploy("crash", command=["/bin/false"], startsecs=0, flapping=None,
                                  startretries=None))
        svc.startService()
        inst = svc.instances["crash:0"]
        yield waitFor(lambda: inst.totalRestarts >= 50, timeout=60, interval=0.05)
        fds, threads = _fds(), _threads()
        yield waitFor(lambda: inst.totalRestarts >= 1050, timeout=100, interval=0.05)
        self.assertLessEqual(_fds(), fds + 2)
        self.assertLessEqual(_threads(), threads)
        yield svc.stopService()
        self.assertEqual(svc.reaper.adopted, {})


class _Lines(ProcessProtocol):
    def __init__(self):
        self.lines: list[str] = []
        self.buf = b""
        self.ended = Deferred()

    def outReceived(self, data):
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.lines.append(line.decode())

    def processEnded(self, reason):
        self.ended.callback(None)

    def find(self, prefix):
        return next((line for line in self.lines if line.startswith(prefix)), None)


class KilledSupervisorTests(TestCase):
    timeout = 60

    def launch(self, runDir, command):
        proto = _Lines()
        env = dict(os.environ, PYTHONPATH=ROOT)
        transport = reactor.spawnProcess(proto, sys.executable,
                                         [sys.executable, os.path.join(HERE, "supervisor_main.py"), runDir,
                                          *command], env=env)
        return proto, transport

    @inlineCallbacks
    def test_sigkilled_supervisor(self):
        """SIGKILL the supervisor: its instance dies at once (PDEATHSIG); what the instance forked is
        killed by the next start from the pid registry; a recycled pid is never touched."""
        tag = f"88{os.getpid() % 1000:03d}"
        runDir = os.path.abspath(scratch(self))
        command = ["/bin/sh", "-c", f"sleep {tag}1 & setsid sleep {tag}2 & sleep {tag}3"]
        proto, transport = self.launch(runDir, command)
        yield waitFor(lambda: proto.find("READY"), timeout=20)
        leader = int(proto.find("READY").split()[1])
        mine = {leader, transport.pid}
        yield waitFor(lambda: len(set(pidsWithArg(tag)) - mine) == 3)
        survivors = sorted(set(pidsWithArg(tag)) - mine)

        # An unrelated process whose pid the registry "remembers" with another start time.
        innocent = _Lines()
        innocentT = reactor.spawnProcess(innocent, "/bin/sleep", ["/bin/sleep", "60"], env={})

        transport.signalProcess("KILL")
        yield proto.ended
        yield waitFor(lambda: gone(leader), timeout=5)  # the kernel's parent-death signal

        registry = oscalls.PidRegistry(os.path.join(runDir, "pids.json"))
        recorded = registry.load()
        self.assertIn("victim:0", recorded)
        recorded["ghost:0"] = {innocentT.pid: oscalls.readStat(innocentT.pid).starttime + 12345}
        registry.entries = recorded
        registry.save()
        self.assertTrue(all(not gone(p) for p in survivors), "orphans outlived the supervisor")

        proto2, transport2 = self.launch(runDir, command)
        yield waitFor(lambda: proto2.find("READY"), timeout=20)
        cleaned = {int(p) for p in proto2.find("CLEANED").split()[1:]}
        self.assertTrue(set(survivors) <= cleaned, (survivors, cleaned))
        yield waitFor(lambda: all(gone(p) for p in survivors), timeout=5)
        self.assertFalse(gone(innocentT.pid))
        innocentT.signalProcess("KILL")
        yield innocent.ended

        # A graceful stop of the second supervisor leaves nothing either.
        leader2 = int(proto2.find("READY").split()[1])
        transport2.signalProcess("TERM")
        yield proto2.ended
        yield waitFor(lambda: gone(leader2), timeout=5)
        self.assertEqual(pidsWithArg(tag), [])
        for pid in survivors + [leader]:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


class ForkPathTreeTests(TreeTests):
    """The same guarantees when spawning by fork (no setpriv/prlimit on the host)."""

    fast = False


class ForkPathLimitTests(LimitAndLogTests):
    fast = False


class SetprivPathTreeTests(TreeTests):
    """Without the C helper: setpriv / prlimit / env -C do the same job."""

    helper = False
    cgroups = False  # with a cgroup, no helper means the fork path


class SetprivPathLimitTests(LimitAndLogTests):
    helper = False
    cgroups = False  # with a cgroup, no helper means the fork path


class WrapperTests(TestCase):
    def test_helper_argv(self):
        """The helper gets the parent pid before the death signal, so it can see a dead parent."""
        helper = oscalls.spawnHelper()
        if helper is None:
            self.skipTest("no C compiler on this host: the setpriv path is tested instead")
        argv = oscalls.wrapperArgv(["prog", "a"], "/tmp", None, None, 15, {7: (64, 64)})
        self.assertEqual(argv, [helper, "-p", str(os.getpid()), "-d", "15", "-r", "7:64:64", "-c", "/tmp",
                                "--", "prog", "a"])

    @inlineCallbacks
    def test_helper_is_built_off_the_reactor(self):
        """On a machine where the helper is not cached yet, asking for it returns at once (the
        compiler runs as a child process) and spawns use setpriv until it is there; then the
        helper is used."""
        import shutil as _shutil
        import tempfile

        if _shutil.which("cc") is None and _shutil.which("gcc") is None:
            self.skipTest("no C compiler on this host: the setpriv path is tested instead")
        cache = tempfile.mkdtemp(prefix="salvus-cache-test-")
        self.addCleanup(_shutil.rmtree, cache, True)
        saved = oscalls._helper, os.environ.get("XDG_CACHE_HOME")

        def restore():
            oscalls._helper = saved[0]
            if saved[1] is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = saved[1]

        self.addCleanup(restore)
        os.environ["XDG_CACHE_HOME"] = cache
        oscalls._helper = oscalls._UNSET
        d = oscalls.buildSpawnHelper(reactor)
        self.assertFalse(d.called)
        argv = oscalls.wrapperArgv(["prog"], None, None, None, 15, {})
        self.assertEqual(argv[0], oscalls._SETPRIV)
        path = yield d
        self.assertTrue(path.startswith(cache) and os.access(path, os.X_OK), path)
        self.assertEqual(oscalls.wrapperArgv(["prog"], None, None, None, 15, {})[0], path)

    def test_other_user_goes_through_setpriv(self):
        """Without the helper, setpriv changes the user; with it, the helper does the root part
        (rlimits, umask) and then execs setpriv, which sets the death signal again (a change of
        credentials clears it) and changes the user."""
        saved = oscalls._helper
        self.addCleanup(setattr, oscalls, "_helper", saved)
        oscalls._helper = None
        argv = oscalls.wrapperArgv(["prog"], None, 65534, 65534, 15, {})
        self.assertEqual(argv[1:], ["--pdeathsig", "TERM", "--reuid", "65534", "--init-groups",
                                    "--regid", "65534", "--", "prog"])
        oscalls._helper = "/cache/salvus-spawn"
        argv = oscalls.wrapperArgv(["prog"], "/srv", 65534, None, 15, {7: (64, 64)}, umask=0o27)
        self.assertEqual(argv, ["/cache/salvus-spawn", "-p", str(os.getpid()), "-d", "15",
                                "-r", "7:64:64", "-m", "27", "--",
                                oscalls._SETPRIV, "--pdeathsig", "TERM", "--reuid", "65534",
                                "--init-groups", "--", oscalls._ENV, "-C", "/srv", "--", "prog"])

    def test_umask_without_helper_takes_the_fork_path(self):
        """setpriv cannot set a umask: without the helper, an instance with one is forked."""
        saved = oscalls._helper
        self.addCleanup(setattr, oscalls, "_helper", saved)
        oscalls._helper = None
        self.assertIsNone(oscalls.wrapperArgv(["prog"], None, None, None, 15, {}, umask=0o22))


class ReaperTests(RealTestCase):
    @inlineCallbacks
    def test_twisted_children_keep_their_exit_status(self):
        """The orphan reaper never waits for a pid Twisted owns: its exit code still arrives."""
        svc = self.service(Deploy("idle", command=["/bin/sleep", "30"], startsecs=0))
        svc.startService()
        yield svc.ready
        codes = []
        for _ in range(20):
            proto = _Lines()
            t = reactor.spawnProcess(proto, "/bin/sh", ["/bin/sh", "-c", "exit 7"], env={})
            ended = Deferred()
            proto.processEnded = lambda reason, ended=ended: ended.callback(reason.value.exitCode)
            svc.reapPass()
            codes.append((yield ended))
            self.assertIsNone(t.pid)
        self.assertEqual(set(codes), {7})
        yield svc.stopService()

    @inlineCallbacks
    def test_unattributed_zombie_left_one_pass(self):
        """A zombie child nobody attributes (a subprocess) survives the first pass, so its owner
        can still wait for it; only a zombie nobody waited for is reaped on the next pass."""
        import subprocess

        svc = self.service(Deploy("idle", command=["/bin/sleep", "30"], startsecs=0))
        svc.startService()
        yield svc.ready
        p = subprocess.Popen(["/bin/sh", "-c", "exit 5"])
        yield waitFor(lambda: oscalls.readStat(p.pid).zombie)
        svc.reaper.scan()
        self.assertEqual(p.wait(), 5)
        q = subprocess.Popen(["/bin/sh", "-c", "exit 6"])
        yield waitFor(lambda: oscalls.readStat(q.pid).zombie)
        svc.reaper.scan()
        svc.reaper.scan()
        self.assertIsNone(oscalls.readStat(q.pid))
        q.returncode = 6  # reaped for it; keep Popen's destructor quiet
        yield svc.stopService()


class ProbeTests(RealTestCase):
    @inlineCallbacks
    def test_command_probe_gates_dependents(self):
        """A command probe keeps the instance not-ready (and its dependent stopped) until it passes."""
        svc = self.service(
            Deploy("db", command=["/bin/sleep", "30"], startsecs=0,
                   probe=Probe(kind="command", command=("/bin/sh", "-c", "test -f {run_dir}/up"),
                               interval=0.05, failures=1000)),
            Deploy("app", command=["/bin/sleep", "30"], startsecs=0, depends_on=["db"]))
        svc.startService()
        yield waitFor(lambda: svc.instanceInfo("db:0")["state"] == "RUNNING")
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(svc.instanceInfo("db:0")["ready"])
        self.assertEqual(svc.instanceInfo("app:0")["state"], "STOPPED")
        with open(os.path.join(svc.instances["db:0"].runDir, "up"), "w"):
            pass
        yield svc.ready
        self.assertEqual(svc.instanceInfo("app:0")["state"], "RUNNING")
        yield svc.stopService()

    @inlineCallbacks
    def test_tcp_probe_restarts_silent_instance(self):
        """An instance that never listens on its port is restarted after `failures` probes."""
        svc = self.service(Deploy("mute", command=["/bin/sleep", "30"], startsecs=0, port="auto",
                                  probe=Probe(kind="tcp", interval=0.05, timeout=0.2, failures=2)))
        svc.startService()
        yield waitFor(lambda: svc.instanceInfo("mute:0")["restarts"] >= 2)
        self.assertIn("liveness probe failed 2 times", svc.instanceInfo("mute:0")["restart_reason"])
        yield svc.stopService()

    @inlineCallbacks
    def test_tcp_probe_of_answering_instance_logs_nothing(self):
        """A probe every few seconds per instance must not write Twisted's factory start/stop
        lines into the operator's log (two lines per probe drown everything else)."""
        from twisted.logger import formatEvent, globalLogPublisher

        lines: list[str] = []

        def observe(event):
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        # RUNNING once it listens (its "listening" line), not after a guessed startsecs: under
        # load a child slower to listen than three probe intervals would be restarted.  Each
        # probe it accepts is a line, so the test waits for probes by count, not for a time.
        listen = ("import socket, sys\n"
                  "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)\n"
                  "print('listening', flush=True)\n"
                  "while True: s.accept()[0].close(); print('probed', flush=True)\n")
        svc = self.service(Deploy("talk", command=[sys.executable, "-c", listen, "{port}"],
                                  ready=Ready("log", pattern="^listening$"), port="auto",
                                  probe=Probe(kind="tcp", interval=0.05, timeout=1.0)))
        svc.startService()
        yield waitFor(lambda: svc.instanceInfo("talk:0")["ready"])
        yield waitFor(lambda: svc.tailLog("talk:0").count("probed") >= 6)  # several more probes
        self.assertEqual(svc.instanceInfo("talk:0")["restarts"], 0)
        self.assertEqual([line for line in lines if "factory" in line.lower()], [])
        yield svc.stopService()

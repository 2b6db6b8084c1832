"""supervisord's spawn options, on real child processes and every spawn path: C{umask},
C{redirect_stderr}, C{stdin} (what C{supervisor.sendProcessStdin} writes to), and default signal
dispositions (Salvus ignores SIGPIPE, as every Python does; its children must not inherit that,
or C{yes | head} pipelines in them never end).
"""

from __future__ import annotations

import os
import pwd
import signal
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.errors import ConfigError
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.process import NoStdin, NotRunning
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch

PRINT_UMASK = "import os; m = os.umask(0); print('umask %03o' % m, flush=True)"
INTERLEAVED = ("import sys\n"
               "for i in range(3):\n"
               "    print('out', i, flush=True)\n"
               "    print('err', i, file=sys.stderr, flush=True)\n")
ECHO = ("import sys\n"
        "print('up', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', line.strip(), flush=True)\n"
        "print('eof', flush=True)\n")


class SpawnOptionTests(TestCase):
    timeout = 60
    fast = True
    helper = True
    cgroups = True

    def service(self, *deploys) -> SupervisorService:
        svc = SupervisorService(reactor, list(deploys), runDir=scratch(self), reapInterval=0.2,
                                fastSpawn=self.fast, spawnHelper=self.helper,
                                cgroups=self.cgroups)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        return svc

    def lines(self, svc, name="p:0", stream="stdout"):
        return svc.tailLog(name, 100, stream)

    @inlineCallbacks
    def test_umask_is_the_deploys(self):
        """C{umask=0o027}: the process starts with that mask (and a file it makes is 0640)."""
        svc = self.service(Deploy("p", [sys.executable, "-c", PRINT_UMASK], umask=0o027, startsecs=0,
                                  autorestart="never"))
        yield waitFor(lambda: self.lines(svc), timeout=20)
        self.assertEqual(self.lines(svc), ["umask 027"])

    @inlineCallbacks
    def test_umask_is_inherited_by_default(self):
        """No umask: Salvus's own, as supervisord's default."""
        mine = os.umask(0o022)
        os.umask(mine)
        svc = self.service(Deploy("p", [sys.executable, "-c", PRINT_UMASK], startsecs=0, autorestart="never"))
        yield waitFor(lambda: self.lines(svc), timeout=20)
        self.assertEqual(self.lines(svc), [f"umask {mine:03o}"])

    @inlineCallbacks
    def test_umask_as_another_user(self):
        """C{user='nobody'} with a umask: both hold (the mask survives the change of user)."""
        python = _nobodysPython(self)
        script = PRINT_UMASK + "; print('uid', os.getuid(), flush=True)"
        svc = self.service(Deploy("p", [python, "-c", script], umask=0o077, user="nobody",
                                  startsecs=0, autorestart="never"))
        yield waitFor(lambda: len(self.lines(svc)) >= 2, timeout=20)
        self.assertEqual(self.lines(svc), ["umask 077", f"uid {pwd.getpwnam('nobody').pw_uid}"])

    @inlineCallbacks
    def test_redirect_stderr_keeps_the_order(self):
        """C{redirect_stderr=True}: stderr lines land in the stdout log, in the order written
        (one pipe, not two merged), and the stderr stream stays empty."""
        svc = self.service(Deploy("p", [sys.executable, "-c", INTERLEAVED], redirect_stderr=True,
                                  startsecs=0, autorestart="never"))
        yield waitFor(lambda: len(self.lines(svc)) >= 6, timeout=20)
        self.assertEqual(self.lines(svc), ["out 0", "err 0", "out 1", "err 1", "out 2", "err 2"])
        self.assertEqual(self.lines(svc, stream="stderr"), [])
        self.assertEqual(svc.instanceInfo("p:0")["stderr_logfile"], "")

    @inlineCallbacks
    def test_stderr_apart_by_default(self):
        svc = self.service(Deploy("p", [sys.executable, "-c", INTERLEAVED], startsecs=0, autorestart="never"))
        yield waitFor(lambda: len(self.lines(svc, stream="stderr")) >= 3, timeout=20)
        self.assertEqual(self.lines(svc), ["out 0", "out 1", "out 2"])
        self.assertEqual(self.lines(svc, stream="stderr"), ["err 0", "err 1", "err 2"])

    @inlineCallbacks
    def test_stdin_pipe(self):
        """C{stdin=True}: what C{sendStdin} writes, the process reads, in order."""
        svc = self.service(Deploy("p", [sys.executable, "-c", ECHO], stdin=True, startsecs=0))
        yield waitFor(lambda: "up" in self.lines(svc), timeout=20)
        svc.sendStdin("p:0", b"one\n")
        svc.sendStdin("p:0", b"two\nthree\n")
        yield waitFor(lambda: len(self.lines(svc)) >= 4, timeout=20)
        self.assertEqual(self.lines(svc), ["up", "got one", "got two", "got three"])
        yield svc.stopInstance("p:0")
        self.assertRaises(NotRunning, svc.sendStdin, "p:0", b"late\n")
        self.assertRaises(KeyError, svc.sendStdin, "nope:0", b"x")

    @inlineCallbacks
    def test_stdin_is_devnull_by_default(self):
        """Without C{stdin}, a program reading stdin sees end-of-file at once, and writing to it
        is refused with the reason."""
        svc = self.service(Deploy("p", [sys.executable, "-c", ECHO + "import time; time.sleep(60)"],
                                  startsecs=0))
        yield waitFor(lambda: "eof" in self.lines(svc), timeout=20)
        self.assertEqual(self.lines(svc), ["up", "eof"])
        e = self.assertRaises(NoStdin, svc.sendStdin, "p:0", b"x\n")
        self.assertIn("stdin=True", str(e))

    @inlineCallbacks
    def test_closed_stdin_is_refused(self):
        """A process that closed its stdin: the write is refused (supervisord: NO_FILE)."""
        script = "import os, time; os.close(0); print('closed', flush=True); time.sleep(60)"
        svc = self.service(Deploy("p", [sys.executable, "-c", script], stdin=True, startsecs=0))
        yield waitFor(lambda: "closed" in self.lines(svc), timeout=20)

        def refused():
            try:
                svc.sendStdin("p:0", b"x\n")
            except NoStdin:
                return True
            return False

        yield waitFor(refused, timeout=20)

    @inlineCallbacks
    def test_default_signal_dispositions(self):
        """The child ignores none of the signals Salvus ignores: SIGPIPE is at its default."""
        self.assertEqual(signal.getsignal(signal.SIGPIPE), signal.SIG_IGN)  # Python's own
        svc = self.service(Deploy("p", ["/bin/sh", "-c", "exec grep ^SigIgn /proc/self/status"],
                                  startsecs=0, autorestart="never"))
        yield waitFor(lambda: self.lines(svc), timeout=20)
        ignored = int(self.lines(svc)[0].split()[1], 16)
        self.assertFalse(ignored & (1 << (signal.SIGPIPE - 1)), self.lines(svc))
        # None of the standard signals either (32 and 33 belong to the C library's threads).
        self.assertEqual(ignored & 0x7FFFFFFF, 0, self.lines(svc))


def _nobodysPython(case) -> str:
    """A Python that C{nobody} may run (this test's own may live under a 0700 home)."""
    if os.geteuid() != 0:
        case.skipTest("needs root to run a process as nobody")
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    case.skipTest("no system python3 that nobody can run")


class SetprivPathSpawnOptionTests(SpawnOptionTests):
    """Without the C helper (setpriv, prlimit, env -C; the fork path for a umask)."""

    helper = False
    cgroups = False  # with a cgroup, no helper means the fork path


class ForkPathSpawnOptionTests(SpawnOptionTests):
    fast = False


class SpawnOptionValidationTests(TestCase):
    def test_bad_values_are_refused(self):
        for kw, words in [({"umask": "022"}, "umask must be an int"), ({"umask": 0o1000}, "umask"),
                          ({"umask": True}, "umask"), ({"stdin": "yes"}, "stdin must be True or False"),
                          ({"redirect_stderr": 1}, "redirect_stderr must be True or False")]:
            e = self.assertRaises(ConfigError, Deploy("p", ["/bin/true"], **kw).validate)
            self.assertIn(words, str(e), kw)
            self.assertIn("deploy 'p'", str(e))

"""The clone3 spawn: a child is created inside its cgroup, in its own session, with exactly the
descriptors asked for; a program that cannot be executed is an OSError naming it, and leaves no
zombie; without the library the caller is told to take the other path.  Real processes, the
real kernel; the tests skip, saying so, where cgroup v2 is not writable or the library cannot be
built."""

from __future__ import annotations

import errno
import os
import signal
import uuid

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import clonespawn
from salvusctl.supervisor.cgroups import CgroupTree, cgroup2Mount


class CloneSpawnTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        ok = yield clonespawn.build(reactor)
        if not ok:
            self.skipTest("SKIPPED LOUDLY: the clone3 spawn library cannot be built or loaded here")
        self.tree, why = CgroupTree.probe("clone-" + uuid.uuid4().hex[:8])
        if self.tree is None:
            self.skipTest(f"SKIPPED LOUDLY: no writable cgroup v2 here ({why})")
        self.addCleanup(self.tree.removeAll)
        self.cgroupDir = os.path.dirname(self.tree.prepare("t-0"))

    def run_(self, argv, env=None, actions=()):
        r, w = os.pipe()
        try:
            pid = clonespawn.spawn(argv[0], argv, env or {"PATH": "/usr/bin:/bin"}, self.cgroupDir,
                                   [(os.POSIX_SPAWN_DUP2, w, 1), *actions], [])
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        return pid, out.decode(), os.waitstatus_to_exitcode(status)

    def test_the_child_is_born_in_its_cgroup_and_session(self):
        pid, out, code = self.run_(["/bin/sh", "-c", "echo $$; grep '^0::' /proc/self/cgroup; "
                                    "ps -o sid= -p $$; echo $SALVUS_T"], env={"SALVUS_T": "yes",
                                                                             "PATH": "/usr/bin:/bin"})
        lines = out.split()
        self.assertEqual(code, 0)
        self.assertEqual(int(lines[0]), pid)
        self.assertEqual(lines[1], "0::" + self.cgroupDir[len(cgroup2Mount()):])
        self.assertEqual(int(lines[2]), pid)  # a session leader
        self.assertEqual(lines[3], "yes")

    def test_file_actions_are_applied(self):
        kept = os.open(os.devnull, os.O_RDONLY)  # inheritable
        closed = os.open(os.devnull, os.O_RDONLY)
        for fd in (kept, closed):
            os.set_inheritable(fd, True)
            self.addCleanup(os.close, fd)
        script = f"for fd in {kept} {closed}; do test -e /proc/self/fd/$fd && echo open || echo shut; done"
        _, out, _ = self.run_(["/bin/sh", "-c", script], actions=[(os.POSIX_SPAWN_CLOSE, closed)])
        self.assertEqual(out.split(), ["open", "shut"])

    def test_signals_ignored_here_are_default_in_the_child(self):
        old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGUSR2, old)
        _, out, _ = self.run_(["/bin/sh", "-c", "grep SigIgn /proc/self/status"])
        ignored = int(out.split()[1], 16)
        self.assertFalse(ignored & (1 << (signal.SIGUSR2 - 1)), out)

    def test_a_program_that_cannot_run_is_an_error_and_no_zombie(self):
        before = set(_children())
        with self.assertRaises(OSError) as e:
            clonespawn.spawn("/nonexistent/prog", ["/nonexistent/prog"], {}, self.cgroupDir, [], [])
        self.assertEqual(e.exception.errno, errno.ENOENT)
        self.assertIn("/nonexistent/prog", str(e.exception))
        self.assertEqual(set(_children()) - before, set())

    def test_a_cgroup_that_does_not_exist_is_an_error(self):
        with self.assertRaises(OSError):
            clonespawn.spawn("/bin/true", ["/bin/true"], {}, self.cgroupDir + "-missing", [], [])


class UnavailableTests(TestCase):
    def test_without_the_library_the_caller_takes_the_other_path(self):
        saved = clonespawn._lib
        self.addCleanup(setattr, clonespawn, "_lib", saved)
        clonespawn._lib = None
        with self.assertRaises(clonespawn.Unavailable):
            clonespawn.spawn("/bin/true", ["/bin/true"], {}, "/", [], [])

    def test_turned_off_by_the_environment(self):
        saved = os.environ.get("SALVUS_CLONE_SPAWN")
        os.environ["SALVUS_CLONE_SPAWN"] = "0"
        self.addCleanup(lambda: os.environ.pop("SALVUS_CLONE_SPAWN") if saved is None
                        else os.environ.__setitem__("SALVUS_CLONE_SPAWN", saved))
        self.assertIsNone(clonespawn._target())


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return out

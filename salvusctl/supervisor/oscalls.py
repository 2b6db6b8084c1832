"""Every operating-system call the supervisor makes: spawn, prctl, /proc, signals, waitpid.

Kept apart from the state machine so that the machine runs against a fake in tests and this module
is tested against the real kernel.  Linux only where it says so; elsewhere the Linux extras
(subreaper, parent-death signal, /proc scans) quietly do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.utils import getProcessOutputAndValue

from salvusctl import _twistedcompat
from salvusctl.supervisor import clonespawn
from salvusctl.supervisor.buildcache import cachedBuild

__all__ = [
    "MARKER",
    "setChildSubreaper",
    "InstanceProcess",
    "wrapperArgv",
    "spawnHelper",
    "buildSpawnHelper",
    "spawnInstance",
    "Stat",
    "readStat",
    "readMarker",
    "procTable",
    "Snapshot",
    "childrenOf",
    "members",
    "signalMembers",
    "alive",
    "Reaper",
    "PidRegistry",
    "cleanLeftovers",
]

MARKER = "SALVUS_INSTANCE"
LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None
if LINUX:
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # pragma: no cover
        _libc = None


def _prctl(option: int, arg: int) -> bool:
    if _libc is None:
        return False
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def setChildSubreaper(on: bool = True) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); True when it worked.

    Without it a daemon that double-forks out of an instance is re-parented to PID 1 and escapes
    every stop; with it, the daemon becomes our child, visible, killable and reapable.  C{on=False}
    gives them back to PID 1 (once nothing of ours is left to adopt).
    """
    return _prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


_SETPRIV = shutil.which("setpriv") if LINUX else None
_PRLIMIT = shutil.which("prlimit") if LINUX else None
_ENV = shutil.which("env")
_RLIMIT_NAMES = {
    resource.RLIMIT_AS: "as", resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_CPU: "cpu",
    resource.RLIMIT_NPROC: "nproc", resource.RLIMIT_CORE: "core", resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_DATA: "data", resource.RLIMIT_STACK: "stack", resource.RLIMIT_MEMLOCK: "memlock",
}


_HELPER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spawnhelper.c")
_UNSET = object()
_helper: object = _UNSET


def spawnHelper(build: bool = True) -> str | None:
    """The path of the compiled C{salvus-spawn} helper, building it once if a C compiler exists.

    Cached under C{$XDG_CACHE_HOME/salvus} (C{~/.cache/salvus}) by a hash of its source; None when
    it cannot be had (then C{setpriv} does the job, or the fork path).  C{SALVUS_SPAWN_HELPER=0}
    turns it off.  This builds synchronously; a running supervisor uses L{buildSpawnHelper}.
    """
    global _helper
    if _helper is not _UNSET:
        return _helper  # type: ignore[return-value]
    if not build:
        return None
    target = _helperTarget()
    if target is None or os.access(target[0], os.X_OK):
        _helper = target[0] if target else None
        return _helper  # type: ignore[return-value]
    path, cc = target
    tmp = f"{path}.{os.getpid()}.tmp"
    _helper = None
    for argv in _compileCommands(cc, tmp):
        try:
            done = subprocess.run(argv, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            break
        if done.returncode == 0:
            os.replace(tmp, path)
            _helper = path
            break
    return _helper  # type: ignore[return-value]


def buildSpawnHelper(reactor) -> Deferred:
    """Have the helper ready without blocking C{reactor}: at once when it is cached, else compiled
    by a C{cc} child process of the reactor's (0.3-1 s, once per machine).

    Until it is, L{wrapperArgv} finds no helper and spawns go through C{setpriv} (same session,
    death signal and rlimits, a little slower).  Fires with the path or None; never fails.
    """
    global _helper
    if _helper is not _UNSET:
        return succeed(_helper)
    target = _helperTarget()
    if target is None or os.access(target[0], os.X_OK):
        _helper = target[0] if target else None
        return succeed(_helper)
    path, cc = target
    tmp = f"{path}.{os.getpid()}.tmp"
    commands = _compileCommands(cc, tmp)
    # A second supervisor in this process asking meanwhile waits for the same build.
    pending = _building.get(path)
    if pending is not None:
        d = Deferred()
        pending.append(d)
        return d
    waiters: list[Deferred] = []
    _building[path] = waiters

    def attempt(_=None):
        if not commands:
            return None
        argv = commands.pop(0)
        d = getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ), reactor=reactor)
        return d.addCallback(compiled).addErrback(lambda f: None)

    def compiled(result):
        _out, _err, code = result
        if code != 0:
            return attempt()
        os.replace(tmp, path)
        return path

    def done(result):
        global _helper
        if _helper is _UNSET:
            _helper = result
        del _building[path]
        for d in waiters:
            d.callback(_helper)
        return _helper

    return maybeDeferred(attempt).addErrback(lambda f: None).addCallback(done)


_building: dict[str, list[Deferred]] = {}


def _helperTarget() -> tuple[str, str] | None:
    """(the cached helper's path, the C compiler to build it with), or None when it cannot be had."""
    if not LINUX or os.environ.get("SALVUS_SPAWN_HELPER") == "0":
        return None
    target = cachedBuild(_HELPER_SOURCE, "salvus-spawn", lambda path: os.access(path, os.X_OK))
    return None if target is None else (target[0], target[1] or "")


def _compileCommands(cc: str, output: str) -> list[list[str]]:
    """Static first (it starts faster and needs no loader), then dynamic."""
    return [[cc, "-O2", *flags, "-o", output, _HELPER_SOURCE] for flags in (["-static"], [])]


def wrapperArgv(argv: list[str], cwd: str | None, uid: int | None, gid: int | None,
                deathsig: int | None, rlimits: Mapping[int, tuple[int, int]],
                useHelper: bool = True, umask: int | None = None,
                cgroup: str | None = None) -> list[str] | None:
    """The argv that does in small exec'd programs what the fork path does in Python, or None
    when they are missing (then the fork path is used).

    Preferred: the static C{salvus-spawn} helper (L{spawnHelper}): parent-death signal, rlimits,
    umask, working directory; to change user it execs C{setpriv} (uid/gid, the parent-death
    signal again, since a change of credentials clears it) and C{env -C} (the working directory,
    entered as the user, as supervisord does).  Without the helper: C{setpriv} sets the
    parent-death signal and the uid/gid, C{prlimit} the rlimits, C{env -C} the working directory
    (no umask, no cgroup there: the fork path does those).  The session comes from
    C{posix_spawn(setsid=True)} either way.  C{cgroup} (a C{cgroup.procs} path) is joined by
    the helper before it does anything else (moving the child from here after the spawn would
    race with its first fork).
    A posix_spawn of a small program costs a fraction of a fork of the (large) supervisor process.
    """
    helper = spawnHelper(build=False) if useHelper else None
    asUser = uid is not None or gid is not None
    if helper is not None and (not asUser or (_SETPRIV is not None and _ENV is not None)):
        out = [helper, "-p", str(os.getpid())]
        if deathsig:
            out += ["-d", str(int(deathsig))]
        for which, (soft, hard) in sorted(rlimits.items()):
            out += ["-r", f"{int(which)}:{_limit(soft)}:{_limit(hard)}"]
        if umask is not None:
            out += ["-m", f"{umask:o}"]
        if cgroup is not None:
            out += ["-g", cgroup]
        if not asUser:
            if cwd is not None:
                out += ["-c", cwd]
            return out + ["--"] + list(argv)
        if cwd is not None and "=" in argv[0]:
            return None
        return out + ["--"] + _setprivArgv(uid, gid, deathsig) + _cwdArgv(cwd) + list(argv)
    if _SETPRIV is None or _ENV is None or umask is not None or cgroup is not None:
        return None
    if rlimits and _PRLIMIT is None:
        return None
    if cwd is not None and "=" in argv[0]:
        return None
    out = _setprivArgv(uid, gid, deathsig)
    if rlimits:
        out.append(_PRLIMIT)
        out += [f"--{_RLIMIT_NAMES[k]}={_limit(s)}:{_limit(h)}" for k, (s, h) in sorted(rlimits.items())]
        out.append("--")
    return out + _cwdArgv(cwd) + list(argv)


def _setprivArgv(uid: int | None, gid: int | None, deathsig: int | None) -> list[str]:
    out = [_SETPRIV]
    if deathsig:
        out += ["--pdeathsig", signal.Signals(deathsig).name[3:]]
    if uid is not None:
        out += ["--reuid", str(uid), "--init-groups"]
    if gid is not None:
        out += ["--regid", str(gid)]
    return out + ["--"]


def _cwdArgv(cwd: str | None) -> list[str]:
    return [] if cwd is None else [_ENV, "-C", cwd, "--"]


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


class InstanceProcess(_twistedcompat.ProcessBase):
    """A Twisted C{Process} whose child becomes a session leader, gets a signal from the kernel
    when Salvus dies, and takes its rlimits.

    Fast path: C{posix_spawn(setsid=True)} of the L{wrapperArgv} chain.  Fallback: fork, then the
    same work in Python in the child before exec.

    Its pipes are read up to 128 KiB at a time, as supervisord reads them (Twisted's reader
    takes 8 KiB): a flood that fills the pipe (64 KiB) costs 8x fewer reads, line splits and
    log writes.
    """

    processReaderFactory = _twistedcompat.largeReadProcessReader()

    def __init__(self, reactor, executable, args, environment, path, proto, uid=None, gid=None,
                 childFDs=None, deathsig: int | None = None,
                 rlimits: Mapping[int, tuple[int, int]] | None = None, fast: bool = True,
                 useHelper: bool = True, umask: int | None = None, redirectStderr: bool = False,
                 cgroup: str | None = None):
        self._deathsig = deathsig
        self._cgroup = cgroup
        self._rlimits = dict(rlimits or {})
        self._umask = umask
        self._redirectStderr = redirectStderr
        self._parentPid = os.getpid()
        self._wrapped = (wrapperArgv(list(args), path, uid, gid, deathsig, self._rlimits, useHelper,
                                     umask=umask, cgroup=cgroup)
                         if fast else None)
        # Born in its cgroup (clonespawn) where that is built: the helper then need not join it,
        # a migration that costs the kernel an RCU grace period (most of a respawn).
        self._cloneInto = None
        self._joiningArgv = self._wrapped
        if (cgroup is not None and self._wrapped is not None and "-g" in self._wrapped
                and clonespawn.library() is not None):
            self._cloneInto = os.path.dirname(cgroup)
            self._wrapped = wrapperArgv(list(args), path, uid, gid, deathsig, self._rlimits, useHelper,
                                        umask=umask, cgroup=None)
        if self._wrapped is not None:
            path = uid = gid = None
        # The helper closes every descriptor above 2 itself: no need to list and test ours
        # (a cost that grows with the number of instances, paid at every spawn).
        helper = spawnHelper(build=False) if useHelper else None
        self._helperCloses = self._wrapped is not None and helper is not None and self._wrapped[0] == helper
        super().__init__(reactor, executable, args, environment, path, proto, uid, gid, childFDs)

    def _fork(self, path, uid, gid, executable, args, environment, **kwargs):
        if self._redirectStderr:
            # The child's fd 2 is the write end of its stdout pipe: one stream, order kept.
            fdmap = kwargs["fdmap"]
            fdmap[2] = fdmap[1]
        super()._fork(path, uid, gid, executable, args, environment, **kwargs)

    def _trySpawnInsteadOfFork(self, path, uid, gid, executable, args, environment, kwargs):
        if self._wrapped is None:
            return False
        fdmap = kwargs.get("fdmap")
        if self._helperCloses:
            # Only the descriptors the child gets matter; marked close-on-exec so that an fd
            # kept at its own number is made inheritable (the helper closes the rest).
            fdState = [(fd, True) for fd in set(fdmap.values())]
        else:
            fdState = []
            for fd in _twistedcompat.listOpenFDs():
                try:
                    isCloseOnExec = fcntl.fcntl(fd, fcntl.F_GETFD, fcntl.FD_CLOEXEC)
                except OSError:
                    pass
                else:
                    fdState.append((fd, isCloseOnExec))
        actions = _twistedcompat.spawnFileActions(fdState, fdmap)
        if self._cloneInto is not None and _firstCloneThisTurn(_twistedcompat.processReactor(self)):
            try:
                # (Its child resets every signal: no list of the ignored ones to compute.)
                self.pid = clonespawn.spawn(self._wrapped[0], self._wrapped, environment, self._cloneInto,
                                            actions, ())
                self.status = -1
                return True
            except clonespawn.Unavailable:
                pass
        if self._cloneInto is not None:
            self._wrapped = self._joiningArgv  # the helper joins the cgroup itself
        setSigDef = _ignoredSignals(_twistedcompat.processReactor(self))
        self.pid = os.posix_spawn(
            self._wrapped[0], self._wrapped, environment,
            file_actions=actions, setsigdef=setSigDef, setsid=True,
        )
        self.status = -1
        return True

    def _execChild(self, path, uid, gid, executable, args, environment):
        # In the forked child: a new session, so the whole tree is one signalable group.
        os.setsid()
        if self._cgroup is not None and not _joinCgroup(self._cgroup, os.getpid()):
            os._exit(127)
        if self._deathsig and LINUX:
            _prctl(PR_SET_PDEATHSIG, self._deathsig)
            if os.getppid() != self._parentPid:
                # Salvus died between fork and prctl: the signal will never come.
                os._exit(1)
        for which, limits in self._rlimits.items():
            resource.setrlimit(which, limits)
        if self._umask is not None:
            os.umask(self._umask)
        super()._execChild(path, uid, gid, executable, args, environment)


_clonedThisTurn = False


def _firstCloneThisTurn(reactor) -> bool:
    """True for the first spawn of a reactor turn.  A lone spawn (a respawn) is created in its
    cgroup, sparing it a migration's RCU grace period; the rest of a burst (start 200) joins
    through the helper, where the kernel keeps migrations on its fast path and the supervisor
    does not wait for each cgroup (measured here: a burst of 200 is ~30 % slower all cloned)."""
    global _clonedThisTurn
    if _clonedThisTurn:
        return False
    try:
        reactor.callLater(0, _newTurn)
    except Exception:
        return True
    _clonedThisTurn = True
    return True


def _newTurn() -> None:
    global _clonedThisTurn
    _clonedThisTurn = False


def _joinCgroup(procs: str, pid: int) -> bool:
    try:
        with open(procs, "w") as f:
            f.write(str(pid))
        return True
    except OSError:
        return False


_devnull: int | None = None
_ignored: list[int] | None = None


def _ignoredSignals(reactor) -> list[int]:
    """Signals ignored here (reset to default in the child), computed once per reactor turn: a
    burst of 200 spawns asks 200 times."""
    global _ignored
    if _ignored is not None:
        return _ignored
    ignored = [s for s in range(1, signal.NSIG) if signal.getsignal(s) == signal.SIG_IGN]
    try:
        reactor.callLater(0, _forgetIgnored)
    except Exception:
        return ignored
    _ignored = ignored
    return ignored


def _forgetIgnored() -> None:
    global _ignored
    _ignored = None


def spawnInstance(reactor, protocol, argv: list[str], env: dict[str, str], cwd: str | None,
                  uid: int | None = None, gid: int | None = None, deathsig: int | None = None,
                  rlimits: Mapping[int, tuple[int, int]] | None = None, fast: bool = True,
                  useHelper: bool = True, umask: int | None = None, redirectStderr: bool = False,
                  stdin: bool = False, cgroup: str | None = None) -> InstanceProcess:
    """Start one instance: stdout and stderr as pipes to C{protocol} (one pipe for both with
    C{redirectStderr}), stdin from /dev/null or, with C{stdin}, a pipe the transport writes to;
    in the cgroup whose C{cgroup.procs} is C{cgroup}, if given."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    childFDs: dict[int, int | str] = {0: "w" if stdin else _devnull, 1: "r"}
    if not redirectStderr:
        childFDs[2] = "r"
    return InstanceProcess(reactor, argv[0], argv, env, cwd, protocol, uid, gid, childFDs,
                           deathsig=deathsig, rlimits=rlimits, fast=fast, useHelper=useHelper,
                           umask=umask, redirectStderr=redirectStderr, cgroup=cgroup)


# -- /proc -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """The few fields of C{/proc/PID/stat} the supervisor needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    starttime: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def readStat(pid: int) -> Stat | None:
    """The stat of one pid, or None when it does not exist (or this is not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return Stat(pid, rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]))


def readMarker(pid: int) -> str | None:
    """The value of C{SALVUS_INSTANCE} in a process's initial environment, if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = MARKER.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode("utf-8", "replace")
    return None


class Snapshot:
    """One /proc pass, indexed, plus every marker read once: shared by all instances stopped in
    one reactor turn, so stopping 200 instances costs one scan, not 200."""

    def __init__(self) -> None:
        self.table = procTable()
        self._markers: dict[str, list[int]] | None = None

    def markerIndex(self) -> dict[str, list[int]]:
        if self._markers is None:
            index: dict[str, list[int]] = {}
            for pid, st in self.table.items():
                if not st.zombie:
                    marker = readMarker(pid)
                    if marker is not None:
                        index.setdefault(marker, []).append(pid)
            self._markers = index
        return self._markers

    def members(self, leader: int | None, marker: str | None,
                known: Mapping[int, int] | None = None, extra: Iterable[int] = ()) -> dict[int, int]:
        """Like L{members}, from the indexes; C{extra}: more pids that belong (its cgroup's)."""
        seeds = [] if marker is None else list(self.markerIndex().get(marker, []))
        for pid in extra:
            if pid not in self.table:  # born after the /proc pass
                st = readStat(pid)
                if st is not None:
                    self.table[pid] = st
        return members(self.table, leader, None, known, None, extra=seeds + list(extra))


def procTable() -> dict[int, Stat]:
    """One pass over /proc: every live process's stat."""
    table: dict[int, Stat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            st = readStat(int(name))
            if st is not None:
                table[st.pid] = st
    return table


def childrenOf(pid: int) -> list[int]:
    """Direct children of C{pid} (all its threads), from C{/proc/PID/task/*/children}."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def members(table: Mapping[int, Stat], leader: int | None, marker: str | None,
            known: Mapping[int, int] | None = None,
            markerOf: Callable[[int], str | None] | None = readMarker,
            extra: Iterable[int] = ()) -> dict[int, int]:
    """Every live process that belongs to one instance: {pid: starttime}.

    Belonging means any of: the leader's session or process group, a descendant of the leader,
    a process carrying the instance's environment marker, a process recorded earlier (same start
    time, so a recycled pid never counts), or a descendant of any of those.
    """
    found: dict[int, int] = {}
    known = dict(known or {})
    for pid in extra:
        st = table.get(pid)
        if st is not None and not st.zombie:
            found[pid] = st.starttime
    for pid, st in table.items():
        if st.zombie:
            continue
        if leader is not None and (st.sid == leader or st.pgid == leader or pid == leader):
            found[pid] = st.starttime
        elif known.get(pid) in (st.starttime, 0):
            found[pid] = st.starttime
        elif markerOf is not None and marker is not None and markerOf(pid) == marker:
            found[pid] = st.starttime
    kids: dict[int, list[int]] = {}
    for pid, st in table.items():
        kids.setdefault(st.ppid, []).append(pid)
    stack = list(found)
    while stack:
        for child in kids.get(stack.pop(), ()):
            st = table[child]
            if child not in found and not st.zombie:
                found[child] = st.starttime
                stack.append(child)
    return found


def alive(pid: int, starttime: int | None = None) -> bool:
    """True when C{pid} runs (not a zombie) and, if given, started at C{starttime}."""
    st = readStat(pid)
    if st is None or st.zombie:
        return False
    return starttime is None or st.starttime == starttime


def signalMembers(found: Mapping[int, int], sig: int, groups: Iterable[int] = (),
                  signalled: Iterable[int] = ()) -> int:
    """Send C{sig} once to every process of C{groups} and of C{found}: the groups with C{killpg},
    then each member that is in none of them, if it still matches its start time.

    Once, because many programs (uvicorn, gunicorn, Celery, Node) read a second TERM or INT as
    "quit now, skip the graceful shutdown".  A member is taken to have had the group's signal when
    it was in a signalled group just before or just after the C{killpg}: a process that moves
    between groups in those microseconds is the only one that can miss it (SIGKILL after
    C{stopwaitsecs} still comes) and none can get it twice.

    @param signalled: groups that had C{sig} earlier in the same stop; their members are skipped
        (a process that joined one since, a shutdown hook's helper, is left to finish).
    @return: how many signals were delivered (one per group, one per member signalled apart).
    """
    sent = 0
    groups = [g for g in groups if g]
    before = {pid: readStat(pid) for pid in found}
    signalled = set(signalled)
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except OSError:
            continue
        sent += 1
        signalled.add(pgid)
    for pid, starttime in found.items():
        st = before[pid]
        if st is None or st.zombie or st.starttime != starttime:
            continue
        if st.pgid in signalled:
            continue
        if signalled:
            now = readStat(pid)
            if now is None or now.zombie or now.starttime != starttime or now.pgid in signalled:
                continue
        try:
            os.kill(pid, sig)
            sent += 1
        except OSError:
            pass
    return sent


class Reaper:
    """Reaps orphans re-parented to this (subreaper) process, without stealing Twisted's children.

    Twisted waits only for the pids in its own handler table; anything else that is our child is
    an adopted orphan or belongs to unrelated code (a C{subprocess} in a thread).  An orphan is
    reaped at once when it is known to belong to an instance (marker or recorded pid); any other
    zombie is reaped only when it is still a zombie on the next pass, i.e. nobody else waits for it.
    """

    def __init__(self, token: str, pid: int | None = None):
        self.token = token
        self.pid = pid if pid is not None else os.getpid()
        self.adopted: dict[int, tuple[str, int]] = {}
        # Adopted since the last takeFresh(), whoever ran the scan that found them.
        self.fresh: dict[int, tuple[str, int]] = {}
        self._zombies: set[int] = set()
        self.reaped = 0

    def takeFresh(self) -> dict[int, tuple[str, int]]:
        """Orphans adopted since the last call: {pid: (instance name, starttime)}.

        Every scan (a stop's poll, a leftover check, the periodic pass) may be the one that
        first sees an orphan; the supervisor's periodic pass hands each to its instance once.
        """
        fresh, self.fresh = self.fresh, {}
        return {p: v for p, v in fresh.items() if p in self.adopted}

    def _twisted(self, pid: int) -> bool:
        return _twistedcompat.twistedWaitsFor(pid)

    def scan(self) -> dict[int, tuple[str, int]]:
        """One pass: reap what may be reaped, remember new adopted orphans.

        @return: newly adopted orphans {pid: (instance name, starttime)}.
        """
        new: dict[int, tuple[str, int]] = {}
        zombies: set[int] = set()
        prefix = self.token + "/"
        children = childrenOf(self.pid)
        if self.adopted:
            # Forget what is no longer our child (reaped by Twisted, or never re-parented to us).
            current = set(children)
            for pid in [p for p in self.adopted if p not in current]:
                del self.adopted[pid]
        for pid in children:
            if self._twisted(pid):
                continue
            st = readStat(pid)
            if st is None:
                continue
            if st.zombie:
                if pid in self.adopted or pid in self._zombies:
                    self.reapPid(pid)
                else:
                    zombies.add(pid)
                continue
            if pid not in self.adopted:
                marker = readMarker(pid)
                if marker and marker.startswith(prefix):
                    self.adopted[pid] = (marker[len(prefix):], st.starttime)
                    new[pid] = self.fresh[pid] = self.adopted[pid]
        self._zombies = zombies
        return new

    def reapPid(self, pid: int) -> bool:
        """waitpid one pid we own (never one of Twisted's)."""
        if self._twisted(pid):
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        except OSError as e:  # pragma: no cover
            if e.errno != errno.EINTR:
                done = pid
            else:
                return False
        if done:
            self.adopted.pop(pid, None)
            self.reaped += 1
            return True
        return False


class PidRegistry:
    """The run directory's record of every process Salvus started: {instance: {pid: starttime}}.

    Written on each change so that, after Salvus is killed with SIGKILL, the next start can find
    and kill what is left, and the start time makes sure a pid the kernel has since given to an
    unrelated process is never touched.
    """

    def __init__(self, path: str):
        self.path = path
        self.entries: dict[str, dict[int, int]] = {}

    def load(self) -> dict[str, dict[int, int]]:
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except (OSError, ValueError):
            return {}
        out: dict[str, dict[int, int]] = {}
        for name, pids in raw.get("instances", {}).items():
            try:
                out[name] = {int(p): int(t) for p, t in pids.items()}
            except (TypeError, ValueError, AttributeError):
                continue
        return out

    def set(self, name: str, pids: Mapping[int, int]) -> None:
        current = self.entries.get(name, {})
        if dict(pids) == current:
            return
        if pids:
            self.entries[name] = dict(pids)
        else:
            self.entries.pop(name, None)
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        data = {"instances": {n: {str(p): t for p, t in pids.items()} for n, pids in self.entries.items()}}
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


def cleanLeftovers(registry: PidRegistry, token: str, cgroups=None) -> dict[int, int]:
    """Kill (SIGKILL) what a previous run in this run directory left behind.

    Candidates are the registry's pids whose start time still matches, any process carrying
    this run directory's marker, and everything in the run's cgroups (C{cgroups}, a
    L{salvusctl.supervisor.cgroups.CgroupTree}).  Returns the {pid: starttime} that were found.
    """
    found: dict[int, int] = {}
    recorded = registry.load()
    for pids in recorded.values():
        for pid, starttime in pids.items():
            if pid != os.getpid() and alive(pid, starttime):
                found[pid] = starttime
    prefix = token + "/"
    me = os.getpid()
    table = procTable()
    for pid, st in table.items():
        if pid == me or st.zombie or pid in found:
            continue
        marker = readMarker(pid)
        if marker and marker.startswith(prefix):
            found[pid] = st.starttime
    if cgroups is not None:
        for name in cgroups.names():
            for pid in cgroups.pids(name):
                st = table.get(pid)
                if pid != me and st is not None and not st.zombie:
                    found.setdefault(pid, st.starttime)
            cgroups.kill(name)
    signalMembers(found, signal.SIGKILL)
    registry.entries = {}
    registry.save()
    return found

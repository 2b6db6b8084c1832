"""Spawning a child directly into its cgroup (C{clone3(CLONE_INTO_CGROUP)}), from C.

Why: the spawn helper used to join the instance's cgroup by writing its pid to C{cgroup.procs}.
That migrates a running process, and the kernel serialises migrations behind a lock whose write
side waits out an RCU grace period: 5-13 ms here, most of a crash -> respawn cycle.  A child
created inside its cgroup takes no such lock (the spawn costs about 0.3 ms), and is never
outside the cgroup, not even between fork and exec.

C{clonespawn.c} is built once (C{cc -O2 -shared -fPIC}), cached beside the spawn helper by a
hash of its source and loaded with ctypes.  Where it cannot be had (no compiler, not x86-64,
a kernel before 5.7, C{clone3} refused), L{spawn} raises L{Unavailable} and the caller takes
the helper's C{cgroup.procs} path, as before.  C{SALVUS_CLONE_SPAWN=0} turns it off.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger

from salvusctl.supervisor.buildcache import cachedBuild

__all__ = ["Unavailable", "library", "build", "spawn"]

log = Logger()

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clonespawn.c")
_UNSET = object()
_lib: object = _UNSET
_building: list[Deferred] | None = None

#: clone3 errors that mean "this kernel (or its seccomp policy) will not do it": fall back for good.
_REFUSED = (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.E2BIG, errno.EOPNOTSUPP)


class Unavailable(Exception):
    """No clone3 spawn here: take the C{cgroup.procs} path."""


def _target() -> tuple[str, str | None] | None:
    """(the cached library's path, the compiler to build it with or None), or None."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if os.environ.get("SALVUS_CLONE_SPAWN") == "0" or os.environ.get("SALVUS_SPAWN_HELPER") == "0":
        return None
    return cachedBuild(_SOURCE, "salvus-clonespawn", os.path.exists, suffix=".so")


def _load(path: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    fn = lib.salvus_spawn
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library if it is built (never builds: see L{build}), else None."""
    global _lib
    if _lib is _UNSET:
        target = _target()
        if target is None:
            _lib = None
        elif target[1] is None:
            _lib = _load(target[0])
        else:
            return None  # not built yet: L{build} will
    return _lib  # type: ignore[return-value]


def build(reactor) -> Deferred:
    """Have the library built and loaded without blocking C{reactor} (a C{cc} child, once per
    machine; at once when cached).  Fires with True when clone3 spawns are available; never fails.
    Until it fires, L{spawn} raises L{Unavailable}."""
    global _lib, _building
    if library() is not None or _lib is None:
        return succeed(_lib is not None)
    target = _target()
    if target is None or target[1] is None:
        _lib = _load(target[0]) if target else None
        return succeed(_lib is not None)
    if _building is not None:
        d = Deferred()
        _building.append(d)
        return d
    waiters: list[Deferred] = []
    _building = waiters
    path, cc = target
    tmp = f"{path}.{os.getpid()}.tmp"
    d = getProcessOutputAndValue(cc, ["-O2", "-shared", "-fPIC", "-o", tmp, _SOURCE],
                                 env=dict(os.environ), reactor=reactor)

    def compiled(result) -> bool:
        global _lib
        _out, err, code = result
        if code != 0:
            log.info("spawn: cannot build {source} ({err}); instances join their cgroup after spawn",
                     source=_SOURCE, err=err.decode(errors="replace").strip()[-300:])
            _lib = None
            return False
        os.replace(tmp, path)
        _lib = _load(path)
        return _lib is not None

    def done(result) -> bool:
        global _building
        ok = bool(result)
        _building = None
        for w in waiters:
            w.callback(ok)
        return ok

    return d.addCallback(compiled).addErrback(lambda f: False).addCallback(done)


def _strings(items: Iterable[str | bytes]) -> ctypes.Array:
    encoded = [os.fsencode(s) for s in items]
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


def spawn(path: str, argv: Sequence[str], env: Mapping[str, str] | None, cgroupDir: str,
          fileActions: Iterable[tuple], setsigdef: Iterable[int]) -> int:
    """C{os.posix_spawn(path, argv, env, setsid=True, setsigdef=..., file_actions=...)}, the
    child created in the cgroup directory C{cgroupDir}.  Returns its pid.

    @param fileActions: C{os.POSIX_SPAWN_DUP2} and C{os.POSIX_SPAWN_CLOSE} tuples, as for
        C{os.posix_spawn}.
    @raise Unavailable: the library is missing or the kernel refuses C{clone3} (take the other path).
    @raise OSError: the cgroup cannot be opened or the child could not exec (it is reaped).
    """
    global _lib
    lib = library()
    if lib is None:
        raise Unavailable("clone3 spawn not built")
    actions: list[int] = []
    for action in fileActions:
        if action[0] == os.POSIX_SPAWN_DUP2:
            actions += [0, action[1], action[2]]
        elif action[0] == os.POSIX_SPAWN_CLOSE:
            actions += [1, action[1], 0]
        else:
            raise Unavailable(f"file action {action[0]} not supported")
    if env is None:
        env = os.environ
    envp = _strings(f"{k}={v}" if isinstance(k, str) else os.fsencode(k) + b"=" + os.fsencode(v)
                    for k, v in env.items())
    sigs = list(setsigdef)
    cActions = (ctypes.c_int * max(1, len(actions)))(*actions)
    cSigs = (ctypes.c_int * max(1, len(sigs)))(*sigs)
    childErr = ctypes.c_int(0)
    fd = os.open(cgroupDir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = lib.salvus_spawn(os.fsencode(path), _strings(argv), envp, fd, cActions, len(actions) // 3,
                               cSigs, len(sigs), ctypes.byref(childErr))
    finally:
        os.close(fd)
    if pid < 0:
        if -pid in _REFUSED:
            _lib = None
            log.info("spawn: clone3 into a cgroup refused ({err}); instances join their cgroup after spawn",
                     err=os.strerror(-pid))
            raise Unavailable(os.strerror(-pid))
        raise OSError(-pid, os.strerror(-pid))
    if childErr.value:
        os.waitpid(pid, 0)
        raise OSError(childErr.value, f"{os.strerror(childErr.value)}: {path!r}")
    return pid

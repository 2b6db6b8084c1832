"""A stale admin socket is replaced at start; a live one is refused with one line.

Twisted's C{unix:} listener keeps a lock file (C{PATH.lock}, a symlink naming the owner's pid)
and refuses to start when the socket exists without it, or when the lock names a live pid.
After a reboot or a crash both happen (a socket left behind, a lock whose pid now belongs to
an unrelated process), and the host would not start.  Whether the socket answers is the one
test that says someone still serves it: a connection that is refused means nobody does.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from salvusctl.errors import ConfigError

__all__ = ["SocketInUse", "checkSocketFree", "clearStaleSocket", "makeSocketDirectory"]


class SocketInUse(ConfigError):
    """The socket path is served by a running process, or is not a socket at all."""


def _lockOwner(lock: str) -> str:
    try:
        return os.readlink(lock)
    except OSError:
        return "?"


def checkSocketFree(path: str) -> bool:
    """Whether a socket file exists at C{path} that nobody serves (False: no file at all).

    @raise SocketInUse: a process accepts connections on C{path}, or C{path} is not a socket
        (the admin never deletes a file it did not make).
    """
    lock = path + ".lock"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise SocketInUse(
                f"admin socket {path} exists and is not a socket; remove it or use another path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)  # a full backlog answers EAGAIN at once instead of blocking
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                if e.errno in (errno.EAGAIN, errno.EINPROGRESS):
                    raise SocketInUse(f"admin socket {path} is served by a running process "
                                      f"(pid {_lockOwner(lock)}): stop it first")
                raise SocketInUse(f"admin socket {path}: {e.strerror}")
        else:
            raise SocketInUse(f"admin socket {path} is served by a running process "
                              f"(pid {_lockOwner(lock)}): stop it first")
        finally:
            probe.close()
    return mode is not None


def clearStaleSocket(path: str) -> bool:
    """Remove C{path} and its C{.lock} when nobody serves the socket; True if anything was removed.

    @raise SocketInUse: see L{checkSocketFree}; nothing is removed then.
    """
    lock = path + ".lock"
    exists = checkSocketFree(path)
    removed = False
    for stale in (path, lock):
        try:
            if stale == path and not exists:
                continue
            os.unlink(stale)
            removed = True
        except FileNotFoundError:
            pass
    return removed


def makeSocketDirectory(path: str) -> None:
    """Make the directories above the socket C{path} (0700) when they do not exist yet.

    A fresh host's C{unix:var/run/admin.sock} has no C{var/run} yet; the listener (and its lock
    file) would fail with a traceback.  One that cannot be made is one line naming it.

    @raise ConfigError: the directory cannot be made.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"admin socket {path}: cannot make its directory {directory}: "
                          f"{e.strerror}") from None

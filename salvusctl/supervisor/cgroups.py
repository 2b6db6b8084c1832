"""One cgroup (v2) per instance, where the host lets Salvus make them: what systemd does per unit.

A process cannot leave its cgroup on its own (only a privileged writer to C{cgroup.procs} can
move it), so an instance's cgroup holds everything it ever started: a daemon that double-forks,
calls C{setsid} and clears its environment (which defeats the process group, the session and the
C{SALVUS_INSTANCE} marker) is still listed there, and C{cgroup.kill} ends it.

The tree is C{<Salvus's own cgroup>/salvus-<token>/<instance>}: below Salvus's own, so a
container's or a systemd unit's limits keep applying.  Where cgroup v2 is not mounted or not
writable (a cgroup v1 host, an unprivileged container), L{CgroupTree.probe} says why and the
supervisor falls back to the process group, session, marker and subreaper.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["CgroupTree", "cgroup2Mount", "ownCgroup"]


def cgroup2Mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (C{/sys/fs/cgroup}, or C{/sys/fs/cgroup/unified}
    on a hybrid host), or None."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if sep and right.split()[:1] == ["cgroup2"]:
            return left.split()[4].replace("\\040", " ")
    return None


def ownCgroup(pid: int | str = "self") -> str | None:
    """This process's path in the v2 hierarchy (the C{0::} line of C{/proc/PID/cgroup})."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


class CgroupTree:
    """The instances' cgroups under one directory: C{base/<instance>} (C{:} becomes C{-})."""

    def __init__(self, base: str):
        self.base = base

    @classmethod
    def probe(cls, token: str) -> tuple[CgroupTree | None, str]:
        """(the tree, a sentence for the log) when Salvus may make cgroups here; else (None, why)."""
        mount = cgroup2Mount()
        if mount is None:
            return None, "no cgroup v2 hierarchy is mounted"
        own = ownCgroup()
        if own is None:
            return None, "this process is in no cgroup v2"
        parent = os.path.join(mount, own.lstrip("/"))
        base = os.path.join(parent, f"salvus-{token}")
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as e:
            return None, f"cannot create a cgroup under {parent}: {e.strerror}"
        if not os.path.exists(os.path.join(base, "cgroup.procs")):
            return None, f"{parent} is not a cgroup v2 directory"
        # Moving a process needs write access to cgroup.procs (here and at the common ancestor).
        if not os.access(os.path.join(parent, "cgroup.procs"), os.W_OK):
            cls(base).removeAll()
            return None, f"cannot move processes between cgroups under {parent}"
        return cls(base), f"each instance in its own cgroup under {base}"

    def path(self, name: str) -> str:
        return os.path.join(self.base, name.replace(":", "-"))

    def prepare(self, name: str) -> str:
        """Make the instance's cgroup if need be; the C{cgroup.procs} file its process joins by."""
        path = self.path(name)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            # The base went (an operator's cleanup): make it again rather than fail the spawn.
            os.makedirs(path, exist_ok=True)
        return os.path.join(path, "cgroup.procs")

    def pids(self, name: str) -> list[int]:
        """Every process in the instance's cgroup (none when it does not exist)."""
        return _readPids(os.path.join(self.path(name), "cgroup.procs"))

    def names(self) -> list[str]:
        """The cgroup directories under the base (instances of this or a previous run)."""
        try:
            return sorted(e.name for e in os.scandir(self.base) if e.is_dir())
        except OSError:
            return []

    def kill(self, name: str) -> int:
        """SIGKILL everything in the instance's cgroup, at once (C{cgroup.kill}, Linux 5.14), else
        pid by pid; how many processes were in it."""
        path = self.path(name)
        found = self._pidsAt(path)
        if not found:
            return 0
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
            return len(found)
        except OSError:
            pass
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return len(found)

    def _pidsAt(self, path: str) -> list[int]:
        return _readPids(os.path.join(path, "cgroup.procs"))

    def remove(self, name: str) -> bool:
        """Remove the instance's cgroup when it is empty; True when it is gone."""
        try:
            os.rmdir(self.path(name))
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            return False

    def removeAll(self) -> bool:
        """Remove every empty instance cgroup, then the base; True when the base is gone."""
        for name in self.names():
            self.remove(name)
        try:
            os.rmdir(self.base)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False


def _readPids(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []

"""A fake operating system for driving the supervisor under a C{Clock} in tests (yours and ours).

C{FakeOS} stands in for L{salvusctl.supervisor.process.ProcessOS}: spawns are recorded, pids are
invented, and the test decides when a process exits (C{exit}) or whether it obeys signals.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from zope.interface import implementer

from salvusctl.supervisor.process import IProcessOS

__all__ = ["FakeOS", "FakeTransport", "Spawned"]


@dataclass
class Spawned:
    """What one spawn was asked to run."""

    pid: int
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    uid: int | None
    gid: int | None
    deathsig: int | None
    rlimits: dict
    protocol: Any = None
    signals: list[int] = field(default_factory=list)
    umask: int | None = None
    redirectStderr: bool = False
    stdin: bool = False
    written: list[bytes] = field(default_factory=list)


class FakeTransport:
    def __init__(self, pid: int, record: Spawned | None = None):
        self.pid = pid
        self.record = record

    def writeToChild(self, fd: int, data: bytes) -> None:
        """What the instance wrote to the process's stdin is kept in C{Spawned.written}."""
        if self.record is not None and fd == 0:
            self.record.written.append(data)


@implementer(IProcessOS)
class FakeOS:
    """Processes that exist only in a dict.

    @ivar obey: when True, a process that receives a signal exits (on the next C{Clock} turn);
        pids in C{stubborn} ignore everything but SIGKILL.
    """

    def __init__(self, reactor, obey: bool = True):
        self.reactor = reactor
        self.obey = obey
        self.stubborn: set[int] = set()
        self.live: dict[int, Spawned] = {}
        self.spawned: list[Spawned] = []
        self.signals: list[tuple[tuple[int, ...], int]] = []
        self.failSpawn: Exception | None = None
        self._next = 1000

    def spawn(self, protocol, argv, env, cwd, uid, gid, deathsig, rlimits, umask=None,
              redirectStderr=False, stdin=False, name=None):
        if self.failSpawn is not None:
            raise self.failSpawn
        self._next += 1
        record = Spawned(self._next, list(argv), dict(env), cwd, uid, gid, deathsig, dict(rlimits), protocol,
                         umask=umask, redirectStderr=redirectStderr, stdin=stdin)
        self.live[record.pid] = record
        self.spawned.append(record)
        transport = FakeTransport(record.pid, record)
        protocol.makeConnection(transport)
        return transport

    def exit(self, pid: int, code: int | None = 0, sig: int | None = None) -> None:
        """Make process C{pid} exit with C{code} (or die of C{sig})."""
        record = self.live.pop(pid)
        if code == 0 and sig is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=code, signal=sig))
        record.protocol.processExited(reason)
        record.protocol.processEnded(reason)

    def output(self, pid: int, data: bytes, fd: int = 1) -> None:
        self.live[pid].protocol.childDataReceived(fd, data)

    def latest(self) -> Spawned:
        return self.spawned[-1]

    # -- the ProcessOS surface -------------------------------------------------------------------

    def members(self, leader, marker, known):
        pids = {p for p in [leader, *dict(known)] if p in self.live}
        return {p: 1 for p in pids}

    def leftovers(self, leader, marker, known):
        return {p: 1 for p in dict(known) if p != leader and p in self.live}

    def signal(self, found, sig, groups=(), signalled=()):
        pids = tuple(sorted(set(dict(found)) | set(groups)))
        self.signals.append((pids, sig))
        for pid in pids:
            record = self.live.get(pid)
            if record is None:
                continue
            record.signals.append(sig)
            if self.obey and (sig == _signal.SIGKILL or pid not in self.stubborn):
                self.reactor.callLater(0, self._die, pid, sig)

    def _die(self, pid: int, sig: int) -> None:
        if pid in self.live:
            self.exit(pid, None, sig)

    def killAll(self, marker):
        """The fake has no cgroups."""
        return 0

    def alive(self, pid, starttime):
        return pid in self.live

    def reap(self):
        pass

    def starttime(self, pid):
        return 1

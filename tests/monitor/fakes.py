"""Fakes for the monitor's and the alerts' tests, each checked against its interface."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail, maybeDeferred, succeed

from salvusctl.store.sqlite import SQLiteStore
from salvusctl.supervisor.testing import FakeSupervisor as PublicFakeSupervisor

__all__ = ["FakeSupervisor", "SyncSQLiteStore", "FakeSampler", "inline"]


def inline(fn, *args, **kwargs):
    """The monitor's C{run}: blocking work done at once (tests drive time with a Clock)."""
    return maybeDeferred(fn, *args, **kwargs)


class FakeSupervisor(PublicFakeSupervisor):
    """The public fake supervisor (it passes the real supervisor's contract suite), starting
    empty: the test adds instances (C{add}) and moves them between states (C{setState})."""

    def __init__(self):
        super().__init__({}, running=False)

    def add(self, name, state="RUNNING", pid=1000, port=None, **extra):
        return self.addInstance(name, state, pid, port, **extra)


class SyncSQLiteStore(SQLiteStore):
    """The real SQLite store's SQL, run synchronously on the calling thread.

    C{down = True} makes every call fail like an unreachable database, to test buffering.
    """

    def __init__(self, reactor, path=":memory:"):
        super().__init__(reactor, path)
        self.down = False
        self.interactions = 0

    def start(self):
        self._openAndMigrate()
        self.running = True
        self._pool = object()
        return succeed(None)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._pool = None
        return succeed(None)

    def _call(self, fn, *args, **kwargs):
        if self.down:
            return fail(ConnectionError("database unreachable"))
        return maybeDeferred(fn, *args, **kwargs)

    def runInteraction(self, fn, *args, **kwargs):
        self.interactions += 1
        return super().runInteraction(fn, *args, **kwargs)

    def _open(self):
        super()._open()
        self._conn.execute("PRAGMA journal_mode = MEMORY")

    def rows(self, sql, args=()):
        return self._conn.execute(sql, args).fetchall()


def processSample(pid, now, cpu=1.0, rss=1000, threads=1, fds=3, children=0):
    procs = [
        dict(pid=pid + i, ppid=pid if i else 1, name="w", cpu_percent=cpu, mem_percent=0.1,
             cputime=1.0, walltime=5.0, vms=2 * rss, rss=rss, threads=threads, fds=fds,
             status="sleeping")
        for i in range(children + 1)
    ]
    return dict(
        pid=pid, timestamp=now, cpu_percent=cpu * len(procs), mem_percent=0.1 * len(procs),
        rss=rss * len(procs), vms=2 * rss * len(procs), cputime=1.0 * len(procs), walltime=5.0,
        threads=threads * len(procs), fds=fds * len(procs), status="sleeping",
        nprocs=len(procs), processes=procs,
    )


def hostSample(now, cpu=10.0, available=4 << 30, mounts=None, deploys=None):
    return dict(
        timestamp=now, load1=0.5, load5=0.4, load15=0.3, cpu_percent=cpu, cpu_count=2,
        mem_total=8 << 30, mem_free=available // 2, mem_available=available, swap_total=0,
        swap_used=0,
        mounts=mounts if mounts is not None else [
            dict(mountpoint="/", device="/dev/sda1", fstype="ext4", total=100, used=50, free=50,
                 percent=50.0)
        ],
        deploys=deploys or [],
    )


class FakeSampler:
    """Returns the per-instance samples the test sets; unknown running pids get a default sample.

    C{overrides[name]} is a dict of sample fields (cpu, rss, threads, fds, children) or None
    (the process has vanished); C{host} holds host sample fields; C{raiseNext} makes one call fail.
    """

    def __init__(self):
        self.overrides: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        self.calls = []
        self.raiseNext = None

    def sample(self, targets, now, deployDirs=None):
        self.calls.append((list(targets), now, deployDirs))
        if self.raiseNext is not None:
            error, self.raiseNext = self.raiseNext, None
            raise error
        instances = {}
        for name, pid in targets:
            spec = self.overrides.get(name, {})
            instances[name] = None if spec is None else processSample(pid, now, **spec)
        deploys = [dict(deploy=d, path=p, bytes=1234) for d, p in sorted((deployDirs or {}).items())]
        return {"instances": instances, "host": hostSample(now, deploys=deploys, **self.host)}


def tempDir(testcase) -> str:
    """A fresh directory removed when the test ends (trial's mktemp() would leave it under the
    working directory when run by pytest)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="salvus-monitor-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path

"""The monitor service: samples every supervised instance and the host, keeps the latest sample in
memory, and writes samples to the store in one transaction per tick.

Sampling reads C{/proc} through psutil, which blocks, so it runs on a dedicated one-thread pool
(injectable: tests run it inline).  The looping call never stops on an error: each tick logs its
failure and the next tick runs.  Store writes are decoupled from sampling: a tick appends rows to a
bounded buffer and starts a flush if none is running, so a slow or unreachable store never delays
sampling, alerts or the in-memory latest status.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.interfaces import IMonitor
from salvusctl.monitor import queries
from salvusctl.monitor.logs import LogWriter
from salvusctl.monitor.retention import DEFAULT_RETENTION, RetentionPolicy, applyRetention
from salvusctl.monitor.schema import MONITOR_MIGRATIONS
from salvusctl.monitor.sqlbatch import insertMany
from salvusctl.store.errors import StoreError

__all__ = ["MonitorService", "RUNNING_STATES", "EXIT_STATES"]

log = Logger()

# Supervisor states in which an instance has a live process worth sampling.
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "STOPPING"})
# States that end an instance's life: its services row is marked not running.
EXIT_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "BACKOFF", "UNKNOWN"})

_STATUS_INSERT = (
    "INSERT INTO status (service_id, timestamp, load, percent_mem, percent_cpu, cputime, walltime,"
    " virtual_size, resident_size, threads, fds, state, nprocs)"
)
_PROCESS_INSERT = (
    "INSERT INTO process_status (service_id, timestamp, pid, ppid, name, percent_cpu, percent_mem,"
    " cputime, walltime, virtual_size, resident_size, threads, fds, state)"
)
_HOST_INSERT = (
    "INSERT INTO host_status (host, timestamp, load1, load5, load15, percent_cpu, mem_total,"
    " mem_free, mem_available, swap_total, swap_used)"
)
_DISK_INSERT = (
    "INSERT INTO disk_status (host, timestamp, kind, name, path, total, used, free, percent)"
)


@dataclass(eq=False)
class _Instance:
    """One life of one instance (a start to an exit): one C{services} row."""

    name: str
    group: str
    pid: int | None
    port: int | None
    started_at: float
    service_id: int | None = None
    exited: bool = False
    exit_written: bool = False
    exited_at: float | None = None
    start_in_flight: bool = False
    start_write: Deferred | None = None
    user: str | None = None


@dataclass
class _Buffered:
    """A row waiting for the store; C{instance} supplies the service id once it is known."""

    kind: str
    row: tuple
    instance: _Instance | None = None


@dataclass
class _Outage:
    dropped: int = 0
    first_dropped_at: float | None = None
    failing_since: float | None = None
    reason: str = ""


@implementer(IMonitor)
class MonitorService(Service):
    """Samples, remembers, stores and answers queries about instances and the host.

    @param reactor: clock and thread delivery (a L{Clock} in tests, with C{run} given).
    @param store: an L{IStore}; the monitor's migrations are added to it on construction.
    @param supervisor: an L{ISupervisor} or None (host samples only).
    @param interval: seconds between samples.
    @param disk_interval: seconds between deploy-directory size walks (slower than process reads).
    @param buffer_rows: most rows held while the store is unreachable; beyond it the oldest go.
    @param deploy_dirs: {deploy: directory} to size, in addition to each instance info's
        C{directory}.
    @param sampler: object with C{sample(targets, now, deployDirs)} (default: the psutil one).
    @param run: C{run(fn, *args)} -> Deferred running blocking work off the reactor thread
        (default: a dedicated one-thread pool).
    @param publisher: optional object with C{publish(host, latest)} (the memcached writer).
    @param retention: {table: L{RetentionPolicy}}; C{retention_interval} seconds between runs.
    @param retention_start_delay: seconds after start of the first run (a host restarted more
        often than C{retention_interval} still prunes).
    @param retention_batch: most rows a run deletes per table and rule; a run that reached it
        is followed by another C{retention_start_delay} later until the backlog is gone.
    @param deploys: the deploys whose instances are sampled (None: every deploy).
    @param mounts: sample the host's mount usage (the default sampler's C{mounts}).

    L{reconfigure} changes the settings of a running monitor (a host reload).
    """

    name = "monitor"

    def __init__(
        self,
        reactor,
        store,
        supervisor=None,
        host_name: str | None = None,
        interval: float = 5.0,
        disk_interval: float = 60.0,
        buffer_rows: int = 100_000,
        deploy_dirs: Mapping[str, str] | None = None,
        sampler=None,
        run: Callable[..., Deferred] | None = None,
        publisher=None,
        retention: Mapping[str, RetentionPolicy] | None = None,
        retention_interval: float = 3600.0,
        retention_start_delay: float = 10.0,
        retention_batch: int = 10_000,
        address: str | None = None,
        user: str | None = None,
        deploys: Iterable[str] | None = None,
        mounts: bool = True,
        synchronous_commit: bool = False,
    ):
        if interval <= 0:
            raise ValueError(f"monitor interval must be > 0 seconds, not {interval!r}")
        if buffer_rows < 1:
            raise ValueError(f"monitor buffer_rows must be >= 1, not {buffer_rows!r}")
        self._reactor = reactor
        self._store = store
        self._supervisor = supervisor
        self.host_name = host_name or os.uname().nodename
        self.interval = interval
        self.disk_interval = disk_interval
        self.buffer_rows = buffer_rows
        self._deployDirs = dict(deploy_dirs or {})
        if sampler is None:
            from salvusctl.monitor.sampler import Sampler

            sampler = Sampler(mounts=mounts)
        self._sampler = sampler
        self.deploys = None if deploys is None else frozenset(deploys)
        self.mounts = mounts
        #: On PostgreSQL, wait for each tick's commit to reach the server's disk (see _writeBatch).
        self.synchronous_commit = synchronous_commit
        self._run = run
        self._pool = None
        self._publisher = publisher
        self.retention = dict(DEFAULT_RETENTION if retention is None else retention)
        self.retention_interval = retention_interval
        self.retention_start_delay = retention_start_delay
        self.retention_batch = retention_batch
        self._retentionSoon = None
        self.address = address
        self.user = user
        self._logs = LogWriter(store, self.host_name, reactor)
        store.addMigrations("monitor", MONITOR_MIGRATIONS)

        self._current: dict[str, _Instance] = {}
        self._exits: list[_Instance] = []
        self._starts: dict[str, deque[float]] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        self._host: dict[str, Any] | None = None
        self._buffer: deque[_Buffered] = deque()
        self._outage = _Outage()
        self._flushing: Deferred | None = None
        self._lastDiskWalk: float | None = None
        self._loop: LoopingCall | None = None
        self._sampling: Deferred | None = None
        self._retentionLoop: LoopingCall | None = None
        self._observers: list[Callable[[dict[str, Any]], Any]] = []
        self._logsSinceFlush = 0
        self.ticks = 0
        self.flushes = 0
        #: Rows dropped because the buffer was full, since the monitor was made (the
        #: C{salvus_monitor_dropped_rows} metric); each outage's own count is logged when it ends.
        self.dropped_rows = 0
        #: Seconds C{stopService} waits for the last flush.
        self.stop_timeout = 5.0

    # -- lifecycle -------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._run is None:
            from twisted.internet.threads import deferToThreadPool
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(1, 1, name="salvus-monitor")
            self._pool.start()
            pool = self._pool
            self._runner = lambda fn, *a, **kw: deferToThreadPool(self._reactor, pool, fn, *a, **kw)
        else:
            self._runner = self._run
        if self._supervisor is not None:
            self._supervisor.addObserver(self.instanceChanged)
            for info in self._supervisor.instanceInfos():
                if info.get("state") in RUNNING_STATES and info.get("pid"):
                    self._started(info)
        if self._publisher is not None and hasattr(self._publisher, "start"):
            self._publisher.start()
        self._startSampling(now=True)
        self._startRetention()
        if self.retention:
            self._scheduleRetention()

    def _startSampling(self, now: bool) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()  # a tick in flight finishes; the old loop schedules no other
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.interval, now=now)

    def _startRetention(self) -> None:
        if self._retentionLoop is not None and self._retentionLoop.running:
            self._retentionLoop.stop()
        self._retentionLoop = None
        if self.retention and self.retention_interval:
            self._retentionLoop = LoopingCall(self._retentionTick)
            self._retentionLoop.clock = self._reactor
            self._retentionLoop.start(self.retention_interval, now=False)

    def _scheduleRetention(self) -> None:
        """One run C{retention_start_delay} from now, besides the loop (at start, and while a
        backlog remains): soon after the store is open, before start-up work has settled."""
        if self._retentionSoon is None or not self._retentionSoon.active():
            self._retentionSoon = self._reactor.callLater(self.retention_start_delay,
                                                          self._retentionTick)

    def _cancelRetentionSoon(self) -> None:
        if self._retentionSoon is not None and self._retentionSoon.active():
            self._retentionSoon.cancel()
        self._retentionSoon = None

    #: What L{reconfigure} may change on a running monitor.
    LIVE_SETTINGS = ("interval", "disk_interval", "buffer_rows", "deploy_dirs", "retention",
                     "retention_interval", "deploys", "mounts", "synchronous_commit")

    def reconfigure(self, **settings: Any) -> list[str]:
        """Apply new settings to the running monitor (a host reload); returns the names changed.

        Checked first, so a bad value (ValueError) changes nothing.  A new C{interval} or
        C{retention_interval} restarts that looping call on the injected clock: the next sample
        comes one new interval after the reload (a tick in flight finishes first), and buffered
        rows stay buffered.  A lower C{buffer_rows} drops the oldest rows beyond it, as the bound
        always does; new C{deploy_dirs} are walked at the next tick.
        """
        unknown = set(settings) - set(self.LIVE_SETTINGS)
        if unknown:
            raise ValueError(f"the monitor cannot change {sorted(unknown)} while it runs")
        if "deploys" in settings and settings["deploys"] is not None:
            settings["deploys"] = frozenset(settings["deploys"])
        if "deploy_dirs" in settings:
            settings["deploy_dirs"] = dict(settings["deploy_dirs"] or {})
        if "retention" in settings:
            settings["retention"] = dict(settings["retention"] or {})
        changed = [name for name in self.LIVE_SETTINGS
                   if name in settings and settings[name] != self._setting(name)]
        interval = settings.get("interval", self.interval)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"monitor interval must be > 0 seconds, not {interval!r}")
        rows = settings.get("buffer_rows", self.buffer_rows)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"monitor buffer_rows must be >= 1, not {rows!r}")
        had_retention = bool(self.retention)
        for name in changed:
            log.info("monitor: {name} {old!r} -> {new!r}", name=name, old=self._setting(name),
                     new=settings[name])
            if name == "deploy_dirs":
                self._deployDirs = settings[name]
                self._lastDiskWalk = None
            else:
                setattr(self, name, settings[name])
        if "mounts" in changed and hasattr(self._sampler, "mounts"):
            self._sampler.mounts = self.mounts
        if "buffer_rows" in changed:
            self._trim()
        if self.running and "interval" in changed:
            self._startSampling(now=False)
        if self.running and ("retention_interval" in changed or had_retention != bool(self.retention)):
            self._startRetention()  # new policies alone take effect at the next run
        return changed

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._supervisor is not None:
            self._supervisor.removeObserver(self.instanceChanged)
        for loop in (self._loop, self._retentionLoop):
            if loop is not None and loop.running:
                loop.stop()
        self._cancelRetentionSoon()
        # The supervisor stops after the monitor: the repeats it is still counting are handed
        # over now, so the last write below stores their counts.
        flushRepeats = getattr(self._supervisor, "flushRepeats", None)
        if flushRepeats is not None:
            try:
                flushRepeats()
            except Exception:
                log.failure("monitor: the supervisor's repeated lines could not be flushed")
        # One last write of what is buffered (the store closes after the monitor stops), but a
        # store that is down must not hold the host's shutdown for ever.
        if self._flushing is not None:
            yield self._atMost(self._flushing, self.stop_timeout)
        yield self._atMost(self.flush(), self.stop_timeout)
        if self._publisher is not None and hasattr(self._publisher, "stop"):
            yield maybeDeferred(self._publisher.stop)
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _atMost(self, d: Deferred, seconds: float) -> Deferred:
        """Fires when C{d} does or after C{seconds}, whichever is first (C{d} is left running)."""
        waiter: Deferred = Deferred()

        def fire(_=None):
            if not waiter.called:
                waiter.callback(None)

        timer = self._reactor.callLater(seconds, fire)

        def done(result):
            if timer.active():
                timer.cancel()
            fire()
            return result

        d.addBoth(done)
        return waiter

    # -- supervisor events -----------------------------------------------------------------------

    def instanceChanged(self, name: str, old: Any, new: Any, info: Mapping[str, Any]) -> None:
        """The supervisor observer: a start opens a services row, an exit closes it.

        The supervisor passes L{ProcessState} members (int codes with a C{.name}), and also calls
        observers on readiness changes (C{info["event"]} C{'ready'}/C{'unready'}): states are
        compared by name, so an exit closes its row whichever the caller passes.
        """
        if info.get("event", "state") != "state":
            return
        old, new = getattr(old, "name", old), getattr(new, "name", new)
        try:
            if new == "RUNNING":
                self._started(info)
            elif new in EXIT_STATES:
                self._exited(name, info)
            if name in self._latest:
                self._latest[name]["state"] = new
        except Exception:
            log.failure("monitor: handling {name} {old} -> {new} failed", name=name, old=old, new=new)

    def _started(self, info: Mapping[str, Any]) -> None:
        name = info["name"]
        pid = info.get("pid")
        current = self._current.get(name)
        if current is not None and current.pid == pid and not current.exited:
            return
        if current is not None and not current.exited:
            self._exited(name, info)
        now = self._reactor.seconds()
        record = _Instance(
            name=name,
            group=info.get("group") or name.split(":")[0],
            pid=pid,
            port=info.get("port"),
            started_at=now,
            user=info.get("user") or self.user,
        )
        self._current[name] = record
        self._starts.setdefault(name, deque(maxlen=50)).append(now)
        self._writeStart(record)

    def _exited(self, name: str, info: Mapping[str, Any]) -> None:
        record = self._current.pop(name, None)
        if record is None or record.exited:
            return
        record.exited = True
        record.exited_at = self._reactor.seconds()
        self._exits.append(record)
        self._flushSoon()

    def _writeStart(self, record: _Instance) -> None:
        """Write the services row now (store.recordServiceStart); retried by the next flush."""
        if record.start_in_flight or record.service_id is not None:
            return
        record.start_in_flight = True
        d = record.start_write = maybeDeferred(
            self._store.recordServiceStart,
            record.group,
            record.name,
            self.address,
            record.port,
            record.user,
            record.pid,
            os.getpid(),
            self.host_name,
        )

        def done(service_id):
            record.service_id = service_id
            record.start_in_flight = False
            if record.exited:
                self._flushSoon()

        def failed(failure):
            record.start_in_flight = False
            self._storeFailed(failure)

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: setattr(record, "start_write", None))

    # -- sampling --------------------------------------------------------------------------------

    def _setting(self, name: str) -> Any:
        return self._deployDirs if name == "deploy_dirs" else getattr(self, name)

    def _tick(self) -> Deferred:
        # The LoopingCall waits on this Deferred, which never fails: a failing tick is logged and
        # the next one runs on schedule.
        d = maybeDeferred(self.sampleOnce)

        def failed(failure):
            log.failure("monitor: sampling failed; next try in {interval}s", failure,
                        interval=self.interval)

        return d.addErrback(failed)

    @inlineCallbacks
    def sampleOnce(self):
        """Take one sample of everything (what each tick does); fires with the snapshot."""
        infos = list(self._supervisor.instanceInfos()) if self._supervisor is not None else []
        for info in infos:
            if info.get("state") == "RUNNING" and info.get("pid"):
                self._started(info)
        targets = [
            (info["name"], info["pid"])
            for info in infos
            if info.get("state") in RUNNING_STATES and info.get("pid") and self._sampled(info)
        ]
        now = self._reactor.seconds()
        dirs = None
        if self._lastDiskWalk is None or now - self._lastDiskWalk >= self.disk_interval:
            dirs = dict(self._deployDirs)
            for info in infos:
                directory = info.get("directory")
                group = info.get("group") or info["name"].split(":")[0]
                if directory and group not in dirs:
                    dirs[group] = directory
            self._lastDiskWalk = now
        result = yield self._runner(self._sampler.sample, targets, now, dirs)
        snapshot = self._absorb(infos, result, now)
        self.ticks += 1
        self._flushSoon()
        return snapshot

    def _sampled(self, info: Mapping[str, Any]) -> bool:
        """Whether this instance's deploy is one the monitor samples."""
        if self.deploys is None:
            return True
        return (info.get("group") or info["name"].split(":")[0]) in self.deploys

    def _absorb(self, infos: Iterable[Mapping[str, Any]], result: Mapping[str, Any], now: float):
        host = dict(result["host"])
        if not host.get("deploys") and self._host is not None:
            # Directory sizes are walked on a slower interval: carry the last walk forward.
            host["deploys"] = self._host.get("deploys", [])
        self._host = host
        samples = result["instances"]
        latest: dict[str, dict[str, Any]] = {}
        for info in infos:
            name = info["name"]
            entry = dict(self._latest.get(name, {}))
            entry.update(
                name=name,
                group=info.get("group") or name.split(":")[0],
                state=info.get("state"),
                pid=info.get("pid"),
                port=info.get("port"),
                starts=list(self._starts.get(name, ())),
            )
            sample = samples.get(name)
            record = self._current.get(name)
            if sample is not None:
                entry.update(sample)
                entry["sampled_at"] = now
                if record is not None:
                    self._bufferInstance(record, sample, host)
            latest[name] = entry
        self._latest = latest
        self._bufferHost(host, now)
        snapshot = {"timestamp": now, "host": host, "instances": latest}
        if self._publisher is not None:
            try:
                self._publisher.publish(self.host_name, snapshot)
            except Exception:
                log.failure("monitor: publishing the latest status failed")
        for observer in list(self._observers):
            try:
                observer(snapshot)
            except Exception:
                log.failure("monitor: sample observer {observer!r} failed", observer=observer)
        return snapshot

    def _bufferInstance(self, record: _Instance, s: Mapping[str, Any], host: Mapping[str, Any]):
        ts = s["timestamp"]
        self._append(
            _Buffered(
                "status",
                (ts, host.get("load1"), s["mem_percent"], s["cpu_percent"], s["cputime"],
                 s["walltime"], s["vms"], s["rss"], s["threads"], s["fds"], s["status"],
                 s["nprocs"]),
                record,
            )
        )
        for p in s.get("processes", ()):
            self._append(
                _Buffered(
                    "process",
                    (ts, p["pid"], p["ppid"], p["name"], p["cpu_percent"], p["mem_percent"],
                     p["cputime"], p["walltime"], p["vms"], p["rss"], p["threads"], p["fds"],
                     p["status"]),
                    record,
                )
            )

    def _bufferHost(self, h: Mapping[str, Any], now: float) -> None:
        self._append(
            _Buffered(
                "host",
                (self.host_name, now, h["load1"], h["load5"], h["load15"], h["cpu_percent"],
                 h["mem_total"], h["mem_free"], h["mem_available"], h["swap_total"],
                 h["swap_used"]),
            )
        )
        for m in h.get("mounts", ()):
            self._append(
                _Buffered(
                    "disk",
                    (self.host_name, now, "mount", m["mountpoint"], m["device"], m["total"],
                     m["used"], m["free"], m["percent"]),
                )
            )
        for d in h.get("deploys", ()):
            if d.get("bytes") is not None and d.get("walked_at") is None:
                d["walked_at"] = now
                self._append(
                    _Buffered(
                        "disk",
                        (self.host_name, now, "deploy", d["deploy"], d["path"], None, d["bytes"],
                         None, None),
                    )
                )

    # -- the bounded buffer and the flush --------------------------------------------------------

    def _append(self, item: _Buffered) -> None:
        self._buffer.append(item)
        self._trim()

    def _trim(self) -> None:
        while len(self._buffer) > self.buffer_rows:
            dropped = self._buffer.popleft()
            outage = self._outage
            self.dropped_rows += 1
            if outage.dropped == 0:
                outage.first_dropped_at = dropped.row[0] if dropped.kind in ("status", "process") \
                    else dropped.row[1]
                # PostgreSQL queues writes during an outage instead of failing them, so the
                # flush hangs and no failure marks the outage: dropping does, so that the next
                # successful flush says the store is back and this outage's count starts afresh.
                if outage.failing_since is None:
                    outage.failing_since = self._reactor.seconds()
                log.warn(
                    "monitor: store unreachable and the sample buffer is full ({limit} rows):"
                    " dropping the oldest samples until the store is back",
                    limit=self.buffer_rows,
                )
            outage.dropped += 1

    def bufferedRows(self) -> int:
        """Rows waiting for the store (for the admin and tests)."""
        return len(self._buffer)

    def storeLogLine(self, line: Any) -> None:
        """The same hook for the supervisor's C{LogLine} objects (C{instance, stream, level, text,
        time})."""
        self.logLine(line.instance, line.stream, line.level, line.text, line.time)

    def logLine(self, name: str, stream: str, level: str, text: str, received_time: float) -> None:
        """The supervisor's per-line hook: buffer one deploy log line for the store.

        Debug lines are not stored.  Lines are written with the next flush (each tick, or sooner
        when many arrive).
        """
        if (level or "").lower() == "debug":
            return
        row = self._logs.row(name, stream, level, text, received_time)
        self._append(_Buffered("log", row))
        self._logsSinceFlush += 1
        if self._logsSinceFlush >= 1000:
            self._logsSinceFlush = 0
            self._flushSoon()

    def _flushSoon(self) -> None:
        if self._flushing is None and self.running:
            self._reactor.callLater(0, self.flush)

    def flush(self) -> Deferred:
        """Write every buffered row (and pending starts/exits) now: one transaction.

        Fires when done (never fails: a failed write leaves the rows buffered).
        """
        if self._flushing is not None:
            return self._flushing
        d = self._flushing = maybeDeferred(self._flush)

        def done(result):
            self._flushing = None
            return result

        d.addBoth(done)
        return d

    @inlineCallbacks
    def _flush(self):
        for record in list(self._current.values()) + self._exits:
            if record.service_id is None and not record.start_in_flight:
                self._writeStart(record)
        # Samples of an instance whose services row is being written wait for its id.
        starting = [r.start_write for r in list(self._current.values()) + self._exits
                    if r.start_write is not None]
        if starting:
            yield DeferredList(starting, consumeErrors=True)
        exits = [r for r in self._exits if r.service_id is not None]
        batch = [b for b in self._buffer if b.instance is None or b.instance.service_id is not None]
        if not batch and not exits:
            return 0
        keep = [b for b in self._buffer if not (b.instance is None or b.instance.service_id is not None)]
        self._buffer = deque(keep)
        now = self._reactor.seconds()
        try:
            yield self._store.runInteraction(self._writeBatch, batch, exits, now)
        except Exception as e:
            # Put them back in front of what arrived meanwhile; the bound still applies.
            self._buffer = deque(batch + list(self._buffer))
            self._trim()
            self._storeFailed(e)
            return 0
        for record in exits:
            record.exit_written = True
        self._exits = [r for r in self._exits if not r.exit_written]
        self.flushes += 1
        outage = self._outage
        if outage.failing_since is not None:
            log.info(
                "monitor: store is back after {seconds:.0f}s: wrote {rows} buffered rows,"
                " {dropped} dropped while it was away",
                seconds=max(0.0, self._reactor.seconds() - outage.failing_since),
                rows=len(batch),
                dropped=outage.dropped,
            )
            self._outage = _Outage()
            if self._buffer:
                # What was buffered while this write waited goes now, before the next tick
                # pushes the full buffer past its bound.
                self._reactor.callLater(0, self._flushSoon)
        return len(batch)

    def _storeFailed(self, error) -> None:
        outage = self._outage
        reason = getattr(error, "getErrorMessage", lambda: str(error))()
        if outage.failing_since is None:
            outage.failing_since = self._reactor.seconds()
            log.warn(
                "monitor: cannot write to the store ({reason}); buffering up to {limit} rows",
                reason=reason,
                limit=self.buffer_rows,
            )
        outage.reason = reason

    @inlineCallbacks
    def _writeBatch(self, cursor, batch: list[_Buffered], exits: list[_Instance], now: float):
        relaxed = self._store.sql.relaxedCommit
        if relaxed is not None and not self.synchronous_commit:
            # Samples are replaceable: a server crash may lose the last fraction of a second of
            # them, in exchange for not waiting on the WAL flush at every tick's commit
            # (Monitor(synchronous_commit=True) waits; docs/store.md, "Durability").
            yield cursor.execute(relaxed)
        status, process, host, disk, logs = [], [], [], [], []
        for item in batch:
            if item.kind == "status":
                status.append((item.instance.service_id, *item.row))
            elif item.kind == "process":
                process.append((item.instance.service_id, *item.row))
            elif item.kind == "host":
                host.append(item.row)
            elif item.kind == "disk":
                disk.append(item.row)
            elif item.kind == "log":
                logs.append(item.row)
        for sql, rows in ((_STATUS_INSERT, status), (_PROCESS_INSERT, process),
                          (_HOST_INSERT, host), (_DISK_INSERT, disk)):
            # Idempotent: the store replays a write whose acknowledgement was lost, and each of
            # these rows has a unique key per tick (schema.TICK_KEYS), so the replay adds nothing.
            yield insertMany(cursor, self._store.sql, sql, rows, suffix=" ON CONFLICT DO NOTHING")
        if logs:
            yield self._logs.insert(cursor, logs, now)
        for record in exits:
            yield cursor.execute(
                "UPDATE services SET running = ?, stopped_at = ? WHERE id = ?",
                (False, record.exited_at, record.service_id),
            )
        return len(batch)

    # -- retention -------------------------------------------------------------------------------

    def _retentionTick(self) -> Deferred:
        self._retentionSoon = None
        d = self.runRetention(batch=self.retention_batch)

        def more(removed):
            if self.running and self.retention and any(
                    n >= self.retention_batch for n in removed.values()):
                self._scheduleRetention()  # the rest of the backlog, one batch at a time

        def failed(failure):
            if failure.check(ConnectionError, StoreError):
                # The store is away: the outage is logged by the flush; retry at the next run.
                log.warn("monitor: retention skipped, the store is away ({reason})",
                         reason=failure.getErrorMessage())
            else:
                log.failure("monitor: retention failed", failure)

        d.addCallback(more)
        d.addErrback(failed)
        return d

    def runRetention(self, now: float | None = None, batch: int | None = None) -> Deferred:
        """Apply the retention policies now (also runs C{retention_start_delay} after start and
        every C{retention_interval} seconds, in batches of C{retention_batch} rows).

        Fires with {table: rows or partitions removed}.
        """
        when = self._reactor.seconds() if now is None else now
        d = self._store.runInteraction(applyRetention, self._store.sql, self.retention, when,
                                       batch)

        def logged(removed):
            if any(removed.values()):
                log.info("monitor: retention removed {removed}", removed=removed)
            self._logs.forgetPartitions()
            return removed

        return d.addCallback(logged)

    # -- observers and queries -------------------------------------------------------------------

    def addSampleObserver(self, observer: Callable[[dict[str, Any]], Any]) -> None:
        """Call C{observer(snapshot)} after each tick (the alerts engine listens here)."""
        self._observers.append(observer)

    def removeSampleObserver(self, observer: Callable[[dict[str, Any]], Any]) -> None:
        self._observers.remove(observer)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest sample of every instance, from memory: {name: dict}."""
        return {name: dict(entry) for name, entry in self._latest.items()}

    def latestHost(self) -> dict[str, Any] | None:
        """The latest host sample (load, cpu, memory, swap, mounts, deploy sizes)."""
        return None if self._host is None else dict(self._host)

    def leastLoaded(self, deploy: str) -> str | None:
        """The RUNNING instance of C{deploy} with the lowest cpu % (then rss); None if none."""
        candidates = [
            e for e in self._latest.values() if e.get("group") == deploy and e.get("state") == "RUNNING"
        ]
        if not candidates:
            return None

        def load(entry):
            cpu = entry.get("cpu_percent")
            return (float("inf") if cpu is None else cpu, entry.get("rss") or 0, entry["name"])

        return min(candidates, key=load)["name"]

    def history(self, name: str, since: float, until: float | None = None) -> Deferred:
        """Samples of one instance (all its lives on this host) between two times, oldest first."""
        return queries.history(self._store, self.host_name, name, since, until)

    def instanceHistory(self, name: str, since: float | None = None, until: float | None = None):
        """The lifetime of one instance: its starts and exits (services rows) and its samples."""
        return queries.lifetime(self._store, self.host_name, name, since, until)

    def runningInstances(self) -> Deferred:
        """Running instances with their last stored sample (C{sample}), from the store (every host)."""
        return queries.runningWithStatus(self._store)

    def searchLogs(self, **criteria) -> Deferred:
        """Deploy log lines by deploy, instance, level, time range and text (see L{LogWriter})."""
        return self._logs.search(**criteria)

    def hostHistory(self, since: float, until: float | None = None) -> Deferred:
        """Host samples of this host between two times, oldest first."""
        return queries.hostHistory(self._store, self.host_name, since, until)

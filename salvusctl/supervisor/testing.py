"""Fakes for driving and for imitating the supervisor in tests (yours and ours).

C{FakeOS} stands in for L{salvusctl.supervisor.process.ProcessOS} under the real supervisor:
spawns are recorded, pids are invented, and the test decides when a process exits (C{exit}) or
whether it obeys signals.

C{FakeSupervisor} stands in for the whole L{salvusctl.supervisor.service.SupervisorService}
(no processes): the admin's and users' tests use it.  C{tests/supervisor/test_contract.py} runs
one suite against it and against the real supervisor over real child processes, so it answers
the same infos, observer calls and errors.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from salvusctl.interfaces import ISupervisor
from salvusctl.supervisor.capabilities import ILogClearing
from salvusctl.supervisor.deploy import signalNumber
from salvusctl.supervisor.describe import describe
from salvusctl.supervisor.names import legacyIndex, processNames
from salvusctl.supervisor.notify import abstractName
from salvusctl.supervisor.process import INotifyChannel, IProcessOS, StartRefused
from salvusctl.supervisor.states import ProcessState

__all__ = ["FakeOS", "FakeNotifyChannel", "FakeTransport", "Spawned", "FakeSupervisor",
           "SupervisorVerbsMixin", "STATES"]


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
        self.adoptions: dict[int, tuple[str, int]] = {}
        #: environment markers and parents of processes the fake knows beyond its own
        self.markers: dict[int, str] = {}
        self.parents: dict[int, int] = {}
        self.notifyChannel: FakeNotifyChannel | None = None
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

    # No cgroups, no subreaper, no /proc: a start time is known at once.
    cgroups = None
    batchStarttimes = False

    def prepare(self, token, registry, useCgroups, subreaper):
        """Nothing was left by a predecessor."""
        return {}

    def release(self, subreaper):
        pass

    def busyCgroups(self):
        return None

    def adopted(self):
        """The orphans a test made adoptable with L{adopt}, once."""
        fresh, self.adoptions = self.adoptions, {}
        return fresh

    def adopt(self, pid: int, instance: str, starttime: int = 1) -> None:
        """Make C{pid} an orphan of C{instance} that the supervisor's next reaper pass adopts."""
        self.adoptions[pid] = (instance, starttime)

    def openNotify(self, name, deliver):
        self.notifyChannel = FakeNotifyChannel("@" + abstractName(name), deliver)
        return self.notifyChannel

    def notify(self, pid: int, fields: dict[str, str]) -> None:
        """Deliver a C{NOTIFY_SOCKET} datagram from C{pid}, as the real socket does."""
        if self.notifyChannel is None or self.notifyChannel.closed:
            raise RuntimeError("no NOTIFY_SOCKET is open (no instance with ready='notify' started)")
        self.notifyChannel.deliver(pid, dict(fields))

    def marker(self, pid):
        return self.markers.get(pid)

    def parent(self, pid):
        return self.parents.get(pid)


@implementer(INotifyChannel)
class FakeNotifyChannel:
    """The fake's C{NOTIFY_SOCKET}: L{FakeOS.notify} delivers through it."""

    def __init__(self, address: str, deliver):
        self.address = address
        self.deliver = deliver
        self.closed = False

    def close(self) -> None:
        self.closed = True


# supervisord's process state codes, by name (L{ProcessState} has the same numbers)
STATES = {
    "STOPPED": 0,
    "STARTING": 10,
    "RUNNING": 20,
    "BACKOFF": 30,
    "STOPPING": 40,
    "EXITED": 100,
    "FATAL": 200,
    "UNKNOWN": 1000,
}


class _Instance:
    def __init__(self, name: str, group: str, port: int | None, index: int = 0):
        self.name = name
        self.group = group
        self.index = index
        self.state = "STOPPED"
        self.pid = 0
        self.start = 0.0
        self.stop = 0.0
        self.exitstatus = 0
        self.spawnerr = ""
        self.port = port
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.signals: list[int] = []
        self.restarts = 0
        self.stopped = False  # has stopped at least once ("Stopped", not "Not started")
        self.extra: dict[str, Any] = {}  # more info keys a test gave (addInstance)


@implementer(ISupervisor, ILogClearing)
class SupervisorVerbsMixin:
    """The ISupervisor verbs that follow from the basic ones, for fakes of the supervisor.

    A fake that implements start/stop per instance and deploy gets rolling restarts, groups,
    log following, before-stop hooks and reload from here, so no fake drifts from the interface.
    """

    @defer.inlineCallbacks
    def restartDeploy(self, name: str, batch: int | None = 1):
        names = [i["name"] for i in self.instanceInfos() if i.get("group") == name]
        if not names:
            raise KeyError(name)
        step = len(names) if not batch else batch
        for i in range(0, len(names), step):
            chunk = names[i:i + step]
            for hook in list(getattr(self, "_beforeStopHooks", [])):
                for n in chunk:
                    yield defer.maybeDeferred(hook, n, self.instanceInfo(n))
            yield defer.gatherResults([defer.maybeDeferred(self.stopInstance, n) for n in chunk],
                                      consumeErrors=True)
            yield defer.gatherResults([defer.maybeDeferred(self.startInstance, n) for n in chunk],
                                      consumeErrors=True)

    def startGroup(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self.startDeploy, name)

    def stopGroup(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self.stopDeploy, name)

    def followLog(self, name: str, callback: Callable, stream: str = "stdout") -> Callable:
        """Call C{callback(LogLine)} for each line emitted from now on, as the real supervisor
        pushes them; returns the function that stops following."""
        self.tailLog(name, 0, stream)  # an unknown name raises KeyError, as the real one does
        followers = self.__dict__.setdefault("_logFollowers", {}).setdefault((name, stream), [])
        followers.append(callback)

        def stop():
            if callback in followers:
                followers.remove(callback)

        return stop

    def _pushLine(self, name: str, stream: str, text: str) -> None:
        from salvusctl.supervisor.logs import LogLine

        clock = getattr(self, "clock", None)
        line = LogLine(clock.seconds() if clock is not None else 0.0, name, stream, "info", text)
        for callback in list(self.__dict__.get("_logFollowers", {}).get((name, stream), [])):
            callback(line)

    def addBeforeStop(self, hook: Callable) -> None:
        self._beforeStopHooks = [*getattr(self, "_beforeStopHooks", []), hook]

    def removeBeforeStop(self, hook: Callable) -> None:
        self._beforeStopHooks = [h for h in getattr(self, "_beforeStopHooks", []) if h is not hook]

    def reload(self, deploys: Any) -> defer.Deferred:
        self.reloaded = list(deploys)
        return defer.succeed(None)


class FakeSupervisor(SupervisorVerbsMixin):
    """A supervisor without processes: instances change state when asked, at once by default.

    @param deploys: deploy name -> number of instances (C{deploy:0} … C{deploy:N-1}).
    @param clock: gives times (C{seconds()}); with C{stop_delay}, drives the STOPPING phase.
    @param stop_delay: seconds an instance spends STOPPING (0: stops at once).
    @param running: start every instance in the constructor.
    @param ports: deploy name -> the port of its first instance (the next ones count up, as a
        deploy's C{port=} does); by default every instance gets the next port from 8000.
    """

    def __init__(
        self,
        deploys: dict[str, int] | None = None,
        clock: Any = None,
        stop_delay: float = 0.0,
        running: bool = True,
        ports: dict[str, int] | None = None,
    ):
        self.clock = clock if clock is not None else Clock()
        self.stop_delay = stop_delay
        self.ports = dict(ports or {})
        self._instances: dict[str, _Instance] = {}
        self._observers: list[Callable] = []
        self._nextPid = 4000
        self.failures: dict[str, str] = {}
        for deploy, count in dict(deploys if deploys is not None else {"web": 2, "worker": 1}).items():
            self._addDeploy(deploy, count)
        if running:
            for name in list(self._instances):
                self._start(name)

    def _addDeploy(self, deploy: str, count: int) -> None:
        for i, name in enumerate(processNames(deploy, count)):
            port = self.ports[deploy] + i if deploy in self.ports else 8000 + len(self._instances)
            self._instances[name] = _Instance(name, deploy, port, i)

    # -- test helpers ----------------------------------------------------------------------------

    def addInstance(self, name: str, state: str = "RUNNING", pid: int | None = None,
                    port: int | None = None, **info: Any) -> dict[str, Any]:
        """Add one instance C{deploy:N} in C{state} (no observer is called); C{info}: more keys
        of its info dict (C{directory}, C{user} …).  Returns its info."""
        deploy, index = _deployOf(name)
        inst = self._instances[name] = _Instance(name, deploy, port, index)
        inst.extra = dict(info)
        inst.state = state
        if state in ("STARTING", "RUNNING", "STOPPING"):
            if pid is None:
                self._nextPid += 1
                pid = self._nextPid
            inst.pid, inst.start = pid, self.clock.seconds()
        return self._info(inst)

    def setState(self, name: str, state: str, pid: int | None = None) -> None:
        """Move an instance to C{state} by hand (a crash, an exit, a restart under pid C{pid}),
        calling the observers as the real supervisor does."""
        inst = self._get(name)
        if pid is not None:
            inst.pid, inst.start = pid, self.clock.seconds()
        elif state not in ("STARTING", "RUNNING", "STOPPING"):
            inst.pid = 0
            inst.stop = self.clock.seconds()
            inst.stopped = True
        self._set(inst, state)

    def emit(self, name: str, line: str, stream: str = "stdout") -> None:
        """Append a line to an instance's captured output (and push it to its followers)."""
        getattr(self._get(name), stream).append(line)
        self._pushLine(name, stream, line)

    def failNextStart(self, name: str, reason: str) -> None:
        """Make the next start of C{name} fail (FATAL with C{reason})."""
        self.failures[name] = reason

    def signals(self, name: str) -> list[int]:
        """Signals sent to C{name} so far."""
        return list(self._get(name).signals)

    # -- ISupervisor -----------------------------------------------------------------------------

    def _get(self, name: str) -> _Instance:
        try:
            return self._instances[name]
        except KeyError:
            pass
        legacy = legacyIndex(name)  # the older spelling, as the real supervisor accepts it
        for inst in self._instances.values():
            if legacy is not None and (inst.group, inst.index) == legacy:
                return inst
        raise KeyError(f"no instance {name!r}")

    def _info(self, inst: _Instance) -> dict[str, Any]:
        now = self.clock.seconds()
        description = describe(inst.state, inst.name, inst.pid, inst.start, inst.stop, now, inst.spawnerr,
                               started=inst.stopped or bool(inst.start))
        return {
            "name": inst.name,
            "deploy": inst.group,
            "group": inst.group,
            "state": inst.state,
            "statecode": STATES[inst.state],
            "statename": inst.state,
            "pid": inst.pid,
            "start": int(inst.start),
            "stop": int(inst.stop),
            "now": int(now),
            "exitstatus": inst.exitstatus,
            "spawnerr": inst.spawnerr,
            "description": description,
            "port": inst.port,
            "ready": inst.state == "RUNNING",
            "reason": inst.spawnerr if inst.state == "FATAL" else "",
            "restart_reason": "",
            "status": "",
            "restarts": inst.restarts,
            "members": [inst.pid] if inst.pid else [],
            "logfile": "",
            "stdout_logfile": "",
            "stderr_logfile": "",
            **inst.extra,
        }

    def instanceInfos(self) -> list[dict[str, Any]]:
        """In start order, as the real supervisor: by deploy name (the fake has no priorities)."""
        return [self._info(i) for i in sorted(self._instances.values(), key=_startOrder)]

    def groups(self) -> dict[str, list[str]]:
        """{group: [deploy names]} (a fake deploy is its own group)."""
        out: dict[str, list[str]] = {}
        for inst in sorted(self._instances.values(), key=_startOrder):
            names = out.setdefault(inst.group, [])
            if inst.group not in names:
                names.append(inst.group)
        return out

    def instanceInfo(self, name: str) -> dict[str, Any]:
        return self._info(self._get(name))

    def _set(self, inst: _Instance, state: str) -> None:
        old, inst.state = inst.state, state
        info = dict(self._info(inst), event="state")
        for observer in list(self._observers):
            # the real supervisor passes ProcessState members (int codes with a .name)
            observer(inst.name, ProcessState[old], ProcessState[state], info)

    def _start(self, name: str) -> defer.Deferred:
        inst = self._get(name)
        if inst.state in ("RUNNING", "STARTING"):
            return defer.succeed(None)
        self._set(inst, "STARTING")
        reason = self.failures.pop(name, None)
        if reason is not None:
            inst.spawnerr = reason
            inst.pid = 0
            self._set(inst, "FATAL")
            return defer.fail(RuntimeError(reason))
        self._nextPid += 1
        inst.pid = self._nextPid
        inst.start = self.clock.seconds()
        inst.spawnerr = ""
        self._set(inst, "RUNNING")
        return defer.succeed(None)

    def startInstance(self, name: str) -> defer.Deferred:
        inst = self._get(name)
        if inst.state == "STOPPING":
            return defer.fail(StartRefused(f"{name} is stopping"))
        return self._start(name)

    def stopInstance(self, name: str) -> defer.Deferred:
        inst = self._get(name)
        if inst.state not in ("RUNNING", "STARTING", "BACKOFF"):
            return defer.succeed(None)
        self._set(inst, "STOPPING")

        def stopped():
            inst.stdout.append(f"{name} stopped")
            inst.pid = 0
            inst.stop = self.clock.seconds()
            inst.stopped = True
            self._set(inst, "STOPPED")

        if self.stop_delay:
            return defer.Deferred.fromCoroutine(self._later(stopped))
        stopped()
        return defer.succeed(None)

    async def _later(self, fn: Callable[[], None]) -> None:
        d: defer.Deferred = defer.Deferred()
        self.clock.callLater(self.stop_delay, d.callback, None)
        await d
        fn()

    @defer.inlineCallbacks
    def restartInstance(self, name: str):
        inst = self._get(name)
        for hook in list(getattr(self, "_beforeStopHooks", [])):
            if inst.state == "RUNNING":
                yield defer.maybeDeferred(hook, name, self.instanceInfo(name))
        yield self.stopInstance(name)
        inst.restarts += 1
        yield self.startInstance(name)

    def _names(self, deploy: str) -> list[str]:
        names = [n for n, i in self._instances.items() if i.group == deploy]
        if not names:
            raise KeyError(f"no deploy {deploy!r}")
        return names

    def startDeploy(self, name: str) -> defer.Deferred:
        return defer.gatherResults([self.startInstance(n) for n in self._names(name)], consumeErrors=True)

    def stopDeploy(self, name: str) -> defer.Deferred:
        return defer.gatherResults([self.stopInstance(n) for n in self._names(name)], consumeErrors=True)

    def startAll(self, everything: bool = False) -> defer.Deferred:
        return defer.gatherResults([self.startInstance(n) for n in self._instances], consumeErrors=True)

    def stopAll(self) -> defer.Deferred:
        return defer.gatherResults(
            [self.stopInstance(n) for n in reversed(self._instances)], consumeErrors=True
        )

    def signalInstance(self, name: str, signal: int | str) -> None:
        inst = self._get(name)
        number = signalNumber(signal)
        if inst.state not in ("STARTING", "RUNNING", "STOPPING") or not inst.pid:
            raise StartRefused(f"{name} is not running ({inst.state})")
        inst.signals.append(number)

    def tailLog(self, name: str, lines: int = 100, stream: str = "stdout") -> list[str]:
        inst = self._get(name)
        return list(getattr(inst, stream)[-lines:]) if lines > 0 else []

    def addObserver(self, observer: Callable) -> None:
        self._observers.append(observer)

    def removeObserver(self, observer: Callable) -> None:
        self._observers.remove(observer)


    # -- ILogClearing -------------------------------------------------------------------------

    def clearLogs(self, name: str) -> None:
        inst = self._get(name)
        inst.stdout.clear()
        inst.stderr.clear()


def _startOrder(inst: _Instance) -> tuple[str, int]:
    return inst.group, inst.index


def _deployOf(name: str) -> tuple[str, int]:
    """(deploy, index) of an instance name a test gives: C{web}, C{web_01} or C{web:1}."""
    legacy = legacyIndex(name)
    if legacy is not None:
        return legacy
    stem, sep, num = name.rpartition("_")
    if sep and stem and num.isdigit():
        return stem, int(num)
    return name, 0


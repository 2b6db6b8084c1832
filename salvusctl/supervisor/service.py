"""The supervisor service: every instance of every deploy, their order, limits, hooks and reloads.

What it adds to the per-instance machine of L{salvusctl.supervisor.process}: dependency order
(start a deploy when what it depends on is ready, stop it after what depends on it has stopped),
limits on simultaneous processes, rolling restarts with before-stop hooks (the balancer drains
there), reloads that touch only what changed, the reaper of adopted orphans and the pid registry
that lets the next run clean up after a SIGKILL.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal as _signal
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from salvusctl.errors import ConfigError
from salvusctl.interfaces import ISupervisor
from salvusctl.supervisor import oscalls
from salvusctl.supervisor.capabilities import ILogClearing, IMainLog, IProcessStdin
from salvusctl.supervisor.deploy import Deploy, signalNumber, validateDeploys
from salvusctl.supervisor.eventlistener import EventHub
from salvusctl.supervisor.logs import InstanceLog, LogLine
from salvusctl.supervisor.mainlog import MainLog, stateEvent
from salvusctl.supervisor.names import legacyIndex
from salvusctl.supervisor.process import (
    KILL_GRACE,
    STOP_POLL,
    IInstanceOwner,
    INotifyChannel,
    Instance,
    ProcessOS,
    StartRefused,
)
from salvusctl.supervisor.states import RUNNING_STATES, ProcessState

__all__ = ["SupervisorService", "DependencyFailed", "RollFailed", "StartRefused"]

log = Logger()
S = ProcessState

Observer = Callable[[str, ProcessState, ProcessState, dict], Any]
BeforeStop = Callable[[str, dict], Any]


class DependencyFailed(Exception):
    """A deploy was not started because a deploy it depends on could not be made ready."""


class RollFailed(Exception):
    """A rolling restart stopped: a new instance could not be made ready."""


@implementer(ISupervisor, ILogClearing, IProcessStdin, IMainLog, IInstanceOwner)
class SupervisorService(Service):
    """Runs the instances of a set of L{Deploy} declarations.

    @param reactor: everything timed goes through it (a C{Clock} plus a fake C{os} in tests).
    @param runDir: per-instance run directories, the pid registry and the lock live here.
    @param maxProcesses: at most this many instances alive at once, all deploys together.
    @param storeHook: called with each L{LogLine} a deploy's C{store_level} lets through.
    @param os: the operating-system facade (default: the real one, L{ProcessOS}).
    @param prober: C{prober(instance) -> Deferred[bool]} replacing the built-in tcp/command probes.
    @param drainTimeout: how long before-stop hooks may take before the stop goes ahead anyway.
    @param fastSpawn: spawn through C{posix_spawn} and small exec'd tools (default) rather than
        a fork of this process (both set the session, parent-death signal and rlimits).
    @param spawnHelper: on the fast path, build (once, cached) and use the static C helper.
    @param cgroups: put each instance in its own cgroup (v2) where the host lets Salvus make
        them (L{salvusctl.supervisor.cgroups}); the start log says which mechanism is used.
    """

    name = "supervisor"
    #: C{SALVUS_CLIENTS_SOCKET} of every instance spawned from now on (set by the cluster's
    #: clients hub, L{salvusctl.cluster.clienthub}); None: not set.
    clientsSocket: str | None = None

    def __init__(self, reactor, deploys: Sequence[Deploy], runDir: str, logDir: str | None = None,
                 maxProcesses: int | None = None, storeHook: Callable[[LogLine], Any] | None = None,
                 os: Any = None, prober: Callable[[Instance], Any] | None = None, hostName: str = "",
                 reapInterval: float = 1.0, drainTimeout: float = 30.0, subreaper: bool = True,
                 inheritEnv: bool = True, fastSpawn: bool = True, spawnHelper: bool = True,
                 cgroups: bool = True):
        self.reactor = reactor
        self.runDir = _abspath(runDir)
        self.logDir = _abspath(logDir) if logDir else _join(self.runDir, "logs")
        self.maxProcesses = maxProcesses
        self.storeHook = storeHook
        self.mainLog = MainLog(self.logDir, reactor.seconds, storeHook)
        self.hostName = hostName
        self.reapInterval = reapInterval
        self.drainTimeout = drainTimeout
        self.subreaper = subreaper
        self.inheritEnv = inheritEnv
        self.useCgroups = cgroups
        self.token = hashlib.sha1(self.runDir.encode()).hexdigest()[:12]
        self.reaper = oscalls.Reaper(self.token)
        if os is None:
            os = ProcessOS(reactor, self.reaper, fast=fastSpawn, helper=spawnHelper)
        self.os = os
        self.prober = prober
        self.registry = oscalls.PidRegistry(_join(self.runDir, "pids.json"))
        self.deploys: dict[str, Deploy] = {}
        self.instances: dict[str, Instance] = {}
        self._warnedNames: set[str] = set()
        # Instances in a RUNNING_STATES state, by deploy name and in all: the limits are checked
        # at every start, and counting them there would make starting n instances O(n^2).
        self._live: dict[str, int] = {}
        self._liveTotal = 0
        self.observers: list[Observer] = []
        # deploy name -> how many followers (balanced groups) asked for its changes to roll
        self._rolling: dict[str, int] = {}
        self.beforeStopHooks: list[BeforeStop] = []
        self.leftoversKilled: dict[int, int] = {}
        self._deployStarts: dict[str, list[Deferred]] = {}
        self._reapLoop: LoopingCall | None = None
        self._lockFile = None
        self._saveCall = None
        self._lastSave = -1e9
        self._pendingStarttimes: list[tuple[Instance, int]] = []
        self._notify: INotifyChannel | None = None
        self.ready: Deferred | None = None
        # supervisord's events and listener pools; serverURL is the admin socket children are
        # told of (SUPERVISOR_SERVER_URL), set by the admin when it listens on a unix socket.
        self.eventHub = EventHub(self)
        self.serverURL: str | None = None
        validateDeploys(list(deploys))
        for deploy in deploys:
            self._addDeploy(deploy)

    # -- building instances --------------------------------------------------------------------

    def _addDeploy(self, deploy: Deploy) -> None:
        newGroup = all(d.groupName != deploy.groupName for d in self.deploys.values())
        self.deploys[deploy.name] = deploy
        self.eventHub.deployAdded(deploy)
        self._addInstances(deploy)
        if newGroup and self.running:
            self.eventHub.groupAdded(deploy.groupName)

    def _addInstances(self, deploy: Deploy) -> list[Instance]:
        """Create the deploy's instances that do not exist yet."""
        made = []
        for index, name in enumerate(deploy.instanceNames()):
            if name in self.instances:
                continue
            self.instances[name] = instance = self._makeInstance(deploy, index, self._portFor(deploy, index))
            made.append(instance)
        return made

    def _makeInstance(self, deploy: Deploy, index: int, port: int | None) -> Instance:
        name = deploy.instanceName(index)
        instanceLog = InstanceLog(
            name, self.logDir, self.reactor.seconds, fileLevel=deploy.log_level,
            storeLevel=deploy.store_level, maxBytes=deploy.log_max_bytes, backups=deploy.log_backups,
            rotateSeconds=deploy.log_rotate_seconds, storeHook=self.storeHook,
            repeatWindow=deploy.store_repeat_window, tailBytes=deploy.log_tail_bytes,
            callLater=self.reactor.callLater,
            onHookError=lambda e, name=name: log.error("{name}: log hook failed: {e!r}", name=name, e=e),
        )
        return Instance(self, deploy, index, port, instanceLog)

    def _replaceInstance(self, instance: Instance, deploy: Deploy) -> Instance:
        """Put an instance of C{deploy}'s new declaration in the place of a stopped one (same
        name, and the same port when the port is C{auto}: the balancer finds it where it was)."""
        port = self._portFor(deploy, instance.index)
        self._forgetLive(instance)
        instance.shutdown()
        self.registry.set(instance.name, {})
        self.instances[instance.name] = fresh = self._makeInstance(deploy, instance.index, port)
        return fresh

    def _portFor(self, deploy: Deploy, index: int) -> int | None:
        if deploy.port is None:
            return None
        if deploy.port == "auto":
            old = self.instances.get(deploy.instanceName(index))
            if old is not None and old.port is not None:
                return old.port
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]
            finally:
                s.close()
        return int(deploy.port) + index

    def _removeDeploy(self, name: str) -> None:
        deploy = self.deploys.pop(name)
        for iname in deploy.instanceNames():
            instance = self.instances.pop(iname, None)
            if instance is not None:
                self._forgetLive(instance)
                instance.shutdown()
                self.registry.set(iname, {})
        self.eventHub.deployRemoved(deploy)
        if self.running and all(d.groupName != deploy.groupName for d in self.deploys.values()):
            self.eventHub.groupRemoved(deploy.groupName)

    # -- service -------------------------------------------------------------------------------

    def startService(self) -> None:
        """Take the run directory, clean up after a killed predecessor, start autostart deploys."""
        _makedirs(self.runDir)
        _makedirs(self.logDir)
        self._lock()
        self.leftoversKilled = self.os.prepare(self.token, self.registry, self.useCgroups, self.subreaper)
        if self.leftoversKilled:
            log.warn("killed {n} processes left by a previous run: {pids}",
                     n=len(self.leftoversKilled), pids=sorted(self.leftoversKilled))
        Service.startService(self)
        if self.reapInterval:
            self._reapLoop = LoopingCall(self.reapPass)
            self._reapLoop.clock = self.reactor
            self._reapLoop.start(self.reapInterval, now=False).addErrback(
                lambda f: log.failure("reaper stopped", f))
        self.eventHub.started()
        for group in self.groups():
            self.eventHub.groupAdded(group)
        self.ready = self.startAll()
        self.ready.addErrback(lambda f: log.warn("not every deploy started: {why}", why=f.getErrorMessage()))

    def stopService(self) -> Deferred:
        """Stop every instance in reverse dependency order and wait for them (no process left)."""
        self.eventHub.stopping()
        Service.stopService(self)
        d = self.stopAll()

        def stopped(result):
            if self._reapLoop is not None and self._reapLoop.running:
                self._reapLoop.stop()
            self.os.reap()
            for instance in self.instances.values():
                instance.shutdown()
            return self._cgroupsEmptied().addCallback(lambda _: result)

        def done(result):
            self._saveRegistry()
            self.mainLog.close()
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            self._unlock()
            self.os.release(self.subreaper)
            return result

        d.addBoth(stopped)
        d.addBoth(done)
        return d

    def _cgroupsEmptied(self) -> Deferred:
        """Fires once every instance cgroup is empty (what C{cgroup.kill} ended has exited), or
        after L{KILL_GRACE} seconds, saying which still hold processes."""
        if self.os.busyCgroups() is None:
            return succeed(None)
        deadline = self.reactor.seconds() + KILL_GRACE
        done: Deferred = Deferred()

        def poll():
            busy = self.os.busyCgroups() or []
            if not busy or self.reactor.seconds() >= deadline:
                if busy:
                    log.error("cgroups {names} still hold processes after SIGKILL", names=busy)
                done.callback(None)
                return
            for name in busy:
                self.os.killAll(name)  # a bare instance name is a marker without its token
            self.os.reap()
            self.reactor.callLater(STOP_POLL, poll)

        poll()
        return done

    def _lock(self) -> None:
        path = _join(self.runDir, "supervisor.lock")
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise ConfigError(f"run directory {self.runDir} is in use by another Salvus")
            raise
        self._lockFile = f

    def _unlock(self) -> None:
        if self._lockFile is not None:
            self._lockFile.close()
            self._lockFile = None

    def reapPass(self) -> None:
        """Reap exited orphans and give each adopted process to its instance (every
        C{reapInterval} seconds; a test calls it to run one pass now)."""
        try:
            for pid, (iname, starttime) in self.os.adopted().items():
                instance = self.instances.get(iname)
                if instance is None:
                    continue
                if instance.state not in (S.STARTING, S.RUNNING, S.STOPPING):
                    # Its process is gone (a daemon it forked reached us late): stop it now,
                    # not at the next stop of the instance (FATAL may never see one).
                    instance.adoptLeftovers({pid: starttime})
                elif pid not in instance.members:
                    instance.members[pid] = starttime
                    self.membersChanged(instance)
        except Exception:
            log.failure("reaper pass failed")

    # -- callbacks from instances -----------------------------------------------------------------

    def stateChanged(self, instance: Instance, old: ProcessState, new: ProcessState) -> None:
        wasLive, isLive = old in RUNNING_STATES, new in RUNNING_STATES
        if wasLive != isLive and self.instances.get(instance.name) is instance:
            step = 1 if isLive else -1
            deploy = instance.deploy.name
            self._live[deploy] = self._live.get(deploy, 0) + step
            self._liveTotal += step
        self.eventHub.stateChanged(instance, old, new)
        info = instance.info()
        event = stateEvent(instance.name, old, new, info, instance.deploy.stopsignal)
        if event is not None:
            self.mainLog.write(event[0], event[1], instance.name)
        if not self.observers:
            return
        info["event"] = "state"
        for observer in list(self.observers):
            try:
                observer(instance.name, old, new, info)
            except Exception:
                log.failure("observer {o!r} failed", o=observer)

    def _forgetLive(self, instance: Instance) -> None:
        """An instance leaves the table: it no longer counts against the limits."""
        if instance.state in RUNNING_STATES:
            deploy = instance.deploy.name
            self._live[deploy] = self._live.get(deploy, 0) - 1
            self._liveTotal -= 1

    def readyChanged(self, instance: Instance) -> None:
        if not self.observers:
            return
        info = instance.info()
        info["event"] = "ready" if instance.ready else "unready"
        for observer in list(self.observers):
            try:
                observer(instance.name, instance.state, instance.state, info)
            except Exception:
                log.failure("observer {o!r} failed", o=observer)

    def membersChanged(self, instance: Instance) -> None:
        tracked = instance.tracked()
        if self.registry.entries.get(instance.name, {}) == tracked:
            return
        if tracked:
            self.registry.entries[instance.name] = dict(tracked)
        else:
            self.registry.entries.pop(instance.name, None)
        if self._saveCall is None:
            # At most one write a second: a crash loop must not turn into a disk loop.  The env
            # marker finds anything spawned since the last write.
            delay = max(0.0, self._lastSave + 1.0 - self.reactor.seconds())
            self._saveCall = self.reactor.callLater(delay, self._saveRegistry)

    def leaderStarttime(self, instance: Instance) -> int:
        """The start time of an instance's just-spawned leader (what tells it from a recycled pid).

        On the real OS it is read after the spawns of this reactor turn, not between them: a burst
        of starts reaches its last spawn (and so its last RUNNING) sooner, and the children have
        finished their exec by then.  0 meanwhile means "not known", as when it cannot be read.
        """
        if not self.os.batchStarttimes:
            return self.os.starttime(instance.pid)
        if not self._pendingStarttimes:
            self.reactor.callLater(0, self._readStarttimes)
        self._pendingStarttimes.append((instance, instance.pid))
        return 0

    def _readStarttimes(self) -> None:
        pending, self._pendingStarttimes = self._pendingStarttimes, []
        for instance, pid in pending:
            # Only while the leader is still this instance's and not reaped (its pid not reusable).
            protocol = instance._protocol
            if (instance.pid != pid or instance.members.get(pid) != 0 or protocol is None
                    or protocol.exited or self.instances.get(instance.name) is not instance):
                continue
            starttime = self.os.starttime(pid)
            if starttime:
                instance.members[pid] = starttime
                self.membersChanged(instance)

    def _saveRegistry(self) -> None:
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()
        self._saveCall = None
        self._lastSave = self.reactor.seconds()
        try:
            self.registry.save()
        except OSError as e:
            log.error("cannot write pid registry {path}: {e}", path=self.registry.path, e=e)

    def notifySocket(self) -> str:
        """The C{NOTIFY_SOCKET} of C{ready='notify'} instances: one socket, opened at the first
        such spawn (on a fake OS, tests deliver to L{notified} themselves)."""
        if self._notify is None:
            self._notify = self.os.openNotify(self.token, self.notified)
        return self._notify.address

    def notified(self, pid: int, fields: dict[str, str]) -> None:
        """A notification from C{pid}: the instance whose leader or member it is, or whose
        environment marker it carries (a worker process that its leader forked)."""
        instance = self._instanceOfPid(pid)
        if instance is not None:
            instance.notified(fields)
            return
        log.debug("notification from pid {pid}, not an instance's: {fields}", pid=pid, fields=fields)

    def _instanceOfPid(self, pid: int) -> Instance | None:
        """The instance C{pid} belongs to: a leader or known member, else by its environment
        marker, else through its parents (a sender that already exited has no environment left)."""
        known = self._knownPid(pid)
        if known is not None:
            return known
        marker = self.os.marker(pid)
        prefix = f"{self.token}/"
        if marker and marker.startswith(prefix):
            return self.instances.get(marker[len(prefix):])
        for _ in range(32):
            parent = self.os.parent(pid)
            if parent is None or parent <= 1:
                return None
            pid = parent
            known = self._knownPid(pid)
            if known is not None:
                return known
        return None

    def _knownPid(self, pid: int) -> Instance | None:
        """The instance whose leader or recorded member C{pid} is (a watchdog ping's usual case)."""
        for instance in self.instances.values():
            if instance.pid == pid or pid in instance.members:
                return instance
        return None

    def refuseStart(self, instance: Instance) -> str | None:
        limit = instance.deploy.max_processes
        if self.maxProcesses is None and limit is None:
            return None
        me = 1 if instance.state in RUNNING_STATES else 0
        if self.maxProcesses is not None and self._liveTotal - me >= self.maxProcesses:
            return f"refused: the global limit of {self.maxProcesses} simultaneous processes is reached"
        if limit is not None:
            if self._live.get(instance.deploy.name, 0) - me >= limit:
                return (f"refused: deploy {instance.deploy.name!r} already runs its limit of "
                        f"{limit} simultaneous processes")
        return None

    def beforeStop(self, instance: Instance) -> Deferred:
        if not self.beforeStopHooks:
            return succeed(None)
        info = instance.info()
        calls = []
        for hook in list(self.beforeStopHooks):
            d = maybeDeferred(hook, instance.name, info)
            d.addTimeout(self.drainTimeout, self.reactor)
            d.addErrback(lambda f, hook=hook: log.failure("before-stop hook {h!r} failed", f, h=hook))
            calls.append(d)
        return DeferredList(calls)

    def probe(self, instance: Instance) -> Deferred:
        if self.prober is not None:
            return maybeDeferred(self.prober, instance)
        probe = instance.deploy.probe
        if probe.kind == "watchdog":
            return succeed(self.reactor.seconds() - instance.lastWatchdog <= probe.timeout)
        if probe.kind == "tcp":
            endpoint = TCP4ClientEndpoint(self.reactor, probe.host, instance.port, timeout=probe.timeout)
            factory = Factory.forProtocol(Protocol)
            factory.noisy = False  # one probe every few seconds per instance: no start/stop lines
            d = endpoint.connect(factory)

            def connected(proto):
                # A FIN, not a reset: a server that sees ECONNRESET logs a traceback per probe.
                proto.transport.loseConnection()
                return True

            d.addCallback(connected)
            d.addErrback(lambda f: False)
            return d
        return _commandProbe(self.reactor, instance, probe)

    # -- observers and hooks (the balancer's integration points) --------------------------------

    def addObserver(self, observer: Observer) -> None:
        """Call C{observer(name, old, new, info)} on every state change.

        C{old} and C{new} are L{ProcessState} members (int codes with C{.name}).  C{info} is the
        instance's info dict plus C{event}: C{'state'} for a state change, C{'ready'} / C{'unready'}
        when the liveness probe starts or stops answering (then C{old == new == RUNNING}).  A
        balancer adds an instance to its pool on C{'ready'}.
        """
        self.observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    def addBeforeStop(self, hook: BeforeStop) -> None:
        """Call C{hook(name, info)} before a RUNNING instance is signalled; wait for its Deferred.

        A balancer drains the instance here (stop sending new connections, let open ones finish);
        the stop goes ahead when every hook has fired, failed, or taken C{drainTimeout} seconds.
        """
        self.beforeStopHooks.append(hook)

    def removeBeforeStop(self, hook: BeforeStop) -> None:
        if hook in self.beforeStopHooks:
            self.beforeStopHooks.remove(hook)

    def addRolling(self, deploy: str | Callable[[Deploy], bool]) -> None:
        """Apply a changed declaration of C{deploy} as a rolling restart (see L{reload}).

        Whoever sends the deploy's instances traffic asks for this: a balanced group that follows
        it, or the cluster's publisher for the front-ends that balance it from other hosts.
        Restarting every instance at once would leave them no backend, and their clients with
        failed requests.  C{deploy} is a deploy's name, or a rule over declarations (the
        publisher's "every deploy with a port", which covers deploys a reload adds later).
        Each C{addRolling} is undone by one L{removeRolling} with the same argument.
        """
        self._rolling[deploy] = self._rolling.get(deploy, 0) + 1

    def removeRolling(self, deploy: str | Callable[[Deploy], bool]) -> None:
        count = self._rolling.get(deploy, 0) - 1
        if count > 0:
            self._rolling[deploy] = count
        else:
            self._rolling.pop(deploy, None)

    def rolls(self, declaration: Deploy) -> bool:
        """Whether a changed C{declaration} is applied as a rolling restart."""
        return any(key == declaration.name if isinstance(key, str) else key(declaration)
                   for key in self._rolling)

    def rollingDeploys(self) -> list[str]:
        """The deploys whose changes are applied as rolling restarts (sorted)."""
        named = {key for key in self._rolling if isinstance(key, str)}
        return sorted(named | {name for name, d in self.deploys.items() if self.rolls(d)})

    # -- queries ---------------------------------------------------------------------------------

    def _instance(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            pass
        legacy = legacyIndex(name)
        deploy = self.deploys.get(legacy[0]) if legacy is not None else None
        if legacy is not None and deploy is not None and legacy[1] < deploy.numprocs:
            instance = self.instances.get(deploy.instanceName(legacy[1]))
            if instance is not None:
                if name not in self._warnedNames:
                    self._warnedNames.add(name)
                    log.warn("{old} is the older spelling of instance {name}: use {name}",
                             old=name, name=instance.name)
                return instance
        raise KeyError(f"no instance {name!r}")

    def _deploy(self, name: str) -> Deploy:
        try:
            return self.deploys[name]
        except KeyError:
            raise KeyError(f"no deploy {name!r}")

    def _ordered(self) -> list[Deploy]:
        return sorted(self.deploys.values(), key=lambda d: (d.priority, d.name))

    def instanceInfos(self) -> list[dict]:
        """Info dicts of every instance, in start order."""
        return [i.info() for d in self._ordered() for i in self._instancesOf(d.name)]

    def instanceInfo(self, name: str) -> dict:
        return self._instance(name).info()

    def _instancesOf(self, deploy: str) -> list[Instance]:
        return [self.instances[n] for n in self._deploy(deploy).instanceNames() if n in self.instances]

    def groups(self) -> dict[str, list[str]]:
        """{group: [deploy names]}."""
        out: dict[str, list[str]] = {}
        for d in self._ordered():
            out.setdefault(d.groupName, []).append(d.name)
        return out

    def tailLog(self, name: str, lines: int = 100, stream: str = "stdout") -> list[str]:
        """The last C{lines} lines an instance wrote on C{stream} (received by this run)."""
        return self._instance(name).log.tail(lines, stream)

    def followLog(self, name: str, callback: Callable[[LogLine], Any], stream: str = "stdout"):
        """Call C{callback(LogLine)} for each new line; returns a function that stops following."""
        return self._instance(name).log.follow(callback, stream)

    def clearLogs(self, name: str) -> None:
        """Empty instance C{name}'s stdout and stderr logs: the files and what L{tailLog} returns
        (L{ILogClearing}; KeyError for an unknown name)."""
        self._instance(name).log.clear()

    def setStoreHook(self, hook: Callable[[LogLine], Any] | None) -> None:
        """Send every instance's lines at or above its deploy's C{store_level} to C{hook(LogLine)}
        (the monitor plugs the store in here, after the supervisor is built)."""
        self.storeHook = hook
        self.mainLog.storeHook = hook
        for instance in self.instances.values():
            instance.log.storeHook = hook

    def flushRepeats(self) -> None:
        """Give the store hook every instance's counted repeats now, as their summaries.

        The monitor stops (its last write to the store) before the supervisor stops its
        instances: it calls this first, so the counts of a window still open at shutdown are
        stored, not lost."""
        for instance in self.instances.values():
            instance.log.flushRepeats()

    def signalInstance(self, name: str, sig: int | str) -> None:
        instance = self._instance(name)
        number = signalNumber(sig)
        instance.signal(number)
        self.mainLog.write("info", f"signalled: {name} (pid {instance.pid or 0}) with "
                           f"{_signal.Signals(number).name}", name)

    # -- the main log (supervisord's readLog / maintail) ----------------------------------------

    def mainLogPath(self) -> str:
        return self.mainLog.path

    def followMainLog(self, callback: Callable[[LogLine], Any]) -> Callable[[], None]:
        """Call C{callback(LogLine)} for each new event of the main log; returns the canceller."""
        return self.mainLog.follow(callback)

    def clearMainLog(self) -> None:
        self.mainLog.clear()

    def spawnProblem(self, name: str) -> Exception | None:
        """What would make a spawn of instance C{name} fail for sure (a missing or non-executable
        command, a missing directory), found without spawning: a
        L{salvusctl.supervisor.spawncheck.SpawnError}, or None.  supervisord's C{startProcess}
        checks the command this way and refuses before the state changes."""
        instance = self._instance(name)
        check = getattr(self.os, "checkSpawn", None)
        if check is None:
            return None
        from salvusctl.supervisor.spawncheck import SpawnError

        try:
            argv, env = instance.commandLine()
            check(argv, env, instance.deploy.cwd)
        except SpawnError as e:
            return e
        except Exception:
            return None  # the spawn itself will say
        return None

    def sendStdin(self, name: str, data: bytes) -> None:
        """Write C{data} to an instance's stdin pipe (C{Deploy(stdin=True)}); KeyError for an
        unknown name, L{NotRunning} or L{NoStdin} when it cannot be written."""
        self._instance(name).sendStdin(data)

    def sendRemoteCommEvent(self, type: str, data: str) -> None:
        """A C{REMOTE_COMMUNICATION} event for the event listeners (supervisord's verb)."""
        self.eventHub.remote(type, data)

    # -- start -----------------------------------------------------------------------------------

    def _whenReady(self, deploy: str) -> Deferred:
        """Fires when every instance of C{deploy} is RUNNING and ready, starting it if need be."""
        instances = self._instancesOf(deploy)
        if instances and all(i.ready for i in instances):
            return succeed(None)
        return self.startDeploy(deploy)

    def _depsReady(self, deploy: Deploy) -> Deferred:
        if not deploy.depends_on:
            return succeed(None)

        def failed(f: Failure):
            f.trap(Exception)
            err = f.value.subFailure.value if hasattr(f.value, "subFailure") else f.value
            raise DependencyFailed(f"deploy {deploy.name!r} not started: a dependency failed: {err}")

        d = gatherResults([self._whenReady(dep) for dep in deploy.depends_on], consumeErrors=True)
        d.addErrback(failed)
        return d

    def startInstance(self, name: str) -> Deferred:
        """Start one instance once its deploy's dependencies are ready; fires when it is ready."""
        instance = self._instance(name)
        d = self._depsReady(instance.deploy)
        d.addCallback(lambda _: instance.start())
        d.addCallback(lambda _: None)
        return d

    def startDeploy(self, name: str) -> Deferred:
        """Start every instance of a deploy (after its dependencies); fires when all are ready."""
        deploy = self._deploy(name)
        waiter: Deferred = Deferred()
        if name in self._deployStarts:
            self._deployStarts[name].append(waiter)
            return waiter
        waiters = self._deployStarts[name] = [waiter]
        d = self._depsReady(deploy)

        def go(_):
            return gatherResults([i.start() for i in self._instancesOf(name)], consumeErrors=True)

        def done(result):
            if self._deployStarts.get(name) is waiters:
                del self._deployStarts[name]
            if isinstance(result, Failure) and hasattr(result.value, "subFailure"):
                result = result.value.subFailure
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(None)

        d.addCallback(go)
        d.addBoth(done)
        return waiter

    def startGroup(self, group: str) -> Deferred:
        names = self._groupDeploys(group)
        return _gather([self.startDeploy(n) for n in names])

    def startAll(self, everything: bool = False) -> Deferred:
        """Start every autostart deploy (every deploy with C{everything}, what supervisord's
        C{startAllProcesses} does): in priority order, each once its dependencies are ready."""
        return _gather([self.startDeploy(d.name) for d in self._ordered() if everything or d.autostart])

    # -- stop ------------------------------------------------------------------------------------

    def stopInstance(self, name: str) -> Deferred:
        """Stop one instance and every process it started; fires when none is left."""
        return self._instance(name).stop()

    def stopDeploy(self, name: str) -> Deferred:
        """Stop every instance of a deploy, in parallel."""
        return _gather([i.stop() for i in self._instancesOf(name)])

    def stopGroup(self, group: str) -> Deferred:
        return self._stopSet(self._groupDeploys(group))

    def stopAll(self) -> Deferred:
        """Stop everything: each deploy once every deploy depending on it has stopped."""
        return self._stopSet([d.name for d in self._ordered()])

    def _startSequence(self, names: Iterable[str]) -> list[str]:
        """C{names} in the order a start takes them: each after its dependencies, otherwise by
        (priority, name)."""
        pending = {n: self.deploys[n] for n in names if n in self.deploys}
        placed: list[str] = []
        while pending:
            free = [d for d in pending.values() if not any(dep in pending for dep in d.depends_on)]
            if not free:  # a cycle (validation refuses them): fall back to priority alone
                free = list(pending.values())
            first = min(free, key=lambda d: (d.priority, d.name))
            placed.append(first.name)
            del pending[first.name]
        return placed

    def _stopSet(self, names: Iterable[str]) -> Deferred:
        """Stop these deploys in reverse start order, as supervisord does.

        A deploy is asked to stop once every deploy of the set that started after it with a
        higher priority, and every one depending on it, has stopped: the database (priority 1)
        still runs while the web tier (priority 10) drains and exits.  Deploys of one priority
        with no dependency between them stop together.
        """
        sequence = self._startSequence(names)
        rank = {n: i for i, n in enumerate(sequence)}
        done: dict[str, Deferred] = {}

        def stopOne(name: str) -> Deferred:
            if name in done:
                return done[name]
            mine = self.deploys[name]
            later = [self.deploys[n] for n in sequence[rank[name] + 1:]]
            first = [n.name for n in later if n.priority > mine.priority or name in n.depends_on]
            d = _gather([stopOne(n) for n in first])
            d.addBoth(lambda _: self.stopDeploy(name))
            done[name] = d
            return d

        return _gather([stopOne(n) for n in reversed(sequence)])

    def _groupDeploys(self, group: str) -> list[str]:
        names = [d.name for d in self._ordered() if d.groupName == group]
        if not names:
            raise KeyError(f"no group {group!r}")
        return names

    # -- restart ---------------------------------------------------------------------------------

    def restartInstance(self, name: str) -> Deferred:
        """Stop (before-stop hooks first) then start one instance; fires when it is ready again."""
        instance = self._instance(name)
        d = instance.stop()
        d.addCallback(lambda _: self.startInstance(name))
        return d

    @inlineCallbacks
    def restartDeploy(self, name: str, batch: int | None = 1):
        """Rolling restart: C{batch} instances at a time, each batch ready before the next stops.

        With before-stop hooks draining each instance and the balancer adding it back on
        C{'ready'}, a balanced deploy restarts with no failed request.  C{batch=None} stops every
        instance, then starts them all.
        """
        instances = self._instancesOf(name)
        if batch is None or batch >= len(instances):
            yield self.stopDeploy(name)
            yield self.startDeploy(name)
            return
        if batch < 1:
            raise ValueError("batch must be >= 1")
        for start in range(0, len(instances), batch):
            group = instances[start:start + batch]
            yield _gather([i.stop() for i in group])
            yield _gather([self.startInstance(i.name) for i in group])

    @inlineCallbacks
    def restartGroup(self, group: str, batch: int | None = 1):
        for name in self._groupDeploys(group):
            yield self.restartDeploy(name, batch)

    @inlineCallbacks
    def restartAll(self):
        yield self.stopAll()
        yield self.startAll()

    # -- reload ----------------------------------------------------------------------------------

    @inlineCallbacks
    def reload(self, deploys: Sequence[Deploy], rolling: bool = True):
        """Apply a new set of declarations, touching only what changed.

        Unchanged deploys keep running; a deploy whose only change is C{numprocs} is scaled (the
        instances it keeps are not touched); changed ones are stopped and started again with the
        new declaration; removed ones are stopped and forgotten; added ones are started (if
        autostart).  A changed deploy that a balanced group or the cluster follows (L{addRolling}) is instead
        replaced one instance at a time (L{_roll}), so its group always has ready hosts;
        C{rolling=False} restarts it at once like any other.  Fires with {'added', 'changed',
        'scaled', 'removed', 'rolled'}: lists of deploy names ('rolled' is part of 'changed').
        """
        deploys = list(deploys)
        for deploy in deploys:
            deploy.validate()
        validateDeploys(deploys)
        new = {d.name: d for d in deploys}
        removed = [n for n in self.deploys if n not in new]
        added = [n for n in new if n not in self.deploys]
        changed = [n for n in new if n in self.deploys and new[n].spec() != self.deploys[n].spec()]
        scaled = [n for n in changed if _unscaled(new[n]) == _unscaled(self.deploys[n])]
        changed = [n for n in changed if n not in scaled]
        rolled = [n for n in changed if rolling and self.running
                  and (self.rolls(new[n]) or self.rolls(self.deploys[n]))]
        allChanged = changed
        changed = [n for n in changed if n not in rolled]
        shrunk: list[Instance] = []
        for name in new:
            if name in self.deploys and name not in allChanged:
                # Same processes (priority or numprocs aside): adopt the declaration in place.
                shrunk += [i for i in self._instancesOf(name) if i.index >= new[name].numprocs]
                for instance in self._instancesOf(name):
                    instance.deploy = new[name]
                self.deploys[name] = new[name]
        if removed or changed or shrunk:
            stops = [self._stopSet(removed + changed)] + [i.stop() for i in shrunk]
            yield _gather(stops)
        for instance in shrunk:
            del self.instances[instance.name]
            self._forgetLive(instance)
            instance.shutdown()
            self.registry.entries.pop(instance.name, None)
        for name in removed + changed:
            self._removeDeploy(name)
        for name in changed + added:
            self._addDeploy(new[name])
        grown: list[Instance] = []
        for name in scaled:
            grown += self._addInstances(new[name])
        self._saveRegistry()
        if self.running:
            starts = [self.startDeploy(n) for n in changed + added if new[n].autostart]
            starts += [self.startInstance(i.name) for i in grown if i.deploy.autostart]
            yield _gather(starts)
        for name in self._startSequence(rolled):
            yield self._roll(new[name])
        return {"added": added, "changed": allChanged, "scaled": scaled, "removed": removed,
                "rolled": rolled}

    @inlineCallbacks
    def _roll(self, deploy: Deploy, batch: int = 1):
        """Replace a running deploy's instances by ones of its new declaration, C{batch} at a
        time: each stops (its before-stop hooks drain it first), its successor starts, and the
        next batch waits until that one is ready.

        A successor that cannot be made ready stops the roll with a clear error: the instances
        not reached yet keep running the old declaration, and the deploy stays recorded as the
        old one, so the next reload finds it changed and tries again.
        """
        name = deploy.name
        olds = self._instancesOf(name)
        kept = [i for i in olds if i.index < deploy.numprocs]
        extra = [i for i in olds if i.index >= deploy.numprocs]
        log.info("{name}: rolling restart with the new declaration, {batch} at a time", name=name,
                 batch=batch)
        for start in range(0, len(kept), batch):
            group = kept[start:start + batch]
            running = {i.name for i in group if i.state in RUNNING_STATES}
            yield _gather([i.stop() for i in group])
            fresh = [self._replaceInstance(i, deploy) for i in group]
            self._saveRegistry()
            wanted = [i for i in fresh if i.name in running or deploy.autostart]
            try:
                yield _gather([self.startInstance(i.name) for i in wanted])
            except Exception as e:
                left = [i.name for i in kept[start + batch:]]
                raise RollFailed(
                    f"rolling restart of {name} stopped: {e}"
                    + (f"; {', '.join(left)} keep the old declaration" if left else ""))
        yield _gather([i.stop() for i in extra])
        for instance in extra:
            del self.instances[instance.name]
            self._forgetLive(instance)
            instance.shutdown()
            self.registry.entries.pop(instance.name, None)
        self.deploys[name] = deploy
        grown = self._addInstances(deploy)
        self._saveRegistry()
        if deploy.autostart:
            yield _gather([self.startInstance(i.name) for i in grown])


class _ProbeProtocol(ProcessProtocol):
    def __init__(self, done: Deferred):
        self.done = done

    def processEnded(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.callback(getattr(reason.value, "exitCode", 1) == 0)


def _commandProbe(reactor, instance: Instance, probe) -> Deferred:
    from salvusctl.supervisor.deploy import substitute

    done: Deferred = Deferred()
    argv = [substitute(a, instance.values()) for a in probe.command]
    env = dict(os.environ)
    env["PORT"] = str(instance.port or "")
    try:
        transport = reactor.spawnProcess(_ProbeProtocol(done), argv[0], argv, env)
    except Exception:
        return succeed(False)

    def timeout():
        if not done.called:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass
            done.callback(False)

    call = reactor.callLater(probe.timeout, timeout)

    def cancel(result):
        if call.active():
            call.cancel()
        return result

    done.addBoth(cancel)
    return done


def _unscaled(deploy: Deploy) -> tuple:
    """A deploy's spec without its instance count: equal means "only scaled".

    Scaling between one instance and more renames the first (C{web} becomes C{web_00} under the
    default names, as in supervisord), so its first name is part of it.
    """
    return tuple(item for item in deploy.spec() if item[0] != "numprocs") + (deploy.instanceName(0),)


def _gather(ds: list[Deferred]) -> Deferred:
    """Wait for all; fail with the first failure (after every one has finished)."""
    d = DeferredList(ds, consumeErrors=True)

    def check(results):
        for ok, value in results:
            if not ok:
                return value
        return None

    d.addCallback(check)
    return d


def _abspath(path: str) -> str:
    return os.path.abspath(path)


def _join(*parts: str) -> str:
    return os.path.join(*parts)


def _makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


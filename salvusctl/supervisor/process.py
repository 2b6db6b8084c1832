"""One record per instance: its state machine, its process protocol, its stop sequence.

An L{Instance} is driven only by the reactor it is given (C{callLater}, C{seconds}), by the
operating-system facade it is given (an L{IProcessOS}: L{ProcessOS} for real,
C{salvusctl.supervisor.testing.FakeOS} in tests), and by its owner (an L{IInstanceOwner}, the
supervisor service), so the lifecycle arithmetic (startsecs, backoff, flapping, stopwaitsecs) runs
under a C{Clock}.  Neither the instance nor the service asks which OS it was given: whatever
differs between the real one and a fake is a method of L{IProcessOS}.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from salvusctl.errors import OperationFailed
from salvusctl.supervisor import clonespawn, oscalls
from salvusctl.supervisor.cgroups import CgroupTree
from salvusctl.supervisor.deploy import RLIMITS, Deploy, substitute
from salvusctl.supervisor.describe import describe
from salvusctl.supervisor.eventlistener import processNames
from salvusctl.supervisor.logs import InstanceLog
from salvusctl.supervisor.notify import INotifyChannel, NotifySocket, abstractName
from salvusctl.supervisor.spawncheck import SpawnError, checkSpawn
from salvusctl.supervisor.states import (
    RUNNING_STATES,
    ProcessState,
    checkTransition,
)

__all__ = ["Instance", "InstanceProtocol", "IProcessOS", "IInstanceOwner", "INotifyChannel", "ProcessOS",
           "StartRefused", "InstanceStopped", "InstanceFatal", "NotRunning", "NoStdin"]

log = Logger()
S = ProcessState

# While stopping, how often the remaining members are checked; and how long SIGKILL may take.
STOP_POLL = 0.05
KILL_GRACE = 5.0


class StartRefused(OperationFailed):
    """A start was refused (a limit, a stopping instance …); the message says why."""


class InstanceStopped(Exception):
    """The instance was stopped before it became RUNNING."""


class InstanceFatal(OperationFailed):
    """The instance went FATAL; the message carries the reason."""


class NotRunning(Exception):
    """No process of the instance runs (to write to, to signal)."""


class NoStdin(Exception):
    """The instance has no stdin pipe (its deploy gives none, or the process closed it)."""


class IProcessOS(Interface):
    """The operating system as an instance sees it (L{ProcessOS}; C{testing.FakeOS} in tests)."""

    def spawn(protocol, argv, env, cwd, uid, gid, deathsig, rlimits, umask=None, redirectStderr=False,
              stdin=False, name=None):
        """Start a process in its own session (and in instance C{name}'s cgroup, where there are
        cgroups); return its transport (with C{.pid}, and with C{stdin} a C{writeToChild(0, data)}
        that feeds the process's stdin pipe)."""

    def members(leader, marker, known):
        """Every live process of an instance: {pid: starttime}."""

    def leftovers(leader, marker, known):
        """What a leader that exited on its own left alive: {pid: starttime}."""

    def signal(found, sig, groups=(), signalled=()):
        """Send C{sig} once to each process of the groups C{groups} and of C{found}; members of
        the groups C{signalled} (which had it already) are skipped."""

    def killAll(marker):
        """SIGKILL whatever is left in the instance's cgroup (0 when there are no cgroups)."""

    def alive(pid, starttime):
        """True when C{pid} runs and (if given) started at C{starttime}."""

    def reap():
        """Reap adopted orphans that have exited."""

    def starttime(pid):
        """The start time of C{pid} (clock ticks since boot), 0 when unknown."""

    cgroups = Attribute("The instances' L{CgroupTree}, or None where processes are tracked without "
                        "cgroups.")

    batchStarttimes = Attribute(
        "True when a just-spawned leader's start time is best read after the reactor turn's "
        "spawns (a /proc read each); False when it can be asked at once.")

    def prepare(token, registry, useCgroups, subreaper):
        """Make the OS ready for a supervisor about to start (child subreaper, spawn helper, the
        choice of process tracking) and kill what a killed predecessor with the same C{token}
        left (by its pid C{registry}); return the killed leftovers {pid: starttime}."""

    def release(subreaper):
        """Undo L{prepare} once every instance has stopped (remove the instance cgroups, stop
        being a child subreaper)."""

    def busyCgroups():
        """The names of instance cgroups that still hold processes; None without cgroups."""

    def adopted():
        """Reap exited orphans and return the processes adopted since the last call that belong
        to an instance: {pid: (instance name, starttime)}."""

    def openNotify(name, deliver):
        """Open the C{NOTIFY_SOCKET} of instances with C{ready='notify'}: an L{INotifyChannel}
        whose C{address} goes into their environment; each notification is passed to
        C{deliver(pid, fields)}."""

    def marker(pid):
        """The C{SALVUS_INSTANCE} environment marker of C{pid}, or None (unknown or unreadable)."""

    def parent(pid):
        """The parent pid of C{pid}, or None when it is gone."""


class IInstanceOwner(Interface):
    """What an L{Instance} needs of the supervisor that owns it (L{SupervisorService}).

    The instance reads the owner's shared state and tells it of every change; the owner keeps the
    counts, the pid registry, the events and the observers that span instances.
    """

    reactor = Attribute("The injected reactor (C{IReactorTime}, C{IReactorProcess}).")
    os = Attribute("The L{IProcessOS} instances spawn and signal through.")
    runDir = Attribute("The supervisor's run directory (each instance has its own under it).")
    token = Attribute("This supervisor's token: the prefix of every instance's environment marker.")
    hostName = Attribute("The host's name (the C{{host}} template of commands).")
    mainLog = Attribute("The supervisor's main log (C{write(level, text, name)}).")
    eventHub = Attribute("supervisord's events (C{output(instance, stream, data)}), or None.")
    inheritEnv = Attribute("Whether instances start with the host's environment.")
    serverURL = Attribute("The admin socket children are told of (C{SUPERVISOR_SERVER_URL}), or None.")
    clientsSocket = Attribute("The cluster's clients hub socket path for C{SALVUS_CLIENTS_SOCKET}, or None.")

    def notifySocket():
        """The C{NOTIFY_SOCKET} address of instances with C{ready='notify'}."""

    def stateChanged(instance, old, new):
        """C{instance} went from state C{old} to C{new}."""

    def readyChanged(instance):
        """C{instance.ready} changed."""

    def membersChanged(instance):
        """The processes of C{instance} (C{instance.members}) changed."""

    def refuseStart(instance):
        """Why C{instance} may not start now (a process limit), or None."""

    def leaderStarttime(instance):
        """The start time of C{instance}'s just-spawned leader; 0 while not yet known."""

    def probe(instance):
        """A Deferred firing True when C{instance} answers its probe."""

    def beforeStop(instance):
        """A Deferred firing once the hooks that run before C{instance} stops (drains) are done."""


@implementer(IProcessOS)
class ProcessOS:
    """The real operating system, as instances use it.  Tests pass a fake with the same methods."""

    def __init__(self, reactor, reaper: oscalls.Reaper | None = None, fast: bool = True,
                 helper: bool = True, cgroups: CgroupTree | None = None):
        self.reactor = reactor
        self.reaper = reaper
        self.fast = fast
        self.helper = helper
        self.cgroups = cgroups

    checkSpawn = staticmethod(checkSpawn)

    def spawn(self, protocol, argv, env, cwd, uid, gid, deathsig, rlimits, umask=None,
              redirectStderr=False, stdin=False, name=None):
        checkSpawn(argv, env, cwd)
        cgroup = self.cgroups.prepare(name) if self.cgroups is not None and name else None
        return oscalls.spawnInstance(self.reactor, protocol, argv, env, cwd, uid, gid, deathsig, rlimits,
                                     fast=self.fast, useHelper=self.helper, umask=umask,
                                     redirectStderr=redirectStderr, stdin=stdin, cgroup=cgroup)

    @staticmethod
    def _name(marker: str) -> str:
        """The instance name in a marker (C{token/web:0} -> C{web:0})."""
        return marker.partition("/")[2] or marker

    def _inCgroup(self, marker: str | None) -> list[int]:
        if self.cgroups is None or not marker:
            return []
        return self.cgroups.pids(self._name(marker))

    def killAll(self, marker: str) -> int:
        """C{cgroup.kill} of the instance's cgroup: what left the group, the session and the
        environment marker behind goes too."""
        if self.cgroups is None:
            return 0
        return self.cgroups.kill(self._name(marker))

    _snapshot: oscalls.Snapshot | None = None

    def _table(self) -> oscalls.Snapshot:
        # Every instance stopped in one reactor turn (stopAll) shares one /proc pass.
        if self._snapshot is None:
            self._snapshot = oscalls.Snapshot()
            self.reactor.callLater(0, self._forget)
        return self._snapshot

    def _forget(self) -> None:
        self._snapshot = None

    def members(self, leader: int | None, marker: str, known: Mapping[int, int]) -> dict[int, int]:
        """Every live process of one instance (full /proc scan, shared within a turn), its
        cgroup's included."""
        found = self._table().members(leader, marker, known, self._inCgroup(marker))
        if self.reaper is not None:
            name = self._name(marker)
            mine = os.getpid()
            for pid, starttime in found.items():
                st = self._table().table.get(pid)
                if st is not None and st.ppid == mine:
                    # Recorded as the reaper records orphans: by instance name.
                    self.reaper.adopted.setdefault(pid, (name, starttime))
        return found

    def leftovers(self, leader: int | None, marker: str, known: Mapping[int, int]) -> dict[int, int]:
        """What a leader that exited on its own left behind; a cheap check first, since most
        instances leave nothing and a crash loop must stay fast.

        A program that daemonizes itself leaves a child that has left the group (C{setsid}) by
        the time its leader's exit is seen: re-parented to Salvus (the subreaper), it is found
        among Salvus's own children by its marker, or in the instance's cgroup.
        """
        name = self._name(marker)
        inCgroup = [p for p in self._inCgroup(marker) if p != leader]
        groupAlive = False
        if leader:
            try:
                os.killpg(leader, 0)
                groupAlive = True
            except OSError:
                pass
        adopted = False
        if self.reaper is not None:
            self.reaper.scan()
            adopted = any(m == name for m, _ in self.reaper.adopted.values())
        others = any(p != leader and oscalls.alive(p, t or None) for p, t in known.items())
        if not (inCgroup or groupAlive or adopted or others):
            return {}
        snapshot = oscalls.Snapshot()
        # The cgroup read again after the /proc pass: the first read may predate a fork (the
        # middle child of a double fork has exited since, and only its child is left).
        found = snapshot.members(leader, marker, known, set(inCgroup) | set(self._inCgroup(marker)))
        found.pop(leader, None)
        return found

    def starttime(self, pid: int) -> int:
        st = oscalls.readStat(pid)
        return st.starttime if st is not None else 0

    def signal(self, found: Mapping[int, int], sig: int, groups=(), signalled=()) -> None:
        oscalls.signalMembers(found, sig, groups, signalled)

    def alive(self, pid: int, starttime: int | None) -> bool:
        return oscalls.alive(pid, starttime)

    def reap(self) -> None:
        if self.reaper is not None:
            self.reaper.scan()

    batchStarttimes = True

    def prepare(self, token: str, registry: oscalls.PidRegistry, useCgroups: bool,
                subreaper: bool) -> dict[int, int]:
        if subreaper:
            oscalls.setChildSubreaper()
        if self.fast and self.helper:
            # Cached on disk after the first build; the first build runs as a child process, and
            # spawns go through setpriv until it is done.
            oscalls.buildSpawnHelper(self.reactor)
        self._chooseTracking(token, useCgroups)
        if self.cgroups is not None and self.fast and self.helper:
            clonespawn.build(self.reactor).addCallback(self._cloneSpawnReady)
        return oscalls.cleanLeftovers(registry, token, self.cgroups)

    @staticmethod
    def _cloneSpawnReady(ok: bool) -> None:
        if ok:
            log.info("spawn: each instance is created inside its cgroup (clone3 CLONE_INTO_CGROUP)")
        else:
            log.info("spawn: each instance joins its cgroup after spawn (clone3 into a cgroup unavailable)")

    def _chooseTracking(self, token: str, useCgroups: bool) -> None:
        """Decide (once per start) how instances' processes are found, and say so in the log."""
        why = "turned off: SupervisorService(cgroups=False)"
        if useCgroups and self.cgroups is None:
            self.cgroups, why = CgroupTree.probe(token)
        if self.cgroups is not None:
            log.info("process tracking: cgroup v2, each instance in its own cgroup under {base}",
                     base=self.cgroups.base)
            return
        log.info("process tracking: process group, session, SALVUS_INSTANCE environment marker and "
                 "child subreaper; no cgroup ({why}), so a daemon that clears its environment and "
                 "leaves the session is not caught", why=why)

    def release(self, subreaper: bool) -> None:
        if self.cgroups is not None:
            self.cgroups.removeAll()
        if subreaper:
            # Nothing of ours is left to adopt: stop collecting other code's orphans.
            oscalls.setChildSubreaper(False)

    def busyCgroups(self) -> list[str] | None:
        if self.cgroups is None:
            return None
        return [name for name in self.cgroups.names() if self.cgroups.pids(name)]

    def adopted(self) -> dict[int, tuple[str, int]]:
        if self.reaper is None:
            return {}
        self.reaper.scan()
        return self.reaper.takeFresh()

    def openNotify(self, name: str, deliver: Callable[[int, dict[str, str]], None]) -> NotifySocket:
        return NotifySocket(self.reactor, abstractName(name), deliver)

    def marker(self, pid: int) -> str | None:
        return oscalls.readMarker(pid)

    def parent(self, pid: int) -> int | None:
        st = oscalls.readStat(pid)
        return None if st is None else st.ppid


class InstanceProtocol(ProcessProtocol):
    """Feeds output to the instance's log and tells the instance when its process exits.

    C{processExited}, not C{processEnded}, drives the state machine: a grandchild may hold the
    pipes open long after the instance's own process is gone.
    """

    def __init__(self, instance: Instance):
        self.instance = instance
        self.exited = False
        ready = instance.deploy.ready
        watch = None
        if ready is not None and ready.kind == "log":
            watch = self._watchLine
            self._pattern = re.compile(ready.pattern)
        self.output = instance.log.source(watch)

    def _watchLine(self, line) -> None:
        if self._pattern.search(line.text):
            self.output.onLine = None  # one match is all it takes
            self.instance._readySignal(self, "log")

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        stream = "stderr" if childFD == 2 else "stdout"
        hub = self.instance.owner.eventHub
        if hub is not None:
            data = hub.output(self.instance, stream, data)
            if not data:
                return
        self.output.received(stream, data)

    def processExited(self, reason: Failure) -> None:
        self.exited = True
        self.instance._exited(self, reason)

    def processEnded(self, reason: Failure) -> None:
        self.output.ended()


class Instance:
    """One supervised instance (C{deploy:N}) and everything known about it.

    @param owner: its L{IInstanceOwner} (the supervisor service): gives C{reactor}, C{os} (an
        L{IProcessOS}), C{runDir}, C{token}, and is told of changes (C{stateChanged},
        C{readyChanged}, C{membersChanged}) and asked for permission (C{refuseStart}), probes
        (C{probe}) and drains (C{beforeStop}).
    """

    def __init__(self, owner: IInstanceOwner, deploy: Deploy, index: int, port: int | None, log: InstanceLog):
        self.owner = owner
        self.reactor = owner.reactor
        self.deploy = deploy
        self.index = index
        self.name = deploy.instanceName(index)
        self.port = port
        self.log = log
        self.state = S.STOPPED
        self.pid: int | None = None
        self.startTime = 0.0
        self.stopTime = 0.0
        self.exitstatus: int | None = None
        self.spawnerr = ""
        self.fatalReason = ""
        self.restartReason = ""
        self.status = ""
        self.lastWatchdog = 0.0
        self.ready = False
        self.backoffCount = 0
        self.restarts: deque[float] = deque()
        self.totalRestarts = 0
        self.members: dict[int, int] = {}
        self.transport = None
        self._protocol: InstanceProtocol | None = None
        self._timer = None
        self._probeTimer = None
        self._probeFailures = 0
        self._probing = False
        self._startWaiters: list[Deferred] = []
        self._stopWaiters: list[Deferred] = []
        self._stopping: Deferred | None = None
        self._leftovers: dict[int, int] = {}
        self._leftoverCall = None
        self._stopGroup: int | None = None  # the process group the current stop signalled
        # An operator asked for a stop since the last start: no automatic restart may follow it.
        self._held = False

    # -- naming and templating ---------------------------------------------------------------

    @property
    def marker(self) -> str:
        return f"{self.owner.token}/{self.name}"

    @property
    def runDir(self) -> str:
        return os.path.join(self.owner.runDir, self.name.replace(":", "-"))

    def values(self) -> dict[str, Any]:
        """What C{{port}}, C{{name}} … expand to for this instance."""
        return {
            "port": self.port if self.port is not None else "",
            "name": self.name,
            "index": self.index,
            "deploy": self.deploy.name,
            "run_dir": self.runDir,
            "host": self.owner.hostName,
            "group": self.deploy.groupName,
            "numprocs": self.deploy.numprocs,
        }

    _runDirMade = False

    def renderTemplates(self, owner: tuple[int, int] | None = None) -> None:
        """Render the deploy's config-file templates into the run directory (before each start).

        @param owner: (uid, gid) of a C{user=} instance: the run directory is made theirs, so the
            process can write its pid file, socket or cache where C{SALVUS_RUN_DIR} says.
        """
        if not self._runDirMade or self.deploy.templates:
            os.makedirs(self.runDir, exist_ok=True)
            self._runDirMade = True
        if owner is not None and os.geteuid() == 0:
            st = os.stat(self.runDir)
            if (st.st_uid, st.st_gid) != owner:
                os.chown(self.runDir, *owner)
        values = self.values()
        for dest, source in self.deploy.templates.items():
            if "\n" not in source and os.path.isfile(source):
                with open(source, encoding="utf-8") as f:
                    text = f.read()
            else:
                text = source
            tmp = os.path.join(self.runDir, f".{dest}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(substitute(text, values))
            os.replace(tmp, os.path.join(self.runDir, dest))

    def commandLine(self) -> tuple[list[str], dict[str, str]]:
        values = self.values()
        argv = [substitute(a, values) for a in self.deploy.command]
        env = _inheritedEnvironment() if self.owner.inheritEnv else {}
        env.update({k: substitute(str(v), values) for k, v in self.deploy.env.items()})
        env[oscalls.MARKER] = self.marker
        if self.port is not None:
            env.setdefault("PORT", str(self.port))
        env.setdefault("SALVUS_RUN_DIR", self.runDir)
        env.update(_supervisorEnvironment(self))
        clients = self.owner.clientsSocket
        if clients:
            env["SALVUS_CLIENTS_SOCKET"] = clients  # the cluster's clients hub (docs/cluster.md)
        ready, probe = self.deploy.ready, self.deploy.probe
        watchdog = probe is not None and probe.kind == "watchdog"
        if watchdog or (ready is not None and ready.kind == "notify"):
            env["NOTIFY_SOCKET"] = self.owner.notifySocket()
        if watchdog:
            env["WATCHDOG_USEC"] = str(int(probe.timeout * 1_000_000))
        return argv, env

    # -- state -------------------------------------------------------------------------------

    def _change(self, new: ProcessState) -> None:
        old = self.state
        checkTransition(self.name, old, new)
        if new != S.RUNNING and self.ready:
            # Out of the pool first, then the state change.
            self.ready = False
            self.owner.readyChanged(self)
        self.state = new
        self.owner.stateChanged(self, old, new)

    def info(self) -> dict[str, Any]:
        """The supervisord-shaped info dict (plus Salvus extras: ready, reason, members)."""
        now = self.reactor.seconds()
        return {
            "name": self.name,
            "deploy": self.deploy.name,
            "group": self.deploy.groupName,
            "state": self.state.name,
            "statecode": int(self.state),
            "statename": self.state.name,
            "pid": self.pid or 0,
            "start": int(self.startTime),
            "stop": int(self.stopTime),
            "now": int(now),
            "exitstatus": self.exitstatus if self.exitstatus is not None else 0,
            "spawnerr": self.spawnerr,
            "description": self.description(now),
            "port": self.port,
            "ready": self.ready,
            "reason": self.fatalReason,
            "restart_reason": self.restartReason,
            "status": self.status,
            "restarts": self.totalRestarts,
            "members": sorted(self.members),
            "logfile": self.log.paths["stdout"],
            "stdout_logfile": self.log.paths["stdout"],
            "stderr_logfile": "" if self.deploy.redirect_stderr else self.log.paths["stderr"],
        }

    def description(self, now: float) -> str:
        """supervisord's wording (L{describe}); Salvus's readiness wait and C{STATUS=} after it."""
        extras = []
        if self.state == S.STARTING and self.deploy.ready is not None:
            extras.append(f"waiting for ready ({self.deploy.ready.kind})")
        if self.status and self.state in (S.STARTING, S.RUNNING, S.STOPPING):
            extras.append(f"status: {self.status}")
        spawnerr = (self.fatalReason or self.spawnerr) if self.state == S.FATAL else self.spawnerr
        return describe(self.state.name, self.name, self.pid or 0, self.startTime, self.stopTime, now,
                        spawnerr, ", ".join(extras))

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> Deferred:
        """Start (an operator's start: backoff and flapping history are forgotten).

        Fires when the instance is RUNNING and, with a probe, answering; fails with
        L{StartRefused}, L{InstanceFatal} or L{InstanceStopped}.
        """
        if self.state == S.STOPPING:
            return _failed(StartRefused(f"{self.name} is stopping"))
        d = Deferred()
        if self.state in (S.STARTING, S.RUNNING):
            if self.ready:
                d.callback(self)
            else:
                self._startWaiters.append(d)
            return d
        self._startWaiters.append(d)
        self._cancelTimer()
        self._held = False
        self.backoffCount = 0
        self.restarts.clear()
        self.fatalReason = ""
        reason = self.owner.refuseStart(self)
        if reason:
            self.spawnerr = reason
            self._startWaiters.remove(d)
            return _failed(StartRefused(f"{self.name}: {reason}"))
        self._spawn()
        return d

    def _spawn(self) -> None:
        self._timer = None
        reason = self.owner.refuseStart(self)
        if reason:
            self._fatal(reason)
            return
        protocol = InstanceProtocol(self)
        try:
            uid = gid = None
            pw = None
            if self.deploy.user is not None:
                pw = pwd.getpwnam(self.deploy.user)
                uid, gid = pw.pw_uid, pw.pw_gid
            if self.deploy.group_id is not None:
                import grp

                gid = grp.getgrnam(self.deploy.group_id).gr_gid
            self.renderTemplates((uid, gid) if uid is not None else None)
            argv, env = self.commandLine()
            if pw is not None:
                # The user's own, as login, su and systemd's User= give them (the deploy's env
                # still wins): not Salvus's HOME=/root next to another user's uid.
                for key, value in (("HOME", pw.pw_dir), ("USER", pw.pw_name), ("LOGNAME", pw.pw_name),
                                   ("SHELL", pw.pw_shell or "/bin/sh")):
                    if key not in self.deploy.env:
                        env[key] = value
            rlimits = {}
            for key, value in self.deploy.rlimits.items():
                rlimits[RLIMITS[key]] = value if isinstance(value, tuple) else (value, value)
        except Exception as e:
            self._spawnFailed(e)
            return
        self._protocol = protocol
        self.exitstatus = None
        self.spawnerr = ""
        self.status = ""
        self.lastWatchdog = float("-inf")  # no WATCHDOG=1 from this process yet
        self.pid = None
        self.members = {}
        self.startTime = self.reactor.seconds()
        # STARTING before the fork: Twisted may report a very fast exit from inside spawn().
        self._change(S.STARTING)
        self._inSpawn = True
        try:
            deploy = self.deploy
            transport = self.owner.os.spawn(
                protocol, argv, env, deploy.cwd, uid, gid, deploy.deathSignalNumber, rlimits,
                umask=deploy.umask, redirectStderr=deploy.redirect_stderr, stdin=deploy.stdin,
                name=self.name,
            )
        except Exception as e:
            self._inSpawn = False
            self._protocol = None
            self._spawnFailed(e)
            return
        self._inSpawn = False
        if protocol.exited:
            return  # already handled by _exited, during spawn()
        self.transport = transport
        self.pid = transport.pid
        self.owner.mainLog.write("info", f"spawned: {self.name!r} with pid {self.pid}", self.name)
        self.members = {self.pid: self.owner.leaderStarttime(self)} if self.pid else {}
        self.owner.membersChanged(self)
        ready = self.deploy.ready
        if ready is not None:
            self._timer = self.reactor.callLater(ready.timeout, self._notReady)
            if ready.kind == "probe":
                self._probeTimer = self.reactor.callLater(ready.interval, self._runProbe, S.STARTING)
        elif self.deploy.startsecs <= 0:
            self._running()
        else:
            self._timer = self.reactor.callLater(self.deploy.startsecs, self._running)

    _inSpawn = False

    def _spawnFailed(self, e: Exception) -> None:
        if isinstance(e, SpawnError):
            self.spawnerr = str(e)
        elif isinstance(e, KeyError) and self.deploy.user is not None and "getpwnam" in str(e):
            self.spawnerr = f"couldn't setuid to {self.deploy.user}: no such user"
        else:
            self.spawnerr = f"spawn failed: {e}"
        self.transport = None  # (logged once, with what follows, by _startFailed)
        if self.state != S.STARTING:
            self._change(S.STARTING)
        self._startFailed()

    def _running(self, probed: bool = False) -> None:
        """STARTING -> RUNNING; ready at once unless a probe has yet to answer."""
        self._timer = None
        if self.state != S.STARTING:
            return
        self.backoffCount = 0
        self.lastWatchdog = self.reactor.seconds()  # the watchdog's first period starts now
        self._change(S.RUNNING)
        if self.deploy.probe is None:
            self._setReady(True)
        else:
            self._probeFailures = 0
            if probed:
                self._setReady(True)
                self._scheduleProbe(self.deploy.probe.interval)
            else:
                self._scheduleProbe(0)

    # -- readiness (Deploy.ready) ------------------------------------------------------------------

    def _readySignal(self, protocol: InstanceProtocol | None, how: str) -> None:
        """The running process said it is ready (a notification, a log line, the first probe)."""
        if self.state != S.STARTING or self.deploy.ready is None:
            return
        if protocol is not None and protocol is not self._protocol:
            return  # a line from a process that is already gone
        self._cancelTimer()
        self._stopProbe()
        self._running(probed=how == "probe")

    def notified(self, fields: Mapping[str, str]) -> None:
        """An C{sd_notify} message from one of this instance's processes."""
        if "STATUS" in fields:
            self.status = fields["STATUS"]
        if fields.get("READY") == "1":
            self._readySignal(None, "notify")
        elif "EXTEND_TIMEOUT_USEC" in fields:
            self._extendStart(fields["EXTEND_TIMEOUT_USEC"])
        watchdog = fields.get("WATCHDOG")
        if watchdog == "1":
            self.lastWatchdog = self.reactor.seconds()
        elif watchdog == "trigger" and self.state == S.RUNNING and self._stopping is None:
            self._lostContact("the instance asked for a restart (WATCHDOG=trigger)")

    def _extendStart(self, usec: str) -> None:
        """C{EXTEND_TIMEOUT_USEC=N}: still starting, give me N more microseconds (from now), as
        systemd allows a slow start (a long crash recovery) to ask for."""
        timer = self._timer
        if self.state != S.STARTING or self.deploy.ready is None or timer is None or not timer.active():
            return
        try:
            extra = int(usec) / 1_000_000
        except ValueError:
            return
        if extra > 0 and self.reactor.seconds() + extra > timer.getTime():
            timer.reset(extra)

    def _startProbed(self, ok: bool, pid: int | None) -> None:
        self._probing = False
        if self.state != S.STARTING or self.pid != pid:
            return
        if ok:
            self._readySignal(None, "probe")
        else:
            self._probeTimer = self.reactor.callLater(self.deploy.ready.interval, self._runProbe, S.STARTING)

    def _notReady(self) -> None:
        """The start timeout passed without a ready signal: stop the attempt; its exit fails it."""
        self._timer = None
        if self.state != S.STARTING:
            return
        self._stopProbe()
        ready = self.deploy.ready
        # Logged once the process is gone, as this start's failure (_startFailed).
        self.spawnerr = f"not ready within {ready.timeout:g}s (ready={ready.kind!r}), stopped"
        found = self.owner.os.members(self.pid, self.marker, self.members)
        self.members.update(found)
        self.owner.os.signal(found, self.deploy.stopSignalNumber, [self.pid] if self.pid else [])
        self._timer = self.reactor.callLater(self.deploy.stopwaitsecs, self._killNotReady, self.pid)

    def _killNotReady(self, pid: int | None) -> None:
        self._timer = None
        if self.state == S.STARTING and self.pid == pid and pid:
            found = self.owner.os.members(pid, self.marker, self.members)
            self.owner.os.signal(found, signal.SIGKILL, [pid])

    def _setReady(self, ready: bool) -> None:
        if ready == self.ready:
            return
        self.ready = ready
        self.owner.readyChanged(self)
        if ready:
            waiters, self._startWaiters = self._startWaiters, []
            for d in waiters:
                d.callback(self)

    def _failWaiters(self, exc: Exception) -> None:
        waiters, self._startWaiters = self._startWaiters, []
        for d in waiters:
            d.errback(Failure(exc))

    # -- exits, backoff, flapping ----------------------------------------------------------------

    def _exited(self, protocol: InstanceProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self.transport = None
        value = reason.value
        if isinstance(value, ProcessDone):
            self.exitstatus = 0
        elif isinstance(value, ProcessTerminated):
            self.exitstatus = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            self.exitstatus = -1
        self.stopTime = self.reactor.seconds()
        self._stopProbe()
        if self.state == S.STOPPING:
            return  # the stop sequence (its poll timer) finishes once every member is gone
        self._cancelTimer()
        oldpid = self.pid
        self.pid = None
        self._reapLeftovers(oldpid, dict(self.members))
        if self.state == S.STARTING and self.deploy.startsecs <= 0 and self.deploy.ready is None:
            self._running()  # startsecs=0: it was RUNNING the moment it was spawned
        if self.state == S.STARTING:
            self._startFailed()
        elif self.state == S.RUNNING:
            self._change(S.EXITED)
            expected = self.exitstatus in self.deploy.exitcodes
            mode = self.deploy.autorestart
            if mode == "always" or (mode == "unexpected" and not expected):
                self._autoRestart(f"exited with status {self.exitstatus}")
            else:
                self.members = {}
                self.owner.membersChanged(self)
                self._failWaiters(InstanceStopped(f"{self.name} exited with status {self.exitstatus}"))

    def _reapLeftovers(self, leader: int | None, known: Mapping[int, int]) -> None:
        """The leader died on its own: stop what it left in its group, SIGKILL it later."""
        found = self.owner.os.leftovers(leader, self.marker, known)
        if not found:
            return
        self.owner.os.signal(found, self.deploy.stopSignalNumber, [leader] if leader else [])
        deadline = self.reactor.seconds() + self.deploy.stopwaitsecs
        self._leftovers.update(found)
        self.owner.membersChanged(self)
        if self._leftoverCall is None:
            self._leftoverCall = self.reactor.callLater(STOP_POLL, self._pollLeftovers, deadline)

    def _pollLeftovers(self, deadline: float) -> None:
        self._leftoverCall = None
        self.owner.os.reap()
        alive = {p: t for p, t in self._leftovers.items() if self.owner.os.alive(p, t or None)}
        if not alive and self.state not in (S.STARTING, S.RUNNING, S.STOPPING):
            # One last look: a daemon forked by one of them just before it died (the cheap
            # checks first: the cgroup, Salvus's own children).  Not while a new process runs:
            # its own would be found too (its exit or stop takes what is left then).
            alive = self.owner.os.leftovers(None, self.marker, {})
            if alive:
                self.owner.os.signal(alive, self.deploy.stopSignalNumber)
        changed = alive != self._leftovers
        self._leftovers = alive
        if changed:
            self.owner.membersChanged(self)
        if not alive:
            return
        if self.reactor.seconds() >= deadline:
            self._killLeftovers()
            return
        self._leftoverCall = self.reactor.callLater(STOP_POLL, self._pollLeftovers, deadline)

    def _killLeftovers(self, scan: bool = False) -> None:
        """SIGKILL what the instance's exited processes left; with C{scan}, also whatever else
        still carries its marker or sits in its cgroup (an operator's stop, the host's stop)."""
        if self._leftoverCall is not None and self._leftoverCall.active():
            self._leftoverCall.cancel()
        self._leftoverCall = None
        found = dict(self._leftovers)
        if scan:
            found.update(self.owner.os.members(None, self.marker, found))
        killed = self.owner.os.killAll(self.marker) if scan or found else 0
        if found:
            self.owner.os.signal(found, signal.SIGKILL)
        if found or killed:
            self.owner.os.reap()
        changed = bool(self._leftovers)
        self._leftovers = {}
        if changed:
            self.owner.membersChanged(self)

    def adoptLeftovers(self, found: Mapping[int, int]) -> None:
        """Processes of this instance found after its process exited (a daemon re-parented to
        Salvus later than the exit was seen): stopped like the rest of what it left."""
        fresh = {p: t for p, t in found.items() if p not in self._leftovers}
        if not fresh:
            return
        self.owner.os.signal(fresh, self.deploy.stopSignalNumber)
        self._leftovers.update(fresh)
        self.owner.membersChanged(self)
        if self._leftoverCall is None:
            deadline = self.reactor.seconds() + self.deploy.stopwaitsecs
            self._leftoverCall = self.reactor.callLater(STOP_POLL, self._pollLeftovers, deadline)

    def tracked(self) -> dict[int, int]:
        """Every pid known to be this instance's: its process's members and what earlier ones
        left (the pid registry records both, for the next run after a SIGKILL)."""
        if not self._leftovers:
            return self.members
        return {**self._leftovers, **self.members}

    def _startFailed(self) -> None:
        """Exited before startsecs (or could not spawn): BACKOFF, then retry or FATAL.

        Each failed start is logged in one line that says why and what comes next (the retry
        and its delay, or FATAL).
        """
        self.pid = None
        why = self._startFailure()
        if not self.spawnerr:
            self.spawnerr = "Exited too quickly (process log may have details)"  # supervisord's
        self._change(S.BACKOFF)
        self.backoffCount += 1
        retries = self.deploy.retries
        if retries is not None and self.backoffCount > retries:
            self._fatal(self.spawnerr or "Exited too quickly (process log may have details)", why)
            return
        flapping = self._flapReason()
        if flapping:
            self._fatal(flapping, why)
            return
        delay = self.deploy.backoff.delay(self.backoffCount)
        log.warn("{name}: start failed: {why}; retry {n} in {delay}s", name=self.name, why=why,
                 n=self.backoffCount, delay=f"{delay:g}")
        self._timer = self.reactor.callLater(delay, self._retry)

    def _startFailure(self) -> str:
        """Why this start failed, in words: the spawn error, or how and when the process ended."""
        if self.spawnerr:
            return self.spawnerr
        status = self.exitstatus
        if status is not None and status < 0:
            try:
                how = f"killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        lived = max(0.0, self.stopTime - self.startTime)
        ready = self.deploy.ready
        if ready is not None:
            return f"{how} after {lived:.1f}s, before it was ready (ready={ready.kind!r})"
        return f"{how} after {lived:.1f}s (startsecs={self.deploy.startsecs:g})"

    def _retry(self) -> None:
        self._timer = None
        if self.state == S.BACKOFF:
            self.totalRestarts += 1
            self._spawn()

    def _flapping(self) -> bool:
        """Go FATAL when C{flapping.restarts} automatic restarts were made within the window;
        else record the restart about to be made and return False."""
        reason = self._flapReason()
        if reason:
            self._fatal(reason)
            return True
        return False

    def _flapReason(self) -> str:
        """The FATAL reason when C{flapping.restarts} automatic restarts were made within the
        window; else "" and the restart about to be made is recorded.

        Only restarts that were made are counted, so C{Flapping(10, 60)} allows ten and the
        reason names the ten ("flapping: 10 restarts in 60s"), never the one refused.
        """
        flap = self.deploy.flapping
        now = self.reactor.seconds()
        if flap is None:
            self.restarts.append(now)
            if len(self.restarts) > 16:
                self.restarts.popleft()
            return ""
        while self.restarts and self.restarts[0] <= now - flap.window:
            self.restarts.popleft()
        if len(self.restarts) >= flap.restarts:
            return f"flapping: {len(self.restarts)} restarts in {flap.window:g}s"
        self.restarts.append(now)
        return ""

    def _autoRestart(self, why: str) -> None:
        if self._flapping():
            return
        self.totalRestarts += 1
        self.restartReason = why
        log.info("{name}: {why}, restarting", name=self.name, why=why)
        if self._inSpawn:
            # Exited inside the spawn that started it: respawn from the reactor, not recursively.
            self._timer = self.reactor.callLater(0, self._spawn)
        else:
            self._spawn()

    def _fatal(self, reason: str, failure: str = "") -> None:
        """FATAL with C{reason}; C{failure}: why the start that led here failed (same line)."""
        self.fatalReason = reason
        if self.state == S.FATAL:
            return
        if self.state == S.STARTING:
            self._change(S.BACKOFF)
        self._change(S.FATAL)
        if failure and failure != reason:
            log.warn("{name}: start failed: {why}; FATAL: {reason}", name=self.name, why=failure,
                     reason=reason)
        else:
            log.warn("{name}: FATAL: {reason}", name=self.name, reason=reason)
        self._failWaiters(InstanceFatal(f"{self.name}: {reason}"))

    # -- probes ----------------------------------------------------------------------------------

    def _scheduleProbe(self, delay: float) -> None:
        self._stopProbe()
        self._probeTimer = self.reactor.callLater(delay, self._runProbe)

    def _stopProbe(self) -> None:
        if self._probeTimer is not None and self._probeTimer.active():
            self._probeTimer.cancel()
        self._probeTimer = None

    def _runProbe(self, during: ProcessState = S.RUNNING) -> None:
        """One probe: while STARTING for C{ready='probe'} (L{_startProbed}), else for liveness."""
        self._probeTimer = None
        if self.state != during:
            return
        starting = during == S.STARTING
        if self._probing:  # the previous process's probe has yet to answer
            retry = self.deploy.ready.interval if starting else self.deploy.probe.interval
            self._probeTimer = self.reactor.callLater(retry, self._runProbe, during)
            return
        self._probing = True
        pid = self.pid
        d = maybeDeferred(self.owner.probe, self)
        d.addErrback(lambda f: False)
        d.addCallback(self._startProbed if starting else self._probed, pid)

    def _probed(self, ok: bool, pid: int | None) -> None:
        self._probing = False
        if self.state != S.RUNNING or self.pid != pid:
            return
        probe = self.deploy.probe
        if ok:
            self._probeFailures = 0
            self._setReady(True)
        else:
            self._probeFailures += 1
            if self.ready:
                self._setReady(False)
            if self._probeFailures >= probe.failures:
                self._lostContact()
                return
        self._scheduleProbe(probe.interval)

    def _lostContact(self, why: str = "") -> None:
        """The probe stopped answering: stop this process and start a new one."""
        reason = self._flapReason()
        if reason:
            # RUNNING cannot go FATAL directly: stop the process first, then FATAL.
            self.fatalReason = "liveness probe failed; " + reason
            d = self.stop(hooks=False, restarting=True)
            d.addCallback(lambda _: self._fatalAfterStop(self.fatalReason))
            return
        why = why or f"liveness probe failed {self._probeFailures} times"
        log.warn("{name}: {why}, restarting", name=self.name, why=why)
        self.restartReason = why
        d = self.stop(hooks=False, restarting=True)

        def again(_):
            if self.state == S.STOPPED and not self._held:
                self.totalRestarts += 1
                self._spawn()

        d.addCallback(again)

    def _fatalAfterStop(self, reason: str) -> None:
        if self.state == S.STOPPED and not self._held:
            self._fatal(reason)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, hooks: bool = True, restarting: bool = False) -> Deferred:
        """Stop the whole process tree: stopsignal to the group, SIGKILL after stopwaitsecs.

        With C{hooks}, the owner's before-stop hooks (a balancer drain) run first.  Fires with
        None once no member of the instance is left.  An operator's stop (not C{restarting})
        always ends STOPPED, even when it lands between two processes (a respawn due on the next
        turn, a retry after BACKOFF, a liveness restart): nothing is started after it.
        """
        if not restarting:
            self._held = True
        if self.state == S.EXITED and self._timer is not None:
            # It exited inside the spawn that started it; its respawn was due on the next turn.
            self._cancelTimer()
            self._killLeftovers(scan=True)
            self._stoppedBetween()
            return _succeeded(None)
        if self.state in (S.STOPPED, S.EXITED, S.FATAL):
            self._cancelTimer()
            # What crashed leaders left (a daemon, found now or earlier) is given no more grace.
            self._killLeftovers(scan=True)
            return _succeeded(None)
        if self.state == S.BACKOFF:
            self._cancelTimer()
            self._killLeftovers(scan=True)
            self._stoppedBetween()
            return _succeeded(None)
        if self._stopping is not None:
            d = Deferred()
            self._stopWaiters.append(d)
            return d
        self._stopping = d = Deferred()
        self._stopWaiters.append(d)
        first = self.owner.beforeStop(self) if hooks and self.state == S.RUNNING else _succeeded(None)
        first.addBoth(lambda _: self._signalStop(restarting))
        return d

    def _signalStop(self, restarting: bool = False) -> None:
        self._cancelTimer()
        self._stopProbe()
        if self.state not in (S.STARTING, S.RUNNING):
            # It exited while the drain ran: no process to signal.  Between two processes
            # (EXITED, BACKOFF), an operator's stop still ends STOPPED, with no retry.
            if not restarting and self.state in (S.EXITED, S.BACKOFF):
                self._killLeftovers(scan=True)
                self._stoppedBetween()
            self._finishStop(changeState=self.state == S.STOPPING)
            return
        self._change(S.STOPPING)
        if not restarting:
            # Those waiting for this instance to be ready keep waiting across a restart.
            self._failWaiters(InstanceStopped(f"{self.name} was stopped"))
        leader = self.pid
        found = self.owner.os.members(leader, self.marker, self.members)
        self.members = found
        self.owner.membersChanged(self)
        self._stopGroup = leader
        self.owner.os.signal(found, self.deploy.stopSignalNumber, [leader] if leader else [])
        deadline = self.reactor.seconds() + self.deploy.stopwaitsecs
        self._timer = self.reactor.callLater(STOP_POLL, self._pollStop, deadline, False)

    def _stoppedBetween(self) -> None:
        """EXITED or BACKOFF -> STOPPED: stopped while no process of it ran."""
        self.stopTime = self.reactor.seconds()
        self._change(S.STOPPED)
        self._failWaiters(InstanceStopped(f"{self.name} was stopped"))

    def _pollStop(self, deadline: float, killed: bool) -> None:
        self._timer = None
        self.owner.os.reap()
        now = self.reactor.seconds()
        leaderGone = self._protocol is None
        if not killed and leaderGone:
            # Anything that joined (or escaped) since the signal was sent gets it too.
            fresh = self.owner.os.members(None, self.marker, self.members)
            extra = {p: t for p, t in fresh.items() if p not in self.members}
            if extra:
                self.members.update(extra)
                # Those in the leader's group had the group's signal (or joined it after, a
                # shutdown hook's helper): one stop signal each, never two.
                self.owner.os.signal(extra, self.deploy.stopSignalNumber,
                                     signalled=[self._stopGroup] if self._stopGroup else [])
        remaining = {p: t for p, t in self.members.items() if self.owner.os.alive(p, t or None)}
        if leaderGone and not remaining:
            self._finishStop()
            return
        if not killed and now >= deadline:
            pids = ", ".join(map(str, sorted(remaining)))
            self.owner.mainLog.write(
                "warning", f"killing {self.name} (pids {pids}) with SIGKILL: still alive "
                f"{self.deploy.stopwaitsecs:g}s after the stop signal", self.name)
            self.owner.os.signal(remaining, signal.SIGKILL, [self.pid] if self.pid else [])
            self.owner.os.killAll(self.marker)
            self._timer = self.reactor.callLater(STOP_POLL, self._pollStop, now + KILL_GRACE, True)
            return
        if killed and now >= deadline:
            log.error("{name}: processes {pids} survived SIGKILL", name=self.name, pids=sorted(remaining))
            self._finishStop()
            return
        self._timer = self.reactor.callLater(STOP_POLL, self._pollStop, deadline, killed)

    def _finishStop(self, changeState: bool = True) -> None:
        self.pid = None
        self.members = {}
        self.owner.membersChanged(self)
        if changeState and self.state == S.STOPPING:
            self.stopTime = self.reactor.seconds()
            self._change(S.STOPPED)
        self._stopping = None
        waiters, self._stopWaiters = self._stopWaiters, []
        for d in waiters:
            d.callback(None)

    def sendStdin(self, data: bytes) -> None:
        """Write C{data} to the running process's stdin pipe (C{Deploy(stdin=True)}).

        Raises L{NotRunning} when no process runs (or it is being stopped, as supervisord
        refuses a process it is killing), L{NoStdin} when the deploy gives no stdin pipe or the
        process has closed its end.
        """
        if self.state not in (S.STARTING, S.RUNNING) or self.transport is None or self._stopping:
            raise NotRunning(f"{self.name} is not running ({self.state.name})")
        if not self.deploy.stdin:
            raise NoStdin(f"{self.name} has no stdin pipe (Deploy(stdin=True) gives it one)")
        pipes = getattr(self.transport, "pipes", None)
        if pipes is not None and 0 not in pipes:
            raise NoStdin(f"{self.name} has closed its stdin")
        self.transport.writeToChild(0, data)

    def signal(self, sig: int) -> None:
        """Send C{sig} to the instance's process group."""
        if self.state not in RUNNING_STATES or not self.pid:
            raise StartRefused(f"{self.name} is not running ({self.state.name})")
        self.owner.os.signal({}, sig, [self.pid])

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def shutdown(self) -> None:
        """Forget timers (the service is going away and the process is already stopped)."""
        self._cancelTimer()
        self._stopProbe()
        self._killLeftovers(scan=True)
        self.log.close()


def _supervisorEnvironment(instance: Instance) -> dict[str, str]:
    """supervisord's variables, so C{supervisor.childutils.getRPCInterface(os.environ)} in a
    child (an event listener above all) finds the host's admin socket."""
    name, group = processNames(instance)
    env = {"SUPERVISOR_ENABLED": "1", "SUPERVISOR_PROCESS_NAME": name, "SUPERVISOR_GROUP_NAME": group}
    url = instance.owner.serverURL
    if url:
        env["SUPERVISOR_SERVER_URL"] = url
    return env


_environCache: tuple[dict[bytes, bytes], dict[str, str]] | None = None


def _inheritedEnvironment() -> dict[str, str]:
    """A copy of C{os.environ}, decoded once for as long as the environment stays the same.

    C{dict(os.environ)} decodes every variable again; a burst of 200 starts would pay that 200
    times.  The raw (bytes) table is compared instead: a C-level dict comparison.
    """
    global _environCache
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):
        return dict(os.environ)
    if _environCache is None or _environCache[0] != raw:
        _environCache = (dict(raw), dict(os.environ))
    return dict(_environCache[1])


def _succeeded(value: Any) -> Deferred:
    d = Deferred()
    d.callback(value)
    return d


def _failed(exc: Exception) -> Deferred:
    d = Deferred()
    d.errback(Failure(exc))
    return d


RefuseFn = Callable[[Instance], "str | None"]

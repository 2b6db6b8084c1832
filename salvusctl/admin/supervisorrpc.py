"""supervisord's C{supervisor.*} XML-RPC namespace over the host's L{ISupervisor}.

Method names, argument lists, struct fields, state codes and fault codes are supervisord's, so the
real C{supervisorctl} drives a Salvus host unchanged.  Salvus instance C{web:0} is supervisord's
process C{0} of group C{web}, which C{supervisorctl} prints as C{web:0}.
"""

from __future__ import annotations

import io
import os
import re
import signal as _signal
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure
from twisted.web.xmlrpc import Fault

import salvusctl
from salvusctl.admin.extensions import ILogClearing, IMainLog, IProcessStdin, IReconcilable
from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.logfiles import readFileRange, readRange, tailFileRange, tailRange
from salvusctl.admin.rpcbase import Namespace, operator, toFault
from salvusctl.admin.verbs import Reply
from salvusctl.supervisor.names import legacyIndex

__all__ = ["SupervisorNamespace", "processStruct", "API_VERSION", "RUNNING_STATES", "SIGNALLABLE_STATES"]

log = Logger()

API_VERSION = "3.0"
#: What getSupervisorVersion answers: the supervisord release whose API Salvus implements, so
#: clients that compare it (>= 3.x, >= 4) accept it, then Salvus's version as a PEP 440 local
#: part (C{packaging.version.Version} and C{LooseVersion} both parse it).
SUPERVISOR_VERSION = f"4.3.0+salvus.{salvusctl.__version__}"
RUNNING_STATES = (10, 20, 30)  # STARTING, RUNNING, BACKOFF
SIGNALLABLE_STATES = (10, 20, 40)  # STARTING, RUNNING, STOPPING
_MAX_INT = 2**31 - 1


def _capped(value: Any) -> int:
    try:
        return max(0, min(_MAX_INT, int(value or 0)))
    except (TypeError, ValueError):
        return 0


def processStruct(info: dict[str, Any]) -> dict[str, Any]:
    """supervisord's process info struct from an L{ISupervisor} info dict."""
    full = str(info.get("name", ""))
    group = str(info.get("group") or full.partition(":")[0])
    short = full.split(":", 1)[1] if full.startswith(group + ":") else full
    stdout_logfile = info.get("stdout_logfile") or info.get("logfile") or ""
    return {
        "name": short,
        "group": group,
        "start": _capped(info.get("start")),
        "stop": _capped(info.get("stop")),
        "now": _capped(info.get("now")),
        "state": int(info.get("statecode", 1000)),
        "statename": str(info.get("state", "UNKNOWN")),
        "spawnerr": str(info.get("spawnerr") or ""),
        "exitstatus": _capped(info.get("exitstatus")),
        "logfile": str(stdout_logfile),
        "stdout_logfile": str(stdout_logfile),
        "stderr_logfile": str(info.get("stderr_logfile") or ""),
        "pid": _capped(info.get("pid")),
        "description": str(info.get("description") or ""),
    }


def _signalNumber(value: Any) -> int:
    if isinstance(value, bool):
        raise rpcFault(Faults.BAD_SIGNAL, repr(value))
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(_signal, name, None)
        if not isinstance(number, int) or name.startswith("SIG_"):
            raise rpcFault(Faults.BAD_SIGNAL, value)
    else:
        raise rpcFault(Faults.BAD_SIGNAL, repr(value))
    if not 0 < int(number) < _signal.NSIG:
        raise rpcFault(Faults.BAD_SIGNAL, str(value))
    return int(number)


class SupervisorNamespace(Namespace):
    """supervisord's C{supervisor.*} API over the host's L{ISupervisor}."""

    def _sup(self) -> Any:
        return self.state.rpcService("supervisor")

    def _infos(self) -> list[dict[str, Any]]:
        return list(self._sup().instanceInfos())

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for info in self._infos():
            groups.setdefault(str(info.get("group") or info["name"].partition(":")[0]), []).append(
                info["name"]
            )
        return groups

    def _lookup(self, name: str) -> tuple[str, str | None]:
        """(group, instance) for a namespec; instance None for C{group:*}.  BAD_NAME if unknown.

        An instance answers to its own name (C{web:0}) and to supervisord's C{group:process}
        form, which for a deploy C{web} declared with C{group="g"} is C{g:web:0}: the name
        C{supervisorctl status} prints, so the one an operator types back.
        """
        groups = self._groups()
        group, sep, process = name.partition(":")
        if sep and process in ("", "*"):
            if group not in groups:
                raise rpcFault(Faults.BAD_NAME, name)
            return group, None
        owner = {i: g for g, members in groups.items() for i in members}
        if name in owner:
            return owner[name], name
        if sep and owner.get(process) == group:
            return group, process
        if sep and process in groups.get(group, ()):
            return group, process
        if legacyIndex(name) is not None:
            # Salvus's older spelling (web:0) of a process named web or web_00: the supervisor
            # resolves it, and says once in its log which name to use.
            try:
                info = self._sup().instanceInfo(name)
            except KeyError:
                pass
            else:
                return str(info.get("group") or info["name"]), str(info["name"])
        members = groups.get(name)
        if members and len(members) == 1:
            return name, members[0]
        if members:
            raise rpcFault(Faults.BAD_NAME, f"{name} has {len(members)} instances: use {name}:* or {name}:N")
        raise rpcFault(Faults.BAD_NAME, name)

    def _instanceInfo(self, instance: str) -> dict[str, Any]:
        try:
            return self._sup().instanceInfo(instance)
        except KeyError:
            raise rpcFault(Faults.BAD_NAME, instance)

    # -- supervisord's status methods ------------------------------------------------------------

    def xmlrpc_getAPIVersion(self) -> Reply[str]:
        """Return the version of the RPC API used by supervisord

        @return version id
        """
        return API_VERSION

    xmlrpc_getVersion = xmlrpc_getAPIVersion

    def xmlrpc_getSupervisorVersion(self) -> Reply[str]:
        """Return the version of supervisord whose API this host answers, with Salvus's own

        @return version id
        """
        return SUPERVISOR_VERSION

    def xmlrpc_getIdentification(self) -> Reply[str]:
        """Return the host's name

        @return identifier identifying string
        """
        return self.state.host_name

    def xmlrpc_getState(self) -> Reply[dict]:
        """Return current state of the host as a struct

        @return A struct with keys int statecode, string statename
        """
        return {"statecode": 1, "statename": "RUNNING"}

    def xmlrpc_getPID(self) -> Reply[int]:
        """Return the PID of the host process

        @return PID
        """
        return os.getpid()

    def mainLog(self) -> Any:
        """The supervisor, if it keeps a main log (L{IMainLog}); NO_FILE otherwise."""
        sup = self._sup()
        if not IMainLog.providedBy(sup):
            raise rpcFault(Faults.NO_FILE, "this host's supervisor keeps no main log")
        return sup

    def xmlrpc_readLog(self, offset: int, length: int) -> Reply[str]:
        """Read length bytes from the main log starting at offset

        The main log is the supervisor's own: spawns, exits, stops, signals, FATAL and why.
        A read returns at most 1 MiB (a negative offset: that many bytes from the end).

        @param offset offset to start reading from.
        @param length number of bytes to read from the log.
        @return Bytes of log
        """
        path = self.mainLog().mainLogPath()
        try:
            data = readFileRange(path, offset, length)
        except ValueError as e:
            raise rpcFault(Faults.BAD_ARGUMENTS, str(e))
        except FileNotFoundError:
            raise rpcFault(Faults.NO_FILE, path)
        except OSError as e:
            raise rpcFault(Faults.FAILED, f"{path}: {e.strerror}")
        return data.decode("utf-8", "replace")

    xmlrpc_readMainLog = xmlrpc_readLog

    @operator
    def xmlrpc_clearLog(self) -> Reply[bool]:
        """Clear the main log.

        @return always returns True unless error
        """
        try:
            self.mainLog().clearMainLog()
        except OSError as e:
            raise rpcFault(Faults.FAILED, f"main log: {e.strerror}")
        return True

    @operator
    def xmlrpc_shutdown(self, request) -> Reply[bool]:
        """Shut the host down, as a SIGTERM to its twistd does, once this call is answered

        @return always returns True unless error
        """
        from salvusctl.admin.hostcontrol import shutdownHost

        return shutdownHost(self.state, request, _caller(request))

    xmlrpc_shutdown.takesRequest = True

    @operator
    def xmlrpc_restart(self, request) -> Reply[bool]:
        """Restart in place: stop every program, read the config file again, start them

        @return always return True unless error
        """
        from salvusctl.admin.hostcontrol import restartHost

        return restartHost(self.state, request, _caller(request))

    xmlrpc_restart.takesRequest = True

    def xmlrpc_reloadConfig(self) -> Reply[list]:
        """Read the config file again (in a child process) and compare its process groups with
        the running ones; nothing changes until addProcessGroup / removeProcessGroup (update)

        @return [[added, changed, removed]]
        """
        reloader = self.state.reloader()
        if reloader is not None:
            from salvusctl.admin.processgroups import groupDiff
            from salvusctl.admin.salvusrpc import _reread

            sup = self._sup()
            if hasattr(sup, "deploys"):
                d = _reread(reloader.read)
                return d.addCallback(
                    lambda new: [groupDiff(dict(sup.deploys), new.declarations("supervisor"))])

            def shape(diff):
                part = diff.get("supervisor") or {}
                return [[list(part.get(k, [])) for k in ("added", "changed", "removed")]]

            return _reread(reloader.reread).addCallback(shape)
        sup = self._sup()
        if not IReconcilable.providedBy(sup):
            return [[[], [], []]]
        d = defer.maybeDeferred(sup.configDiff)
        d.addCallback(lambda diff: [[list(diff["added"]), list(diff["changed"]), list(diff["removed"])]])
        return d

    def _groupReloader(self, verb: str) -> Any:
        reloader = self.state.reloader()
        if reloader is None or not hasattr(self._sup(), "deploys"):
            raise rpcFault(Faults.NO_SERVICE, f"this host was not built from a config: it cannot {verb}")
        return reloader

    @operator
    def xmlrpc_addProcessGroup(self, name: str) -> Reply[bool]:
        """Add (and start, when autostart) a process group of the config file that does not run

        @param name name of process group to add
        @return true if successful
        """
        from salvusctl.admin.processgroups import withGroup
        from salvusctl.admin.salvusrpc import _reread
        from salvusctl.supervisor.reload import applyDeploys

        reloader = self._groupReloader("add process groups")
        sup = self._sup()
        if name in self._groups():
            raise rpcFault(Faults.ALREADY_ADDED, name)  # before reading: supervisord reads nothing
        log.info("adding process group {name}", name=name)
        d = _reread(lambda: applyDeploys(reloader,
            lambda new, running: withGroup(running, new.declarations("supervisor"), name)))

        def startFailed(failure):
            # supervisord adds the group and its processes fail on their own: the group is added
            if isinstance(failure.value, Fault):
                return failure
            added = [d for d in sup.deploys.values() if (d.groupName or d.name) == name]
            if not added:
                return failure
            log.warn("process group {name} added; its start failed: {why}", name=name,
                     why=failure.getErrorMessage())
            return True

        return d.addCallbacks(lambda _: True, startFailed)

    @operator
    def xmlrpc_removeProcessGroup(self, name: str) -> Reply[bool]:
        """Remove a stopped process group from the running configuration

        @param name name of process group to remove
        @return Indicates whether the removal was successful
        """
        from salvusctl.admin.processgroups import withoutGroup
        from salvusctl.admin.salvusrpc import _reread
        from salvusctl.supervisor.reload import applyDeploys

        reloader = self._groupReloader("remove process groups")

        def choose(new, running):
            codes = {i["name"]: int(i.get("statecode", 1000)) for i in self._infos()}
            return withoutGroup(running, name, codes)

        log.info("removing process group {name}", name=name)
        d = _reread(lambda: applyDeploys(reloader, choose, load=False))
        return d.addCallback(lambda _: True)

    def xmlrpc_getProcessInfo(self, name: str) -> Reply[dict]:
        """Get info about a process named name

        @param name The name of the process (or 'group:name')
        @return A structure containing data about the process
        """
        group, instance = self._lookup(name)
        if instance is None:
            raise rpcFault(Faults.BAD_NAME, name)
        return processStruct(self._instanceInfo(instance))

    def xmlrpc_getAllProcessInfo(self) -> Reply[list]:
        """Get info about all processes

        @return An array of process status results
        """
        structs = [processStruct(i) for i in self._infos()]
        structs.sort(key=lambda s: (s["group"], _natural(s["name"])))
        return structs

    def xmlrpc_getAllConfigInfo(self) -> Reply[list]:
        """Get info about all available process configurations (what supervisorctl avail shows):
        the running ones, and those of the config as last read that do not run

        @return An array of process config info structs
        """
        from salvusctl.admin.configinfo import configInfo

        out = []
        running = set()
        deploys = getattr(self._sup(), "deploys", {})
        for info in self._infos():
            struct = processStruct(info)
            name = str(info.get("deploy") or struct["group"])
            running.add(name)
            deploy = deploys.get(name)
            if deploy is None:
                deploy = _InfoDeploy(info)
            out.append(configInfo(deploy, struct["name"], struct["group"], True,
                                  struct["stdout_logfile"], struct["stderr_logfile"]))
        reloader = self.state.reloader()
        staged = reloader.staged() if reloader is not None else None
        if staged is not None:
            from salvusctl.supervisor.reload import deploysOf

            for deploy in deploysOf(staged.declarations("supervisor")):
                if deploy.name in running:
                    continue
                group = deploy.groupName or deploy.name
                for instance in deploy.instanceNames():
                    short = instance.split(":", 1)[1] if instance.startswith(group + ":") else instance
                    out.append(configInfo(deploy, short, group, False))
        out.sort(key=lambda r: (r["group"], _natural(r["name"])))
        return out

    # -- start / stop ----------------------------------------------------------------------------

    def _result(self, instance: str, code: int, description: str) -> dict[str, Any]:
        try:
            struct = processStruct(self._instanceInfo(instance))
            group, short = struct["group"], struct["name"]
        except Fault:
            group, _, short = instance.partition(":")
        return {"name": short or group, "group": group, "status": code, "description": description}

    def _each(self, instances: list[str], predicate: Callable, action: Callable, **kw) -> defer.Deferred:
        """Run C{action} on each instance that satisfies C{predicate}; supervisord's result array."""

        def one(instance: str) -> defer.Deferred:
            d = defer.maybeDeferred(action, instance, **kw)

            def ok(_):
                return self._result(instance, Faults.SUCCESS, "OK")

            def bad(failure):
                fault = failure.value if isinstance(failure.value, Fault) else toFault(failure)
                return self._result(instance, fault.faultCode, fault.faultString)

            return d.addCallbacks(ok, bad)

        chosen = []
        for instance in instances:
            try:
                info = self._instanceInfo(instance)
            except Fault:
                continue
            if predicate(int(info.get("statecode", 1000))):
                chosen.append(instance)
        return defer.gatherResults([one(i) for i in chosen])

    def _bulk(self, instances: list[str], starting: bool, action: Callable, wait: bool) -> Any:
        """A group or all-process start/stop through the supervisor's own bulk call.

        The supervisor orders the work (dependencies first on start, reverse on stop); the result
        array then reports, like supervisord's, each instance that needed the change.
        """
        if starting:
            chosen = [i for i in instances if self._statecode(i) not in RUNNING_STATES]
        else:
            chosen = [i for i in instances if self._statecode(i) in RUNNING_STATES]
        if not chosen:
            return []
        log.info("{verb} {names}", verb="starting" if starting else "stopping", names=", ".join(chosen))
        d = defer.maybeDeferred(action)
        if starting:
            # Answer once each has started or failed its first attempt, as supervisord does.
            d = self._firstFailure(chosen, d)
        if not wait:
            d.addErrback(lambda f: log.warn("bulk action failed: {why}", why=f.getErrorMessage()))
            return [self._result(i, Faults.SUCCESS, "OK") for i in chosen]

        def report(outcome):
            why = outcome.getErrorMessage() if isinstance(outcome, failure.Failure) else ""
            results = []
            for instance in chosen:
                info = self._instanceInfo(instance)
                code = int(info.get("statecode", 1000))
                if starting and code == 20:
                    results.append(self._result(instance, Faults.SUCCESS, "OK"))
                elif starting and info.get("spawnerr"):
                    fault = _spawnFault(instance, info["spawnerr"])
                    results.append(self._result(instance, fault.faultCode, fault.faultString))
                elif starting:
                    results.append(
                        self._result(
                            instance,
                            Faults.ABNORMAL_TERMINATION,
                            f"ABNORMAL_TERMINATION: {why or info.get('state')}",
                        )
                    )
                elif code not in RUNNING_STATES and code != 40:
                    results.append(self._result(instance, Faults.SUCCESS, "OK"))
                else:
                    results.append(
                        self._result(instance, Faults.FAILED, f"FAILED: {why or info.get('state')}")
                    )
            return results

        return d.addBoth(report)

    def _statecode(self, instance: str) -> int:
        try:
            return int(self._instanceInfo(instance).get("statecode", 1000))
        except Fault:
            return 1000

    def _groupMembers(self, name: str) -> list[str]:
        members = self._groups().get(name)
        if not members:
            raise rpcFault(Faults.BAD_NAME, name)
        return members

    def _allInstances(self) -> list[str]:
        return [i["name"] for i in self._infos()]

    @operator
    def xmlrpc_startProcess(self, name: str, wait: bool = True) -> Reply[bool]:
        """Start a process

        @param name Process name (or 'group:name', or 'group:*')
        @param wait Wait for process to be fully started
        @return Always true unless error
        """
        group, instance = self._lookup(name)
        if instance is None:
            return self.xmlrpc_startProcessGroup(group, wait)
        return self._startOne(instance, wait=bool(wait))

    def _startOne(self, instance: str, wait: bool = True) -> Any:
        """supervisord's answers: a spawn that fails (no such command, bad directory, unknown
        user, an exit within startsecs) is a fault at its first failed attempt, with C{spawnerr}
        set, while the instance goes on retrying in BACKOFF; not ABNORMAL_TERMINATION once every
        retry is spent."""
        info = self._instanceInfo(instance)
        if int(info.get("statecode", 1000)) in RUNNING_STATES:
            raise rpcFault(Faults.ALREADY_STARTED, instance)
        problem = getattr(self._sup(), "spawnProblem", None)
        problem = problem(instance) if problem is not None else None
        if problem is not None:
            fault = _spawnFault(instance, str(problem))
            if fault.faultCode != Faults.SPAWN_ERROR:
                raise fault  # supervisord refuses a command it cannot run before spawning
        log.info("starting {instance}", instance=instance)
        started = defer.maybeDeferred(self._sup().startInstance, instance)
        d = self._firstFailure([instance], started)

        def failed(failure):
            if isinstance(failure.value, Fault):
                return failure
            if isinstance(failure.value, KeyError):
                raise rpcFault(Faults.BAD_NAME, instance)
            after = self._instanceInfo(instance)
            if after.get("spawnerr"):
                raise _spawnFault(instance, after["spawnerr"])
            raise rpcFault(Faults.ABNORMAL_TERMINATION, f"{instance}: {failure.getErrorMessage()}")

        d.addCallbacks(lambda _: True, failed)
        if not wait:
            if d.called:
                return d  # failed at once (supervisord checks the spawn before answering)
            started.addErrback(
                lambda f: log.warn("start of {instance} failed: {why}", instance=instance, why=f.value)
            )
            d.addErrback(lambda f: None)
            return True
        return d

    def _firstFailure(self, instances: list[str], started: defer.Deferred) -> defer.Deferred:
        """Fires with C{started}'s outcome, or with a spawn fault as soon as one of C{instances}
        enters BACKOFF or FATAL (then every one of them has, for a group, or is ready)."""
        sup = self._sup()
        result: defer.Deferred = defer.Deferred()
        waiting = set(instances)
        failedOne: list[str] = []

        def settle(outcome: Any) -> Any:
            if not result.called:
                if hasattr(sup, "removeObserver"):
                    sup.removeObserver(observer)
                result.callback(outcome) if not isinstance(outcome, failure.Failure) else \
                    result.errback(outcome)
            return None

        def check(name: str, code: int, ready: bool, spawnerr: str) -> None:
            if name not in waiting:
                return
            if code in (30, 200):
                waiting.discard(name)
                failedOne.append(name)
            elif code == 20 and ready:
                waiting.discard(name)
            if not waiting and failedOne:
                if len(instances) == 1:
                    settle(failure.Failure(_spawnFault(name, spawnerr)))
                else:
                    settle(None)

        def observer(name, old, new, info):
            check(name, int(new), bool(info.get("ready")), str(info.get("spawnerr") or ""))

        if hasattr(sup, "addObserver"):
            sup.addObserver(observer)
        for name in instances:
            if not result.called:
                try:
                    now = self._instanceInfo(name)
                except Fault:
                    continue
                check(name, int(now.get("statecode", 1000)), bool(now.get("ready")),
                      str(now.get("spawnerr") or ""))
        started.addBoth(settle)
        return result

    @operator
    def xmlrpc_startProcessGroup(self, name: str, wait: bool = True) -> Reply[list]:
        """Start all processes in the group named 'name'

        @param name The group name
        @param wait Wait for each process to be fully started
        @return An array of process status info structs
        """
        members = self._groupMembers(name)
        return self._bulk(members, True, lambda: self._sup().startGroup(name), bool(wait))

    @operator
    def xmlrpc_startAllProcesses(self, wait: bool = True) -> Reply[list]:
        """Start all processes listed in the configuration (autostart=False ones too)

        @param wait Wait for each process to be fully started
        @return An array of process status info structs
        """
        return self._bulk(self._allInstances(), True, lambda: self._sup().startAll(everything=True),
                          bool(wait))

    def _stopOne(self, instance: str, wait: bool = True) -> Any:
        info = self._instanceInfo(instance)
        if int(info.get("statecode", 1000)) not in RUNNING_STATES:
            raise rpcFault(Faults.NOT_RUNNING, instance)
        log.info("stopping {instance}", instance=instance)
        d = defer.maybeDeferred(self._sup().stopInstance, instance)

        def failed(failure):
            raise rpcFault(Faults.FAILED, f"{instance}: {failure.getErrorMessage()}")

        d.addCallbacks(lambda _: True, failed)
        if not wait:
            d.addErrback(
                lambda f: log.warn("stop of {instance} failed: {why}", instance=instance, why=f.value)
            )
            return True
        return d

    @operator
    def xmlrpc_stopProcess(self, name: str, wait: bool = True) -> Reply[bool]:
        """Stop a process named by name

        @param name The name of the process to stop (or 'group:name')
        @param wait Wait for the process to be fully stopped
        @return Always return True unless error
        """
        group, instance = self._lookup(name)
        if instance is None:
            return self.xmlrpc_stopProcessGroup(group, wait)
        return self._stopOne(instance, wait=bool(wait))

    @operator
    def xmlrpc_stopProcessGroup(self, name: str, wait: bool = True) -> Reply[list]:
        """Stop all processes in the process group named 'name'

        @param name The group name
        @param wait Wait for each process to be fully stopped
        @return An array of process status info structs
        """
        members = self._groupMembers(name)
        return self._bulk(members, False, lambda: self._sup().stopGroup(name), bool(wait))

    @operator
    def xmlrpc_stopAllProcesses(self, wait: bool = True) -> Reply[list]:
        """Stop all processes in the process list

        @param wait Wait for each process to be fully stopped
        @return An array of process status info structs
        """
        result = self._bulk(
            list(reversed(self._allInstances())), False, lambda: self._sup().stopAll(), bool(wait)
        )
        # stopped in reverse start order; reported by name, as supervisord reports (lexically)
        return defer.maybeDeferred(lambda: result).addCallback(
            lambda rows: sorted(rows, key=lambda r: (r["group"], _natural(r["name"]))))

    # -- signals ---------------------------------------------------------------------------------

    def _signalOne(self, instance: str, signal: int) -> bool:
        info = self._instanceInfo(instance)
        if int(info.get("statecode", 1000)) not in SIGNALLABLE_STATES:
            raise rpcFault(Faults.NOT_RUNNING, instance)
        self._sup().signalInstance(instance, signal)
        return True

    @operator
    def xmlrpc_signalProcess(self, name: str, signal: str | int) -> Reply[bool]:
        """Send an arbitrary UNIX signal to the process named by name

        @param name Name of the process to signal (or 'group:name')
        @param signal Signal to send, as name ('HUP') or number ('1')
        @return true unless error
        """
        group, instance = self._lookup(name)
        number = _signalNumber(signal)
        if instance is None:
            return self.xmlrpc_signalProcessGroup(group, number)
        return self._signalOne(instance, number)

    @operator
    def xmlrpc_signalProcessGroup(self, name: str, signal: str | int) -> Reply[list]:
        """Send a signal to all processes in the group named 'name'

        @param name The group name
        @param signal Signal to send, as name ('HUP') or number ('1')
        @return An array of process status info structs
        """
        number = _signalNumber(signal)
        return self._each(
            self._groupMembers(name), lambda c: c in SIGNALLABLE_STATES, self._signalOne, signal=number
        )

    @operator
    def xmlrpc_signalAllProcesses(self, signal: str | int) -> Reply[list]:
        """Send a signal to all processes in the process list

        @param signal Signal to send, as name ('HUP') or number ('1')
        @return An array of process status info structs
        """
        number = _signalNumber(signal)
        return self._each(
            self._allInstances(), lambda c: c in SIGNALLABLE_STATES, self._signalOne, signal=number
        )

    # -- stdin -----------------------------------------------------------------------------------

    @operator
    def xmlrpc_sendProcessStdin(self, name: str, chars: str | xmlrpclib.Binary) -> Reply[bool]:
        """Send a string of chars to the stdin of the process name (its deploy needs stdin=True)

        @param name The process name to send to (or 'group:name')
        @param chars The character data to send to the process
        @return Always return True unless error
        """
        if isinstance(chars, xmlrpclib.Binary):
            chars = chars.data
        if not isinstance(chars, (str, bytes)):
            raise rpcFault(Faults.INCORRECT_PARAMETERS, repr(chars))
        data = chars.encode("utf-8") if isinstance(chars, str) else chars
        instance = self.instanceFor(name)
        sup = self._sup()
        if not IProcessStdin.providedBy(sup):
            raise rpcFault(Faults.NO_FILE, f"{instance}: this supervisor gives no process a stdin pipe")
        from salvusctl.supervisor.process import NoStdin, NotRunning

        try:
            sup.sendStdin(instance, data)
        except KeyError:
            raise rpcFault(Faults.BAD_NAME, instance)
        except NotRunning:
            raise rpcFault(Faults.NOT_RUNNING, instance)
        except NoStdin as e:
            raise rpcFault(Faults.NO_FILE, str(e))
        return True

    @operator
    def xmlrpc_sendRemoteCommEvent(self, type: str, data: str) -> Reply[bool]:
        """Send an event that will be received by event listener subprocesses subscribing to
        the RemoteCommunicationEvent.

        @param type String for the "type" key in the event header
        @param data Data for the event body
        @return Always return True unless error
        """
        if isinstance(type, xmlrpclib.Binary):
            type = type.data.decode("utf-8", "replace")
        if isinstance(data, xmlrpclib.Binary):
            data = data.data.decode("utf-8", "replace")
        if not isinstance(type, str) or not isinstance(data, str):
            raise rpcFault(Faults.INCORRECT_PARAMETERS, "type and data must be strings")
        sup = self._sup()
        send = getattr(sup, "sendRemoteCommEvent", None)
        if send is None:
            raise rpcFault(Faults.FAILED, "this supervisor has no event listeners")
        send(type, data)
        return True

    # -- logs ------------------------------------------------------------------------------------

    def logFile(self, instance: str, stream: str) -> str | None:
        """The path of an instance's C{stream} log file, or None when it has none (yet)."""
        info = self._instanceInfo(instance)
        path = info.get(f"{stream}_logfile") or (info.get("logfile") if stream == "stdout" else "")
        return path if path and os.path.isfile(path) else None

    def _logRange(self, instance: str, stream: str, read: Callable[[Any], Any]) -> defer.Deferred:
        """C{read(binary file)} over the log file (one seek, one bounded read), or over the tail's
        bytes for a supervisor that keeps no file."""
        path = self.logFile(instance, stream)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    return defer.succeed(read(f))
            except ValueError as e:
                return defer.fail(rpcFault(Faults.BAD_ARGUMENTS, str(e)))
            except OSError as e:
                return defer.fail(rpcFault(Faults.FAILED, f"{instance}: {e.strerror}"))
        d = defer.maybeDeferred(self._sup().tailLog, instance, 5000, stream)
        d.addCallback(lambda lines: "".join(line + "\n" for line in lines).encode("utf-8", "replace"))

        def inMemory(data: bytes):
            try:
                return read(io.BytesIO(data))
            except ValueError as e:
                raise rpcFault(Faults.BAD_ARGUMENTS, str(e))

        return d.addCallback(inMemory)

    def mainLogTail(self, length: int) -> bytes:
        """The last C{length} bytes of the main log (what C{maintail -f} shows first)."""
        try:
            return tailFileRange(self.mainLog().mainLogPath(), 0, length)[0]
        except FileNotFoundError:
            return b""

    def logTail(self, instance: str, stream: str, length: int) -> defer.Deferred:
        """The last C{length} bytes of an instance's log (what C{tail -f} shows first)."""
        return self._logRange(instance, stream, lambda f: tailRange(f, 0, length)[0])

    def instanceFor(self, name: str) -> str:
        """The one instance a name designates; BAD_NAME for groups and unknown names."""
        group, instance = self._lookup(name)
        if instance is None:
            raise rpcFault(Faults.BAD_NAME, name)
        return instance

    def _read(self, name, offset, length, stream):
        instance = self.instanceFor(name)
        d = self._logRange(instance, stream, lambda f: readRange(f, offset, length))
        return d.addCallback(lambda data: data.decode("utf-8", "replace"))

    def _tail(self, name, offset, length, stream):
        instance = self.instanceFor(name)
        if offset < 0 or length < 0:
            raise rpcFault(Faults.BAD_ARGUMENTS, "offset and length must not be negative")

        def tail(f):
            data, size, overflow = tailRange(f, offset, length)
            return [data.decode("utf-8", "replace"), size, overflow]

        return self._logRange(instance, stream, tail)

    def xmlrpc_readProcessStdoutLog(self, name: str, offset: int, length: int) -> Reply[str]:
        """Read length bytes from name's stdout log starting at offset

        @param name the name of the process (or 'group:name')
        @param offset offset to start reading from.
        @param length number of bytes to read from the log.
        @return Bytes of log
        """
        return self._read(name, offset, length, "stdout")

    xmlrpc_readProcessLog = xmlrpc_readProcessStdoutLog

    def xmlrpc_readProcessStderrLog(self, name: str, offset: int, length: int) -> Reply[str]:
        """Read length bytes from name's stderr log starting at offset

        @param name the name of the process (or 'group:name')
        @param offset offset to start reading from.
        @param length number of bytes to read from the log.
        @return Bytes of log
        """
        return self._read(name, offset, length, "stderr")

    def xmlrpc_tailProcessStdoutLog(self, name: str, offset: int, length: int) -> Reply[list]:
        """Tail the stdout log: up to length bytes from offset, jumping to the end on overflow

        @param name the name of the process (or 'group:name')
        @param offset offset to start reading from
        @param length maximum number of bytes to return
        @return [string bytes, int offset, bool overflow]
        """
        return self._tail(name, offset, length, "stdout")

    xmlrpc_tailProcessLog = xmlrpc_tailProcessStdoutLog

    def xmlrpc_tailProcessStderrLog(self, name: str, offset: int, length: int) -> Reply[list]:
        """Tail the stderr log: up to length bytes from offset, jumping to the end on overflow

        @param name the name of the process (or 'group:name')
        @param offset offset to start reading from
        @param length maximum number of bytes to return
        @return [string bytes, int offset, bool overflow]
        """
        return self._tail(name, offset, length, "stderr")

    def _clearOne(self, instance: str) -> bool:
        sup = self._sup()
        if ILogClearing.providedBy(sup):
            try:
                sup.clearLogs(instance)
            except KeyError:
                raise rpcFault(Faults.BAD_NAME, instance)
            except OSError as e:
                raise rpcFault(Faults.FAILED, f"{instance}: {e.strerror}")
            return True
        info = self._instanceInfo(instance)
        paths = [p for p in (info.get("stdout_logfile"), info.get("stderr_logfile")) if p]
        if not paths:
            raise rpcFault(Faults.NO_FILE, instance)
        for path in paths:
            try:
                with open(path, "r+b") as f:
                    f.truncate(0)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise rpcFault(Faults.FAILED, f"{instance}: {e.strerror}")
        return True

    @operator
    def xmlrpc_clearProcessLogs(self, name: str) -> Reply[bool]:
        """Clear the stdout and stderr logs for the named process

        @param name The name of the process (or 'group:name')
        @return Always True unless error
        """
        return self._clearOne(self.instanceFor(name))

    xmlrpc_clearProcessLog = xmlrpc_clearProcessLogs

    @operator
    def xmlrpc_clearAllProcessLogs(self) -> Reply[list]:
        """Clear all process log files

        @return An array of process status info structs
        """
        return self._each(self._allInstances(), lambda c: True, self._clearOne)


def _caller(request: Any) -> str:
    from salvusctl.admin.auth import currentUser

    try:
        return str(currentUser(request).name)
    except Exception:
        return "an operator"


def _spawnFault(instance: str, spawnerr: str) -> Fault:
    """supervisord's fault for a failed start: NO_FILE and NOT_EXECUTABLE for a command it
    cannot run (its C{startProcess} checks the command first), SPAWN_ERROR for the rest."""
    if spawnerr.startswith("can't find command") or spawnerr == "command is empty":
        return rpcFault(Faults.NO_FILE, spawnerr)
    if spawnerr.startswith("command at "):
        return rpcFault(Faults.NOT_EXECUTABLE, spawnerr)
    return rpcFault(Faults.SPAWN_ERROR, f"{instance}: {spawnerr}")


class _InfoDeploy:
    """The settings an info dict carries, for a supervisor that keeps no deploys (a fake)."""

    def __init__(self, info: dict[str, Any]):
        self.autostart = bool(info.get("autostart", True))
        self.priority = info.get("priority", 999)
        self.command = str(info.get("command") or "")
        self.directory = str(info.get("directory") or "")


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))

"""XML-RPC at C{/RPC2}: supervisord's C{supervisor.*} and C{system.*} API, plus C{salvus.*}.

C{supervisor.*} keeps supervisord's method names, argument lists, struct fields, state codes and
fault codes, so the real C{supervisorctl} drives a Salvus host unchanged.  Salvus instance C{web:0}
is supervisord's process C{0} of group C{web}, which C{supervisorctl} prints as C{web:0}.

Every call goes through L{RPCRoot.lookupProcedure}: the method is found, the caller's role is
checked (viewers read, operators act), the arguments are bound against the method's signature, and
any error becomes a Fault with a one-line message — never a traceback or a dropped connection.
"""

from __future__ import annotations

import inspect
import os
import re
import signal as _signal
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure
from twisted.web import server
from twisted.web.xmlrpc import XMLRPC, Fault

import salvusctl
from salvusctl.admin.auth import currentUser
from salvusctl.admin.extensions import ILogClearing, IReconcilable
from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.state import AdminState

__all__ = ["RPCRoot", "operator", "processStruct", "API_VERSION", "plain"]

log = Logger()

API_VERSION = "3.0"
RUNNING_STATES = (10, 20, 30)  # STARTING, RUNNING, BACKOFF
SIGNALLABLE_STATES = (10, 20, 40)  # STARTING, RUNNING, STOPPING
_XML_TYPES = (b"text/xml", b"application/xml")
_MAX_INT = 2**31 - 1
MAX_MULTICALL = 1000


def operator(fn: Callable) -> Callable:
    """Mark an XML-RPC method as an action: only operators may call it."""
    fn.requiresOperator = True
    return fn


def plain(value: Any) -> Any:
    """Make C{value} marshallable: tuples to lists, keys to str, huge ints to float."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if -_MAX_INT - 1 <= value <= _MAX_INT else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be a string, not {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be an integer, not {type(value).__name__}")
    return value


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be a number, not {type(value).__name__}")
    return float(value)


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


def _readBytes(data: bytes, offset: int, length: int) -> bytes:
    """supervisord's C{readFile} over bytes: negative offset reads from the end."""
    if offset < 0:
        if length:
            raise rpcFault(Faults.BAD_ARGUMENTS, "a negative offset needs length 0")
        return data[max(0, len(data) + offset) :]
    if length < 0:
        raise rpcFault(Faults.BAD_ARGUMENTS, "length must not be negative")
    return data[offset:] if length == 0 else data[offset : offset + length]


def _tailBytes(data: bytes, offset: int, length: int) -> list[Any]:
    """supervisord's C{tailFile} over bytes: [text, next offset, overflow]."""
    size = len(data)
    overflow = False
    if size > offset + length:
        overflow = True
        offset = size - 1
    if offset + length > size:
        if offset > size - 1:
            length = 0
        offset = size - length
    offset = max(0, offset)
    length = max(0, length)
    chunk = data[offset : offset + length] if length else b""
    return [chunk.decode("utf-8", "replace"), size, overflow]


class _Namespace:
    """A group of XML-RPC methods (C{xmlrpc_NAME}) sharing the admin state."""

    def __init__(self, state: AdminState):
        self.state = state

    def methods(self) -> dict[str, Callable]:
        return {
            name[len("xmlrpc_") :]: getattr(self, name) for name in dir(self) if name.startswith("xmlrpc_")
        }


class SupervisorNamespace(_Namespace):
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

    def _lookup(self, name: Any) -> tuple[str, str | None]:
        """(group, instance) for a namespec; instance None for C{group:*}.  BAD_NAME if unknown."""
        name = _str(name, "name")
        groups = self._groups()
        group, sep, process = name.partition(":")
        if sep and process in ("", "*"):
            if group not in groups:
                raise rpcFault(Faults.BAD_NAME, name)
            return group, None
        if sep:
            if name not in groups.get(group, ()):
                raise rpcFault(Faults.BAD_NAME, name)
            return group, name
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

    def xmlrpc_getAPIVersion(self) -> str:
        """Return the version of the RPC API used by supervisord

        @return string version id
        """
        return API_VERSION

    xmlrpc_getVersion = xmlrpc_getAPIVersion

    def xmlrpc_getSupervisorVersion(self) -> str:
        """Return the version of the Salvus host answering

        @return string version id
        """
        return salvusctl.__version__

    def xmlrpc_getIdentification(self) -> str:
        """Return the host's name

        @return string identifier identifying string
        """
        return self.state.host_name

    def xmlrpc_getState(self) -> dict[str, Any]:
        """Return current state of the host as a struct

        @return struct A struct with keys int statecode, string statename
        """
        return {"statecode": 1, "statename": "RUNNING"}

    def xmlrpc_getPID(self) -> int:
        """Return the PID of the host process

        @return int PID
        """
        return os.getpid()

    def xmlrpc_readLog(self, offset, length):
        """Read the main log (Salvus logs through twistd; not readable over XML-RPC)

        @param int offset offset to start reading from.
        @param int length number of bytes to read from the log.
        @return string result Bytes of log
        """
        raise rpcFault(Faults.NO_FILE, "the host logs through twistd; read its log file")

    xmlrpc_readMainLog = xmlrpc_readLog

    @operator
    def xmlrpc_clearLog(self):
        """Clear the main log (not available: see readLog)

        @return boolean result always returns True unless error
        """
        raise rpcFault(Faults.NO_FILE, "the host logs through twistd; rotate its log file")

    @operator
    def xmlrpc_shutdown(self):
        """Shut down the host (refused: stop twistd through the init system)

        @return boolean result always returns True unless error
        """
        raise rpcFault(Faults.FAILED, "shutdown is not offered over XML-RPC; stop the host's twistd")

    @operator
    def xmlrpc_restart(self):
        """Restart the host (refused: restart twistd through the init system)

        @return boolean result always return True unless error
        """
        raise rpcFault(Faults.FAILED, "restart is not offered over XML-RPC; restart the host's twistd")

    def xmlrpc_reloadConfig(self):
        """Compare the declared deploys with the running ones (nothing is changed)

        @return array result [[added, changed, removed]]
        """
        sup = self._sup()
        if not IReconcilable.providedBy(sup):
            return [[[], [], []]]
        d = defer.maybeDeferred(sup.configDiff)
        d.addCallback(lambda diff: [[list(diff["added"]), list(diff["changed"]), list(diff["removed"])]])
        return d

    def xmlrpc_getProcessInfo(self, name):
        """Get info about a process named name

        @param string name The name of the process (or 'group:name')
        @return struct result A structure containing data about the process
        """
        group, instance = self._lookup(name)
        if instance is None:
            raise rpcFault(Faults.BAD_NAME, name)
        return processStruct(self._instanceInfo(instance))

    def xmlrpc_getAllProcessInfo(self):
        """Get info about all processes

        @return array result An array of process status results
        """
        structs = [processStruct(i) for i in self._infos()]
        structs.sort(key=lambda s: (s["group"], _natural(s["name"])))
        return structs

    # -- start / stop ----------------------------------------------------------------------------

    def _result(self, instance: str, code: int, description: str) -> dict[str, Any]:
        group, _, short = instance.partition(":")
        return {"name": short or group, "group": group, "status": code, "description": description}

    def _each(self, instances: list[str], predicate: Callable, action: Callable, **kw) -> defer.Deferred:
        """Run C{action} on each instance that satisfies C{predicate}; supervisord's result array."""

        def one(instance: str) -> defer.Deferred:
            d = defer.maybeDeferred(action, instance, **kw)

            def ok(_):
                return self._result(instance, Faults.SUCCESS, "OK")

            def bad(failure):
                fault = failure.value if isinstance(failure.value, Fault) else _toFault(failure)
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
                    results.append(
                        self._result(instance, Faults.SPAWN_ERROR, f"SPAWN_ERROR: {info['spawnerr']}")
                    )
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

    def _groupMembers(self, name: Any) -> list[str]:
        name = _str(name, "name")
        members = self._groups().get(name)
        if not members:
            raise rpcFault(Faults.BAD_NAME, name)
        return members

    def _allInstances(self) -> list[str]:
        return [i["name"] for i in self._infos()]

    @operator
    def xmlrpc_startProcess(self, name, wait=True):
        """Start a process

        @param string name Process name (or 'group:name', or 'group:*')
        @param boolean wait Wait for process to be fully started
        @return boolean result Always true unless error
        """
        group, instance = self._lookup(name)
        if instance is None:
            return self.xmlrpc_startProcessGroup(group, wait)
        return self._startOne(instance, wait=bool(wait))

    def _startOne(self, instance: str, wait: bool = True) -> Any:
        info = self._instanceInfo(instance)
        if int(info.get("statecode", 1000)) in RUNNING_STATES:
            raise rpcFault(Faults.ALREADY_STARTED, instance)
        log.info("starting {instance}", instance=instance)
        d = defer.maybeDeferred(self._sup().startInstance, instance)

        def failed(failure):
            if isinstance(failure.value, KeyError):
                raise rpcFault(Faults.BAD_NAME, instance)
            after = self._instanceInfo(instance)
            if after.get("spawnerr"):
                raise rpcFault(Faults.SPAWN_ERROR, f"{instance}: {after['spawnerr']}")
            raise rpcFault(Faults.ABNORMAL_TERMINATION, f"{instance}: {failure.getErrorMessage()}")

        d.addCallbacks(lambda _: True, failed)
        if not wait:
            d.addErrback(
                lambda f: log.warn("start of {instance} failed: {why}", instance=instance, why=f.value)
            )
            return True
        return d

    @operator
    def xmlrpc_startProcessGroup(self, name, wait=True):
        """Start all processes in the group named 'name'

        @param string name The group name
        @param boolean wait Wait for each process to be fully started
        @return array result An array of process status info structs
        """
        members = self._groupMembers(name)
        return self._bulk(members, True, lambda: self._sup().startDeploy(name), bool(wait))

    @operator
    def xmlrpc_startAllProcesses(self, wait=True):
        """Start all processes listed in the configuration

        @param boolean wait Wait for each process to be fully started
        @return array result An array of process status info structs
        """
        return self._bulk(self._allInstances(), True, lambda: self._sup().startAll(), bool(wait))

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
    def xmlrpc_stopProcess(self, name, wait=True):
        """Stop a process named by name

        @param string name The name of the process to stop (or 'group:name')
        @param boolean wait Wait for the process to be fully stopped
        @return boolean result Always return True unless error
        """
        group, instance = self._lookup(name)
        if instance is None:
            return self.xmlrpc_stopProcessGroup(group, wait)
        return self._stopOne(instance, wait=bool(wait))

    @operator
    def xmlrpc_stopProcessGroup(self, name, wait=True):
        """Stop all processes in the process group named 'name'

        @param string name The group name
        @param boolean wait Wait for each process to be fully stopped
        @return array result An array of process status info structs
        """
        members = self._groupMembers(name)
        return self._bulk(members, False, lambda: self._sup().stopDeploy(name), bool(wait))

    @operator
    def xmlrpc_stopAllProcesses(self, wait=True):
        """Stop all processes in the process list

        @param boolean wait Wait for each process to be fully stopped
        @return array result An array of process status info structs
        """
        return self._bulk(
            list(reversed(self._allInstances())), False, lambda: self._sup().stopAll(), bool(wait)
        )

    # -- signals ---------------------------------------------------------------------------------

    def _signalOne(self, instance: str, signal: int) -> bool:
        info = self._instanceInfo(instance)
        if int(info.get("statecode", 1000)) not in SIGNALLABLE_STATES:
            raise rpcFault(Faults.NOT_RUNNING, instance)
        self._sup().signalInstance(instance, signal)
        return True

    @operator
    def xmlrpc_signalProcess(self, name, signal):
        """Send an arbitrary UNIX signal to the process named by name

        @param string name Name of the process to signal (or 'group:name')
        @param string signal Signal to send, as name ('HUP') or number ('1')
        @return boolean
        """
        group, instance = self._lookup(name)
        number = _signalNumber(signal)
        if instance is None:
            return self.xmlrpc_signalProcessGroup(group, number)
        return self._signalOne(instance, number)

    @operator
    def xmlrpc_signalProcessGroup(self, name, signal):
        """Send a signal to all processes in the group named 'name'

        @param string name The group name
        @param string signal Signal to send, as name ('HUP') or number ('1')
        @return array
        """
        number = _signalNumber(signal)
        return self._each(
            self._groupMembers(name), lambda c: c in SIGNALLABLE_STATES, self._signalOne, signal=number
        )

    @operator
    def xmlrpc_signalAllProcesses(self, signal):
        """Send a signal to all processes in the process list

        @param string signal Signal to send, as name ('HUP') or number ('1')
        @return array An array of process status info structs
        """
        number = _signalNumber(signal)
        return self._each(
            self._allInstances(), lambda c: c in SIGNALLABLE_STATES, self._signalOne, signal=number
        )

    # -- logs ------------------------------------------------------------------------------------

    def logData(self, instance: str, stream: str) -> defer.Deferred:
        """An instance's captured output as bytes: its log file if there is one, else the tail."""
        info = self._instanceInfo(instance)
        path = info.get(f"{stream}_logfile") or (info.get("logfile") if stream == "stdout" else "")
        if path and os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    return defer.succeed(f.read())
            except OSError as e:
                return defer.fail(rpcFault(Faults.FAILED, f"{instance}: {e.strerror}"))
        d = defer.maybeDeferred(self._sup().tailLog, instance, 5000, stream)
        d.addCallback(lambda lines: "".join(line + "\n" for line in lines).encode("utf-8", "replace"))
        return d

    def instanceFor(self, name: Any) -> str:
        """The one instance a name designates; BAD_NAME for groups and unknown names."""
        group, instance = self._lookup(name)
        if instance is None:
            raise rpcFault(Faults.BAD_NAME, name)
        return instance

    def _read(self, name, offset, length, stream):
        instance = self.instanceFor(name)
        offset, length = _int(offset, "offset"), _int(length, "length")
        d = self.logData(instance, stream)
        return d.addCallback(lambda data: _readBytes(data, offset, length).decode("utf-8", "replace"))

    def _tail(self, name, offset, length, stream):
        instance = self.instanceFor(name)
        offset, length = _int(offset, "offset"), _int(length, "length")
        if offset < 0 or length < 0:
            raise rpcFault(Faults.BAD_ARGUMENTS, "offset and length must not be negative")
        return self.logData(instance, stream).addCallback(lambda data: _tailBytes(data, offset, length))

    def xmlrpc_readProcessStdoutLog(self, name, offset, length):
        """Read length bytes from name's stdout log starting at offset

        @param string name the name of the process (or 'group:name')
        @param int offset offset to start reading from.
        @param int length number of bytes to read from the log.
        @return string result Bytes of log
        """
        return self._read(name, offset, length, "stdout")

    xmlrpc_readProcessLog = xmlrpc_readProcessStdoutLog

    def xmlrpc_readProcessStderrLog(self, name, offset, length):
        """Read length bytes from name's stderr log starting at offset

        @param string name the name of the process (or 'group:name')
        @param int offset offset to start reading from.
        @param int length number of bytes to read from the log.
        @return string result Bytes of log
        """
        return self._read(name, offset, length, "stderr")

    def xmlrpc_tailProcessStdoutLog(self, name, offset, length):
        """Tail the stdout log: up to length bytes from offset, jumping to the end on overflow

        @param string name the name of the process (or 'group:name')
        @param int offset offset to start reading from
        @param int length maximum number of bytes to return
        @return array result [string bytes, int offset, bool overflow]
        """
        return self._tail(name, offset, length, "stdout")

    xmlrpc_tailProcessLog = xmlrpc_tailProcessStdoutLog

    def xmlrpc_tailProcessStderrLog(self, name, offset, length):
        """Tail the stderr log: up to length bytes from offset, jumping to the end on overflow

        @param string name the name of the process (or 'group:name')
        @param int offset offset to start reading from
        @param int length maximum number of bytes to return
        @return array result [string bytes, int offset, bool overflow]
        """
        return self._tail(name, offset, length, "stderr")

    def _clearOne(self, instance: str) -> bool:
        sup = self._sup()
        if ILogClearing.providedBy(sup):
            sup.clearLogs(instance)
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
    def xmlrpc_clearProcessLogs(self, name):
        """Clear the stdout and stderr logs for the named process

        @param string name The name of the process (or 'group:name')
        @return boolean result Always True unless error
        """
        return self._clearOne(self.instanceFor(name))

    xmlrpc_clearProcessLog = xmlrpc_clearProcessLogs

    @operator
    def xmlrpc_clearAllProcessLogs(self):
        """Clear all process log files

        @return array result An array of process status info structs
        """
        return self._each(self._allInstances(), lambda c: True, self._clearOne)


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _toFault(failure) -> Fault:
    """Any failure as a one-line Fault (unexpected errors are logged with their traceback)."""
    value = failure.value
    if isinstance(value, Fault):
        return value
    if isinstance(value, KeyError):
        return rpcFault(Faults.BAD_NAME, str(value.args[0]) if value.args else "unknown name")
    if isinstance(value, (ValueError, TypeError)):
        return rpcFault(Faults.BAD_ARGUMENTS, str(value))
    log.failure("XML-RPC method failed", failure)
    return rpcFault(Faults.FAILED, f"{type(value).__name__}: {value}")


class SystemNamespace(_Namespace):
    """supervisord's C{system.*}: introspection and multicall."""

    def __init__(self, state: AdminState, root: RPCRoot):
        super().__init__(state)
        self.root = root

    def xmlrpc_listMethods(self):
        """Return an array listing the available method names

        @return array result An array of method names available (strings).
        """
        return sorted(self.root.allMethods())

    def _method(self, name: Any) -> Callable:
        method = self.root.allMethods().get(_str(name, "name"))
        if method is None:
            raise rpcFault(Faults.SIGNATURE_UNSUPPORTED, name)
        return method

    def xmlrpc_methodHelp(self, name):
        """Return a string showing the method's documentation

        @param string name The name of the method.
        @return string result The documentation for the method name.
        """
        return inspect.getdoc(self._method(name)) or ""

    def xmlrpc_methodSignature(self, name):
        """Return an array describing the method signature

        @param string name The name of the method.
        @return array result An array describing types of the method's return value and params
        """
        doc = inspect.getdoc(self._method(name)) or ""
        ret = re.findall(r"@return\s+(\w+)", doc)
        params = re.findall(r"@param\s+(\w+)\s+\w+", doc)
        if not ret:
            raise rpcFault(Faults.SIGNATURE_UNSUPPORTED, name)
        return [ret[0]] + params

    @defer.inlineCallbacks
    def xmlrpc_multicall(self, request, calls):
        """Process an array of calls, and return an array of results

        @param array calls An array of structs with keys methodName and params
        @return array result An array of results, one per call: [value] or a fault struct
        """
        if not isinstance(calls, list):
            raise rpcFault(Faults.BAD_ARGUMENTS, "calls must be an array of structs")
        if len(calls) > MAX_MULTICALL:
            raise rpcFault(
                Faults.BAD_ARGUMENTS, f"at most {MAX_MULTICALL} calls per multicall, not {len(calls)}"
            )
        results = []
        for call in calls:
            try:
                if not isinstance(call, dict) or not isinstance(call.get("methodName"), str):
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, "each call needs a string methodName")
                name = call["methodName"]
                params = call.get("params", [])
                if not isinstance(params, list):
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, f"{name}: params must be an array")
                if name == "system.multicall":
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, "recursive system.multicall forbidden")
                value = yield self.root.lookupProcedure(name)(request, *params)
                results.append([value])
            except Fault as f:
                results.append({"faultCode": f.faultCode, "faultString": f.faultString})
        return results

    xmlrpc_multicall.takesRequest = True


class RPCRoot(XMLRPC):
    """The C{/RPC2} resource: dispatch, role checks, argument checks and fault conversion."""

    NOT_FOUND = Faults.UNKNOWN_METHOD
    FAILURE = Faults.FAILED

    def __init__(self, state: AdminState):
        super().__init__(allowNone=True)
        self.state = state
        self._methods: dict[str, Callable] | None = None
        from salvusctl.admin.salvusrpc import SalvusNamespace

        self.namespaces: dict[str, _Namespace] = {
            "supervisor": SupervisorNamespace(state),
            "system": SystemNamespace(state, self),
            "salvus": SalvusNamespace(state),
        }

    def allMethods(self) -> dict[str, Callable]:
        """Every published method by its dotted name (computed once)."""
        if self._methods is None:
            out = {}
            for prefix, namespace in self.namespaces.items():
                for name, method in namespace.methods().items():
                    out[f"{prefix}.{name}"] = method
            self._methods = out
        return self._methods

    def listProcedures(self) -> list[str]:
        return sorted(self.allMethods())

    def lookupProcedure(self, procedurePath: Any) -> Callable:
        """A guarded callable C{(request, *args)} for a dotted method name."""
        if not isinstance(procedurePath, str):
            raise rpcFault(Faults.UNKNOWN_METHOD, "no method name")
        method = self.allMethods().get(procedurePath)
        if method is None:
            raise rpcFault(Faults.UNKNOWN_METHOD, procedurePath)
        return _Guarded(procedurePath, method)

    def render(self, request):
        if request.method != b"POST":
            # answered here rather than by twisted.web's default error page
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"XML-RPC: POST text/xml to this URL\n"
        return super().render(request)

    def render_POST(self, request):
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type not in _XML_TYPES:
            request.setResponseCode(415)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"XML-RPC requests must be sent as text/xml\n"
        request.content.seek(0, 0)
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        try:
            args, path = xmlrpclib.loads(request.content.read(), use_datetime=self.useDateTime)
        except Exception as e:
            self._cbRender(rpcFault(Faults.BAD_REQUEST, f"malformed XML-RPC request: {e}"), request)
            return server.NOT_DONE_YET
        try:
            function = self.lookupProcedure(path)
        except Fault as f:
            self._cbRender(f, request)
            return server.NOT_DONE_YET
        failed: list = []
        request.notifyFinish().addErrback(failed.append)
        d = defer.maybeDeferred(function, request, *args)
        d.addErrback(self._ebRender)
        d.addCallback(self._cbRender, request, failed)
        return server.NOT_DONE_YET

    def _ebRender(self, failure):
        return _toFault(failure)


class _Guarded:
    """One method call: role check, argument binding, result and error conversion."""

    def __init__(self, path: str, method: Callable):
        self.path = path
        self.method = method

    def __call__(self, request: Any, *args: Any) -> defer.Deferred:
        user = currentUser(request)
        if user is None:
            return defer.fail(rpcFault(Faults.PERMISSION_DENIED, "not authenticated"))
        if getattr(self.method, "requiresOperator", False) and not user.canOperate:
            return defer.fail(
                rpcFault(
                    Faults.PERMISSION_DENIED,
                    f"{self.path} needs the operator role; {user.name} is a {user.role}",
                )
            )
        call_args = (request, *args) if getattr(self.method, "takesRequest", False) else args
        try:
            inspect.signature(self.method).bind(*call_args)
        except TypeError:
            return defer.fail(
                rpcFault(
                    Faults.INCORRECT_PARAMETERS,
                    f"{self.path}{_signatureText(self.method)}: got {len(args)} argument(s)",
                )
            )
        if getattr(self.method, "requiresOperator", False):
            log.info("{user} called {method}{args}", user=user.name, method=self.path, args=tuple(args))
        d = defer.maybeDeferred(self.method, *call_args)
        d.addCallbacks(plain, lambda f: defer.fail(_toFault(f)))
        return d


def _signatureText(method: Callable) -> str:
    params = [p for p in inspect.signature(method).parameters.values() if p.name != "request"]
    return (
        "(" + ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params) + ")"
    )

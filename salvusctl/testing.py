"""Public fakes of Salvus services, for the admin's tests and for users' own tests.

Each fake provides the same zope interface as the real service (checked with C{verifyObject} in the
tests), keeps its state in plain attributes that a test can read, and takes a clock so that times
are deterministic.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from salvusctl.admin.extensions import IAlertSource, ILogClearing, IReconcilable
from salvusctl.alerts.engine import Alert
from salvusctl.interfaces import IBalancerControl, IMonitor, ISupervisor
from salvusctl.monitor.queries import SAMPLE_KEYS

__all__ = ["FakeSupervisor", "SupervisorVerbsMixin", "FakeBalancer", "FakeMonitor", "FakeAlerts", "STATES"]

# supervisord's process state codes
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
    def __init__(self, name: str, group: str, port: int | None):
        self.name = name
        self.group = group
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


@implementer(ISupervisor, IReconcilable, ILogClearing)
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
    """

    def __init__(
        self,
        deploys: dict[str, int] | None = None,
        clock: Any = None,
        stop_delay: float = 0.0,
        running: bool = True,
    ):
        self.clock = clock if clock is not None else Clock()
        self.stop_delay = stop_delay
        self._instances: dict[str, _Instance] = {}
        self._observers: list[Callable] = []
        self._nextPid = 4000
        self.failures: dict[str, str] = {}
        self.configured: dict[str, int] = dict(deploys if deploys is not None else {"web": 2, "worker": 1})
        for deploy, count in self.configured.items():
            self._addDeploy(deploy, count)
        if running:
            for name in list(self._instances):
                self._start(name)

    def _addDeploy(self, deploy: str, count: int) -> None:
        for i in range(count):
            name = f"{deploy}:{i}"
            self._instances[name] = _Instance(name, deploy, 8000 + len(self._instances))

    # -- test helpers ----------------------------------------------------------------------------

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
            raise KeyError(name)

    def _info(self, inst: _Instance) -> dict[str, Any]:
        now = self.clock.seconds()
        if inst.state == "RUNNING":
            description = f"pid {inst.pid}, uptime {_uptime(now - inst.start)}"
        elif inst.state in ("FATAL", "BACKOFF"):
            description = inst.spawnerr
        elif inst.start:
            description = "stopped"
        else:
            description = "Not started"
        return {
            "name": inst.name,
            "group": inst.group,
            "state": inst.state,
            "statecode": STATES[inst.state],
            "pid": inst.pid,
            "start": inst.start,
            "stop": inst.stop,
            "now": now,
            "exitstatus": inst.exitstatus,
            "spawnerr": inst.spawnerr,
            "description": description,
            "port": inst.port,
            "logfile": "",
            "stdout_logfile": "",
            "stderr_logfile": "",
        }

    def instanceInfos(self) -> list[dict[str, Any]]:
        return [self._info(i) for i in self._instances.values()]

    def instanceInfo(self, name: str) -> dict[str, Any]:
        return self._info(self._get(name))

    def _set(self, inst: _Instance, state: str) -> None:
        old, inst.state = inst.state, state
        for observer in list(self._observers):
            observer(inst.name, old, state, self._info(inst))

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
        inst.stdout.append(f"{name} started with pid {inst.pid}")
        self._set(inst, "RUNNING")
        return defer.succeed(None)

    def startInstance(self, name: str) -> defer.Deferred:
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
        yield self.stopInstance(name)
        yield self.startInstance(name)

    def _names(self, deploy: str) -> list[str]:
        names = [n for n, i in self._instances.items() if i.group == deploy]
        if not names:
            raise KeyError(deploy)
        return names

    def startDeploy(self, name: str) -> defer.Deferred:
        return defer.gatherResults([self.startInstance(n) for n in self._names(name)], consumeErrors=True)

    def stopDeploy(self, name: str) -> defer.Deferred:
        return defer.gatherResults([self.stopInstance(n) for n in self._names(name)], consumeErrors=True)

    def startAll(self) -> defer.Deferred:
        return defer.gatherResults([self.startInstance(n) for n in self._instances], consumeErrors=True)

    def stopAll(self) -> defer.Deferred:
        return defer.gatherResults(
            [self.stopInstance(n) for n in reversed(self._instances)], consumeErrors=True
        )

    def signalInstance(self, name: str, signal: int | str) -> None:
        inst = self._get(name)
        if isinstance(signal, str):
            signal = int(getattr(_signal, signal if signal.startswith("SIG") else "SIG" + signal))
        inst.signals.append(int(signal))

    def tailLog(self, name: str, lines: int = 100, stream: str = "stdout") -> list[str]:
        inst = self._get(name)
        return list(getattr(inst, stream)[-lines:]) if lines > 0 else []

    def addObserver(self, observer: Callable) -> None:
        self._observers.append(observer)

    def removeObserver(self, observer: Callable) -> None:
        self._observers.remove(observer)


    # -- IReconcilable, ILogClearing -------------------------------------------------------------

    def configDiff(self) -> dict[str, list[str]]:
        running: dict[str, int] = {}
        for inst in self._instances.values():
            running[inst.group] = running.get(inst.group, 0) + 1
        return {
            "added": sorted(set(self.configured) - set(running)),
            "changed": sorted(
                d for d in self.configured if d in running and running[d] != self.configured[d]
            ),
            "removed": sorted(set(running) - set(self.configured)),
        }

    @defer.inlineCallbacks
    def reconcile(self):
        diff = self.configDiff()
        for deploy in diff["removed"] + diff["changed"]:
            yield self.stopDeploy(deploy)
            for name in self._names(deploy):
                del self._instances[name]
        for deploy in diff["added"] + diff["changed"]:
            self._addDeploy(deploy, self.configured[deploy])
            yield self.startDeploy(deploy)
        return diff

    def clearLogs(self, name: str) -> None:
        inst = self._get(name)
        inst.stdout.clear()
        inst.stderr.clear()


def _uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def _fakeHost(name: str, address: str, port: int, weight: int) -> dict[str, Any]:
    """A backend host in the real snapshot's shape (L{salvusctl.balancer.model.BackendHost.info})."""
    return {
        "name": name,
        "address": address,
        "port": port,
        "weight": weight,
        "maxconn": 0,
        "tls": False,
        "proxy_protocol": 0,
        "ip": address,
        "state": "up",
        "admin": "up",
        "healthy": True,
        "agent": "up",
        "current_weight": float(weight),
        "agent_weight_percent": 100,
        "agent_maxconn": None,
        "down_since": None,
        "down_reason": None,
        "next_check": None,
        "last_check": None,
        "faults": 0,
        "active": 0,
        "total": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "connect_failures": 0,
        "retries": 0,
        "health_changes": 0,
    }


def _effective(admin: str, healthy: bool) -> str:
    if admin == "maint":
        return "maint"
    if not healthy:
        return "down"
    return admin


@implementer(IBalancerControl)
class FakeBalancer:
    """A balancer's control surface over plain dicts (no sockets).

    C{snapshot()} has exactly the keys of the real
    L{salvusctl.balancer.control.BalancerService.snapshot} (a test compares them): services and
    groups keyed by name, hosts listed with their counters (C{active} open connections, C{total}
    connections made, C{bytes_in}, C{bytes_out}, C{faults} …).  C{diff()} and C{reconcile()} answer
    lists of operations, like the real one.  A test changes counters or health through L{host}.
    """

    SCHEDULERS = ("roundrobin", "leastconn", "leastload", "random", "sourcehash")

    def __init__(self, services: dict[str, dict[str, list[tuple[str, int]]]] | None = None):
        if services is None:
            services = {"www": {"web": [("127.0.0.1", 8000), ("127.0.0.1", 8001)]}}
        self.services: dict[str, dict[str, Any]] = {}
        self.configured: set[tuple[str, str, str]] = set()
        self.retried: list[str] = []
        for service, groups in services.items():
            self.addService(service, ["tcp:8080"])
            for group, hosts in groups.items():
                self.addGroup(service, group)
                for address, port in hosts:
                    host = self.addHost(service, group, address, port)
                    self.configured.add((service, group, host))

    def _group(self, service: str, group: str) -> dict[str, Any]:
        try:
            return self.services[service]["groups"][group]
        except KeyError:
            raise KeyError(f"{service}/{group}")

    def host(self, service: str, group: str, hostname: str) -> dict[str, Any]:
        """The live dict of one host (a test may change its counters or C{healthy})."""
        try:
            return self._group(service, group)["hosts"][hostname]
        except KeyError:
            raise KeyError(f"{service}/{group}/{hostname}")

    _host = host

    def snapshot(self) -> dict[str, Any]:
        services = {}
        for name, s in self.services.items():
            hosts = [h for g in s["groups"].values() for h in g["hosts"].values()]
            services[name] = {
                "name": name,
                "listen": list(s["listen"]),
                "addresses": [],
                "active": s["active"],
                "maxconn": 0,
                "queue_max": 0,
                "retries": 3,
                "all_down": "refuse",
                "timeouts": {"client": 300.0, "connect": 5.0, "queue": 5.0, "server": 300.0},
                "counters": {
                    "open": sum(h["active"] for h in hosts),
                    "total": sum(h["total"] for h in hosts),
                    "queue": 0,
                    "refused": 0,
                    "retries": 0,
                    "connect_failures": sum(h["connect_failures"] for h in hosts),
                    "queue_timeouts": 0,
                    "idle_timeouts": 0,
                    "local_errors": 0,
                    "bytes_in": sum(h["bytes_in"] for h in hosts),
                    "bytes_out": sum(h["bytes_out"] for h in hosts),
                    "health_changes": 0,
                },
                "groups": {
                    g["name"]: {
                        "name": g["name"],
                        "scheduler": g["scheduler"],
                        "scheduler_options": {},
                        "hosts": [dict(h, state=_effective(h["admin"], h["healthy"]))
                                  for h in g["hosts"].values()],
                    }
                    for g in s["groups"].values()
                },
            }
        return {"services": services, "wheel": {"entries": 0, "resolution": 0.25},
                "descriptors": {"limit": 1024, "reserve": 32, "in_use_at_start": 10, "capacity": 491,
                                "clients": 0, "paused": False, "pauses": 0, "local_errors": 0}}

    def addHost(self, service, group, address, port, weight=1, name=None) -> str:
        hosts = self._group(service, group)["hosts"]
        name = name or f"{address}:{port}"
        if name in hosts:
            raise ValueError(f"host {name} already in {service}/{group}")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"bad port {port!r}")
        hosts[name] = _fakeHost(name, address, port, weight)
        return name

    def removeHost(self, service, group, hostname) -> None:
        self._host(service, group, hostname)
        del self._group(service, group)["hosts"][hostname]

    def setHostState(self, service, group, hostname, state) -> None:
        if state not in ("up", "drain", "maint"):
            raise ValueError(f"bad state {state!r}: use up, drain or maint")
        host = self._host(service, group, hostname)
        host["admin"] = state
        host["state"] = _effective(state, host["healthy"])

    def setWeight(self, service, group, hostname, weight) -> None:
        if not isinstance(weight, int) or weight < 0 or weight > 256:
            raise ValueError(f"bad weight {weight!r}: use 0-256")
        host = self._host(service, group, hostname)
        host["weight"] = weight
        host["current_weight"] = float(weight)

    def setScheduler(self, service, group, scheduler) -> None:
        if scheduler not in self.SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}")
        self._group(service, group)["scheduler"] = scheduler

    # -- beyond IBalancerControl: what the balancer issue also asks for ------------------------

    def drain(self, service, group, hostname) -> None:
        self.setHostState(service, group, hostname, "drain")

    def enable(self, service, group, hostname) -> None:
        self.setHostState(service, group, hostname, "up")

    def disable(self, service, group, hostname) -> None:
        self.setHostState(service, group, hostname, "maint")

    def removeAllHosts(self, service, group) -> int:
        hosts = self._group(service, group)["hosts"]
        count = len(hosts)
        hosts.clear()
        return count

    def setActiveGroup(self, service, group) -> None:
        self._group(service, group)
        self.services[service]["active"] = group

    def dumpConfig(self) -> dict[str, Any]:
        return {
            name: {
                "name": name,
                "listen": list(s["listen"]),
                "active": s["active"],
                "groups": {
                    g["name"]: {
                        "scheduler": g["scheduler"],
                        "hosts": {
                            h["name"]: {k: h[k] for k in ("name", "address", "port", "weight", "maxconn",
                                                          "tls", "proxy_protocol")}
                            for h in g["hosts"].values()
                        },
                    }
                    for g in s["groups"].values()
                },
            }
            for name, s in self.services.items()
        }

    def retryHost(self, service, group, hostname) -> defer.Deferred:
        host = self._host(service, group, hostname)
        host["healthy"] = True
        self.retried.append(f"{service}/{group}/{hostname}")
        return defer.succeed(True)

    def addService(self, service, listen) -> None:
        if service in self.services:
            raise ValueError(f"service {service} already exists")
        self.services[service] = {"name": service, "listen": list(listen), "groups": {}, "active": None}

    def removeService(self, service) -> None:
        if service not in self.services:
            raise KeyError(service)
        del self.services[service]

    def addGroup(self, service, group, scheduler="roundrobin") -> None:
        if service not in self.services:
            raise KeyError(service)
        if scheduler not in self.SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}")
        groups = self.services[service]["groups"]
        if group in groups:
            raise ValueError(f"group {service}/{group} already exists")
        groups[group] = {"name": group, "scheduler": scheduler, "hosts": {}}
        if self.services[service]["active"] is None:
            self.services[service]["active"] = group

    def removeGroup(self, service, group) -> None:
        self._group(service, group)
        del self.services[service]["groups"][group]

    def diff(self) -> list[dict[str, Any]]:
        """Operations that would bring the running hosts back to the configured ones."""
        running = {
            (s, g, h)
            for s, sv in self.services.items()
            for g, gv in sv["groups"].items()
            for h in gv["hosts"]
        }
        ops = [{"op": "add-host", "service": s, "group": g, "host": h}
               for s, g, h in sorted(self.configured - running)]
        ops += [{"op": "remove-host", "service": s, "group": g, "host": h}
                for s, g, h in sorted(running - self.configured)]
        return ops

    def reconcile(self) -> defer.Deferred:
        ops = self.diff()
        for op in ops:
            if op["op"] == "remove-host":
                self.removeHost(op["service"], op["group"], op["host"])
            else:
                address, _, port = op["host"].rpartition(":")
                self.addHost(op["service"], op["group"], address, int(port), name=op["host"])
        return defer.succeed(ops)


@implementer(IMonitor)
class FakeMonitor:
    """Samples kept in memory: C{record()} them, then query like the real monitor.

    C{latest()} entries and C{history()} rows have the keys the real
    L{salvusctl.monitor.service.MonitorService} answers with (C{cpu_percent}, C{rss} …); a test
    compares them.
    """

    def __init__(self, supervisor: Any = None):
        self.supervisor = supervisor
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self._latest: dict[str, dict[str, Any]] = {}

    def record(self, name: str, timestamp: float, cpu_percent: float, rss: int, **more) -> None:
        """One sample of instance C{name} (C{more}: other sample keys, e.g. C{mem_percent})."""
        row = {key: None for key in SAMPLE_KEYS}
        row.update(service_id=1, timestamp=timestamp, cpu_percent=cpu_percent, rss=rss,
                   status="running", nprocs=1)
        row.update({k: v for k, v in more.items() if k in row})
        self.samples.setdefault(name, []).append(row)
        info = {}
        if self.supervisor is not None:
            try:
                info = self.supervisor.instanceInfo(name)
            except KeyError:
                info = {}
        entry = self._latest.get(name, {"starts": [timestamp]})
        entry.update(
            name=name,
            group=name.split(":")[0],
            state=info.get("state", "RUNNING"),
            pid=info.get("pid", 0),
            port=info.get("port"),
            timestamp=timestamp,
            cpu_percent=cpu_percent,
            mem_percent=row["mem_percent"] or 0.0,
            rss=rss,
            vms=row["vms"] or rss,
            cputime=row["cputime"] or 0.0,
            walltime=row["walltime"] or 0.0,
            threads=row["threads"] or 1,
            fds=row["fds"],
            status="running",
            nprocs=1,
            processes=[],
            sampled_at=timestamp,
        )
        self._latest[name] = entry

    def latest(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in self._latest.items()}

    def history(self, name: str, since: float, until: float | None = None) -> defer.Deferred:
        rows = [
            dict(s)
            for s in self.samples.get(name, [])
            if s["timestamp"] >= since and (until is None or s["timestamp"] <= until)
        ]
        return defer.succeed(rows)

    def leastLoaded(self, deploy: str) -> str | None:
        latest = self.latest()
        candidates = [n for n, e in latest.items() if e["group"] == deploy]
        if self.supervisor is not None:
            candidates = [n for n in candidates if self.supervisor.instanceInfo(n)["state"] == "RUNNING"]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (latest[n]["cpu_percent"], latest[n]["rss"], n))


@implementer(IAlertSource)
class FakeAlerts:
    """Alerts kept in a list, newest first, answered as the real alerts service answers them
    (L{salvusctl.alerts.engine.Alert.asDict})."""

    def __init__(self, host_name: str = "test"):
        self.host_name = host_name
        self.items: list[Alert] = []

    def fire(self, name: str, subject: str, message: str, since: float, severity: str = "warning") -> None:
        """Alert C{name} (a rule's label) fires for C{subject} at C{since}."""
        self.items.insert(0, Alert(name, "fake", subject, severity, message, self.host_name, since))

    def clear(self, name: str, subject: str, when: float) -> None:
        """The alert of C{name} on C{subject} recovers at C{when}."""
        for i, alert in enumerate(self.items):
            if alert.rule == name and alert.subject == subject and not alert.cleared:
                self.items[i] = replace(alert, cleared=True, cleared_at=when)
                return
        raise KeyError(f"{name} {subject}")

    def alerts(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        return [a.asDict() for a in self.items if include_cleared or not a.cleared]

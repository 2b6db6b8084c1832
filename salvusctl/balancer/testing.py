"""A fake of the balancer's control surface, for the admin's tests and for users' own tests.

L{FakeBalancer} keeps services, groups and hosts in plain dicts (no sockets) and answers like the
real L{salvusctl.balancer.control.BalancerService}: the same snapshot keys, the same scheduler
names (it asks the real scheduler table), the same errors for the same mistakes, the same
operations from C{diff()} and C{reconcile()}.  C{tests/balancer/test_contract.py} runs one suite
against both, so the fake cannot drift from the real balancer.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from salvusctl.balancer import declare
from salvusctl.balancer.configdiff import diffServices
from salvusctl.balancer.schedulers import makeScheduler
from salvusctl.errors import ConfigError
from salvusctl.interfaces import IBalancerControl

__all__ = ["FakeBalancer"]

_ADMIN_STATES = ("up", "drain", "maint")


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


def _checkScheduler(name: str, options: dict | None) -> dict:
    """The real balancer's check: the scheduler table makes it, or the name is refused."""
    options = dict(options or {})
    try:
        makeScheduler(name, Clock(), None, **options)
    except ConfigError as e:
        raise ValueError(e.message)
    return options


def _declared(decl: declare.Balanced) -> dict[str, Any]:
    """What the fake keeps of a declaration, to diff the running state against."""
    return {
        "listen": list(decl.listen),
        "active": decl.groups[0].name if decl.groups else None,
        "groups": {
            g.name: {"scheduler": g.scheduler, "options": dict(g.scheduler_options),
                     "hosts": {s.key(): {"address": s.hostPort()[0], "port": s.hostPort()[1],
                                         "weight": s.weight} for s in g.servers}}
            for g in decl.groups
        },
    }


@implementer(IBalancerControl)
class FakeBalancer:
    """A balancer's control surface over plain dicts (no sockets).

    @param services: service -> group -> [(address, port)], the declared and running layout
        (each service listens on C{tcp:8080}; hosts are named C{address:port}).

    C{snapshot()} has exactly the keys of the real one: services and groups keyed by name, hosts
    listed with their counters (C{active} open connections, C{total} connections made,
    C{bytes_in}, C{bytes_out}, C{faults} …).  A test changes counters or health through L{host};
    C{retried} lists the hosts L{retryHost} was asked about.
    """

    def __init__(self, services: dict[str, dict[str, list[tuple[str, int]]]] | None = None):
        if services is None:
            services = {"www": {"web": [("127.0.0.1", 8000), ("127.0.0.1", 8001)]}}
        self.services: dict[str, dict[str, Any]] = {}
        self.declared: dict[str, dict[str, Any]] = {}
        self.retried: list[str] = []
        for service, groups in services.items():
            decl = declare.Balanced(service, listen=["tcp:8080"], groups=[
                declare.Group(group, [declare.Server(f"{address}:{port}") for address, port in hosts])
                for group, hosts in groups.items()])
            self._addDeclared(decl)

    # -- lookups (the real balancer's KeyError messages) -------------------------------------------

    def _service(self, service: str) -> dict[str, Any]:
        try:
            return self.services[service]
        except KeyError:
            raise KeyError(f"no balanced service {service!r}")

    def _group(self, service: str, group: str) -> dict[str, Any]:
        try:
            return self._service(service)["groups"][group]
        except KeyError:
            if service not in self.services:
                raise
            raise KeyError(f"service {service!r} has no group {group!r}")

    def host(self, service: str, group: str, hostname: str) -> dict[str, Any]:
        """The live dict of one host (a test may change its counters or C{healthy})."""
        try:
            return self._group(service, group)["hosts"][hostname]
        except KeyError:
            if group not in self._service(service)["groups"]:
                raise
            raise KeyError(f"group {group!r} of service {service!r} has no host {hostname!r}")

    _host = host

    # -- IBalancerControl --------------------------------------------------------------------------

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
                    "refused_by": {},
                    "local_errors": 0,
                    "bytes_in": sum(h["bytes_in"] for h in hosts),
                    "bytes_out": sum(h["bytes_out"] for h in hosts),
                    "health_changes": 0,
                },
                "groups": {
                    g["name"]: {
                        "name": g["name"],
                        "scheduler": g["scheduler"],
                        "scheduler_options": dict(g["options"]),
                        "hosts": [dict(h, state=_effective(h["admin"], h["healthy"]))
                                  for h in g["hosts"].values()],
                    }
                    for g in s["groups"].values()
                },
            }
        return {"services": services, "wheel": {"entries": 0, "resolution": 0.25},
                "descriptors": {"limit": 1024, "reserve": 64, "in_use_at_start": 10, "capacity": 475,
                                "clients": 0, "paused": False, "pauses": 0, "local_errors": 0}}

    def addHost(self, service, group, address, port, weight=1, name=None) -> str:
        hosts = self._group(service, group)["hosts"]
        port, weight = int(port), int(weight)
        if not 0 < port < 65536:
            raise ValueError(f"backend address '{address}:{port}': port must be 1..65535")
        if weight <= 0:
            raise ValueError(f"server {address}:{port}: weight must be an integer > 0, not {weight!r}")
        name = name or f"{address}:{port}"
        if name in hosts:
            raise KeyError(f"group {group!r} already has a host {name!r}")
        hosts[name] = _fakeHost(name, address, port, weight)
        return name

    def removeHost(self, service, group, hostname) -> None:
        self._host(service, group, hostname)
        del self._group(service, group)["hosts"][hostname]

    def setHostState(self, service, group, hostname, state) -> None:
        host = self._host(service, group, hostname)
        if state not in _ADMIN_STATES:
            raise ValueError(f"admin state must be one of {sorted(_ADMIN_STATES)}, not {state!r}")
        host["admin"] = state
        host["state"] = _effective(state, host["healthy"])

    def setWeight(self, service, group, hostname, weight) -> None:
        host = self._host(service, group, hostname)
        weight = int(weight)
        if weight <= 0:
            raise ValueError(f"weight must be > 0, not {weight}")
        host["weight"] = weight
        host["current_weight"] = float(weight)

    def setScheduler(self, service, group, scheduler, options=None) -> None:
        g = self._group(service, group)
        g["options"] = _checkScheduler(scheduler, options)
        g["scheduler"] = scheduler

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

    def addGroup(self, service, group, scheduler="roundrobin", options=None) -> None:
        groups = self._service(service)["groups"]
        if group in groups:
            raise KeyError(f"service {service!r} already has a group {group!r}")
        options = _checkScheduler(scheduler, options)
        groups[group] = {"name": group, "scheduler": scheduler, "options": options, "hosts": {}}
        if self.services[service]["active"] is None:
            self.services[service]["active"] = group

    def removeGroup(self, service, group) -> None:
        if self._service(service)["active"] == group:
            raise ValueError(f"group {group!r} is active; switch to another group first")
        self._group(service, group)
        del self.services[service]["groups"][group]

    def setActiveGroup(self, service, group) -> None:
        self._group(service, group)
        self.services[service]["active"] = group

    def retryHost(self, service, group, hostname) -> defer.Deferred:
        """Readmit the host at once (the fake has no health checks); fires with True."""
        host = self._host(service, group, hostname)
        host["healthy"] = True
        host["state"] = _effective(host["admin"], True)
        self.retried.append(f"{service}/{group}/{hostname}")
        return defer.succeed(True)

    def dumpConfig(self) -> dict[str, Any]:
        return {
            name: {
                "name": name,
                "listen": list(s["listen"]),
                "active": s["active"],
                "groups": {
                    g["name"]: {
                        "scheduler": g["scheduler"],
                        "deploy": None,
                        "cluster_deploy": None,
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

    # -- balanced services, live -------------------------------------------------------------------

    def _addDeclared(self, decl: declare.Balanced) -> None:
        self.declared[decl.name] = _declared(decl)
        self.services[decl.name] = {"name": decl.name, "listen": list(decl.listen), "groups": {},
                                    "active": None}
        self._applyDeclared(decl.name)

    def _applyDeclared(self, service: str) -> None:
        want = self.declared[service]
        for group, g in want["groups"].items():
            self.addGroup(service, group, g["scheduler"], g["options"])
            for name, h in g["hosts"].items():
                self.addHost(service, group, h["address"], h["port"], h["weight"], name)

    def addBalancedService(self, decl: declare.Balanced) -> defer.Deferred:
        """Add a balanced service from its declaration (validated first); fires at once."""
        declare.checkAdded(decl, self.services)
        self._addDeclared(decl)
        return defer.succeed([])

    def removeBalancedService(self, service) -> defer.Deferred:
        """Forget a balanced service; fires at once."""
        self._service(service)
        del self.services[service]
        self.declared.pop(service, None)
        return defer.succeed(None)

    # -- config vs running -------------------------------------------------------------------------

    def diff(self, declared: list[declare.Balanced] | None = None) -> list[dict[str, Any]]:
        """What differs between the running state and the declared one (the real ops, same order);
        C{declared}: a new declaration to compare with instead (a reload's)."""
        wanted = self.declared if declared is None else {d.name: _declared(d) for d in declared}
        return diffServices(
            wanted, self.services,
            lambda service, group, host: self.services[service]["groups"][group]["hosts"][host]["admin"])

    def reconcile(self, declared: list[declare.Balanced] | None = None) -> defer.Deferred:
        """Apply L{diff} (C{declared} becomes the declaration); fires with its operations."""
        ops = self.diff(declared)
        if declared is not None:
            self.declared = {d.name: _declared(d) for d in declared}
        for op in ops:
            kind, name = op["op"], op["service"]
            want = self.declared.get(name)
            if kind == "add-service":
                self.services[name] = {"name": name, "listen": list(want["listen"]), "groups": {},
                                       "active": None}
                self._applyDeclared(name)
            elif kind == "remove-service":
                del self.services[name]
            elif kind == "add-group":
                g = want["groups"][op["group"]]
                self.addGroup(name, op["group"], g["scheduler"], g["options"])
                for host, h in g["hosts"].items():
                    self.addHost(name, op["group"], h["address"], h["port"], h["weight"], host)
            elif kind == "set-scheduler":
                g = want["groups"][op["group"]]
                self.setScheduler(name, op["group"], g["scheduler"], g["options"])
            elif kind == "remove-host":
                self.removeHost(name, op["group"], op["host"])
            elif kind == "add-host":
                h = want["groups"][op["group"]]["hosts"][op["host"]]
                self.addHost(name, op["group"], h["address"], h["port"], h["weight"], op["host"])
            elif kind == "set-weight":
                self.setWeight(name, op["group"], op["host"], op["weight"])
            elif kind == "set-state":
                self.setHostState(name, op["group"], op["host"], "up")
        for op in ops:
            if op["op"] == "set-active":
                self.setActiveGroup(op["service"], op["group"])
        for op in ops:
            if op["op"] == "remove-group":
                del self.services[op["service"]]["groups"][op["group"]]
        return defer.succeed(copy.deepcopy(ops))

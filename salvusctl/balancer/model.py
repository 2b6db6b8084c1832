"""The running balancer's records: one L{BackendHost} per backend, grouped in L{HostGroup}s.

These are plain records with the few transitions that keep their bookkeeping straight (down since,
why, fault count, health changes).  They do no I/O; the proxy, the checks and the live API change
them, and each change refreshes the group's I{rotation} — the list of hosts that may take a new
connection — so the per-connection path only reads a ready list.
"""

from __future__ import annotations

from typing import Any

from salvusctl.balancer import states
from salvusctl.interfaces import IScheduler

__all__ = ["BackendHost", "HostGroup", "hostKey"]


def hostKey(address: str, port: int) -> str:
    """The default name of a host: C{address:port}."""
    return f"{address}:{port}"


class BackendHost:
    """One backend: where it is, how much it may take, what state it is in, what it has carried.

    @ivar ip: the address connections go to; for a DNS name, the last good lookup (None until one
        succeeds, and such a host stays out of rotation).
    @ivar active: connections open or being opened to this host right now.
    """

    def __init__(
        self,
        clock: Any,
        address: str,
        port: int,
        weight: int = 1,
        name: str | None = None,
        maxconn: int = 0,
        tls: bool = False,
        tls_hostname: str | None = None,
        proxy_protocol: int = 0,
        check_port: int | None = None,
        agent_port: int | None = None,
    ):
        self.clock = clock
        self.address = address
        self.port = int(port)
        self.weight = int(weight)
        self.name = name or hostKey(address, port)
        self.maxconn = int(maxconn)
        self.tls = bool(tls)
        self.tls_hostname = tls_hostname
        self.proxy_protocol = int(proxy_protocol)
        self.check_port = check_port
        self.agent_port = agent_port
        self.ip: str | None = address if _isIP(address) else None
        self.group: HostGroup | None = None
        # state inputs
        self.admin = states.UP
        self.healthy = True
        self.agent = states.UP
        self.agent_weight_percent = 100
        self.agent_maxconn: int | None = None
        # bookkeeping
        self.down_since: float | None = None
        self.down_reason: str | None = None
        self.next_check: float | None = None
        self.last_check: str | None = None
        self.faults = 0
        self.up_since: float | None = None
        self.slowstart = 0.0
        # counters
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connect_failures = 0
        self.retries = 0
        self.health_changes = 0

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The effective state: C{up}, C{down}, C{drain} or C{maint}."""
        return states.combine(self.admin, self.healthy and self.ip is not None, self.agent)

    def limit(self) -> int:
        """The connection limit in force (0 = none): the agent's, else the configured one."""
        if self.agent_maxconn is not None:
            return self.agent_maxconn
        return self.maxconn

    def markDown(self, reason: str) -> bool:
        """The host failed (a connect, a check): out of rotation until a check readmits it.

        Returns True when this changed the host's health (it was up).
        """
        self.faults += 1
        if not self.healthy:
            self.down_reason = reason
            return False
        self.healthy = False
        self.down_since = self.clock.seconds()
        self.down_reason = reason
        self.up_since = None
        self.health_changes += 1
        self._changed()
        return True

    def markUp(self) -> bool:
        """Health restored (by checks, a retry-now, or the aggressive all-down policy)."""
        if self.healthy:
            return False
        self.healthy = True
        self.down_since = None
        self.down_reason = None
        self.up_since = self.clock.seconds()
        self.health_changes += 1
        self._changed()
        return True

    def setAdmin(self, admin: str) -> None:
        """Set the admin state (C{up}, C{drain}, C{maint})."""
        if admin not in states.ADMIN_STATES:
            raise ValueError(f"admin state must be one of {sorted(states.ADMIN_STATES)}, not {admin!r}")
        if admin == self.admin:
            return
        if admin == states.UP and self.healthy:
            self.up_since = self.clock.seconds()
        self.admin = admin
        self._changed()

    def setWeight(self, weight: int) -> None:
        """Change the configured weight (must be > 0)."""
        weight = int(weight)
        if weight <= 0:
            raise ValueError(f"weight must be > 0, not {weight}")
        self.weight = weight
        self._changed()

    def setAgent(self, agent: str | None = None, percent: int | None = None, maxconn: int | None = None):
        """Apply what the backend's agent said (any part may be absent)."""
        changed = False
        if agent is not None and agent != self.agent:
            if agent == states.UP and self.agent != states.UP and self.healthy:
                self.up_since = self.clock.seconds()
            self.agent = agent
            changed = True
        if percent is not None and percent != self.agent_weight_percent:
            self.agent_weight_percent = max(0, int(percent))
            changed = True
        if maxconn is not None and maxconn != self.agent_maxconn:
            self.agent_maxconn = max(0, int(maxconn))
            changed = True
        if changed:
            self._changed()

    def currentWeight(self) -> float:
        """The weight schedulers use now: configured × agent percent × slow-start ramp.

        During slow start the weight grows linearly from 1/nth to full over C{slowstart} seconds
        after the host comes back, so a cold backend is not flooded at once.
        """
        weight = self.weight * self.agent_weight_percent / 100.0
        if self.slowstart > 0 and self.up_since is not None:
            elapsed = self.clock.seconds() - self.up_since
            if elapsed < self.slowstart:
                weight = max(weight * elapsed / self.slowstart, min(weight, 1.0) * 0.01)
        return weight

    def _changed(self) -> None:
        if self.group is not None:
            self.group.refresh()

    # -- data ----------------------------------------------------------------------------------------

    def config(self) -> dict:
        """The declared part, as data (what a config file or a diff speaks of)."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "weight": self.weight,
            "maxconn": self.maxconn,
            "tls": self.tls,
            "proxy_protocol": self.proxy_protocol,
        }

    def info(self) -> dict:
        """Config, state and counters as plain data."""
        data = self.config()
        data.update(
            {
                "ip": self.ip,
                "state": self.state,
                "admin": self.admin,
                "healthy": self.healthy,
                "agent": self.agent,
                "current_weight": round(self.currentWeight(), 3),
                "agent_weight_percent": self.agent_weight_percent,
                "agent_maxconn": self.agent_maxconn,
                "down_since": self.down_since,
                "down_reason": self.down_reason,
                "next_check": self.next_check,
                "last_check": self.last_check,
                "faults": self.faults,
                "active": self.active,
                "total": self.total,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "connect_failures": self.connect_failures,
                "retries": self.retries,
                "health_changes": self.health_changes,
            }
        )
        return data

    def __repr__(self) -> str:
        return f"<BackendHost {self.name} {self.state} w={self.weight} active={self.active}>"


class HostGroup:
    """Backend hosts that serve a service together, with the scheduler that picks among them.

    @ivar rotation: the hosts in state C{up} (and not set to 0% by their agent), in declaration
        order; rebuilt on every change.
    @ivar limited: True when some host has a connection limit, so the dispatcher must filter.
    """

    def __init__(self, name: str, scheduler: IScheduler, scheduler_options: dict | None = None):
        self.name = name
        self.scheduler = scheduler
        self.scheduler_options = dict(scheduler_options or {})
        self.hosts: dict[str, BackendHost] = {}
        self.rotation: list[BackendHost] = []
        self.limited = False
        self.listeners: list[Any] = []
        # the deploy whose instances are this group's hosts (salvusctl.balancer.deploys), if any
        self.deploy: str | None = None
        # the deploy whose instances on every cluster host are its hosts (salvusctl.cluster.pool)
        self.cluster_deploy: str | None = None
        # the names of the servers its declaration lists: in a group that follows a deploy these
        # stay while instances come and go, so their operator states are shared (balancer.shared)
        self.fixed: set[str] = set()
        # until when (reactor seconds) new clients wait for a host instead of being refused when
        # the rotation is empty: a planned stop of the deploy's instances set it (a restart that
        # is a stop and then a start, as supervisorctl's restart and update are)
        self.hold_until = 0.0

    def add(self, host: BackendHost) -> BackendHost:
        """Add a host; its name must be unique in the group."""
        if host.name in self.hosts:
            raise KeyError(f"group {self.name!r} already has a host {host.name!r}")
        host.group = self
        self.hosts[host.name] = host
        self.refresh()
        return host

    def remove(self, name: str) -> BackendHost:
        """Remove a host; connections it carries finish on their own."""
        host = self.hosts.pop(name)
        host.group = None
        self.refresh()
        return host

    def setScheduler(self, scheduler: IScheduler) -> None:
        """Switch the scheduler live; new connections use it at once."""
        self.scheduler = scheduler
        scheduler.hostsChanged(list(self.hosts.values()))

    def refresh(self) -> None:
        """Rebuild the rotation after any host change and tell the scheduler and listeners."""
        hosts = list(self.hosts.values())
        # an agent's "0%" means no new connections (HAProxy), whatever the scheduler
        self.rotation = [h for h in hosts if h.state == states.UP and h.agent_weight_percent > 0]
        self.limited = any(h.limit() for h in hosts)
        self.scheduler.hostsChanged(hosts)
        for listener in self.listeners:
            listener(self)

    def candidates(self, exclude: Any = ()) -> list[BackendHost]:
        """Hosts that may take one more connection now, leaving out C{exclude} (already tried)."""
        hosts = self.rotation
        if self.limited:
            hosts = [h for h in hosts if not h.limit() or h.active < h.limit()]
        if exclude:
            hosts = [h for h in hosts if h not in exclude]
        return hosts

    def info(self) -> dict:
        return {
            "name": self.name,
            "scheduler": self.scheduler.name,
            "scheduler_options": dict(self.scheduler_options),
            "hosts": [h.info() for h in self.hosts.values()],
        }


def _isIP(address: str) -> bool:
    import socket

    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)
            return True
        except OSError:
            continue
    return False



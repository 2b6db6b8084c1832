"""Host states, weights and counters kept in the store, so they survive a restart or an upgrade.

Saved periodically and at stop; restored when the store is ready.  What an operator set (admin
state, weight, the active group, a group's scheduler) wins over the declared config until a
reconcile; a host that was down comes back down with its reason and is readmitted by its checks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from salvusctl.balancer import states
from salvusctl.balancer.shared import MIGRATION as SHARED_MIGRATION
from salvusctl.balancer.shared import STICKY_MIGRATION
from salvusctl.store.migrations import Migration

__all__ = ["MIGRATIONS", "saveState", "loadState", "applyState", "exportState"]

log = Logger()

MIGRATIONS = [
    Migration(
        1,
        "balancer host states and counters",
        """
CREATE TABLE balancer_hosts (
    service TEXT NOT NULL,
    grp TEXT NOT NULL,
    host TEXT NOT NULL,
    admin TEXT NOT NULL,
    healthy INTEGER NOT NULL,
    weight INTEGER NOT NULL,
    down_since DOUBLE PRECISION,
    down_reason TEXT,
    faults BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    connect_failures BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    health_changes BIGINT NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION,
    PRIMARY KEY (service, grp, host)
);
CREATE TABLE balancer_groups (
    service TEXT NOT NULL,
    grp TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    active INTEGER NOT NULL,
    PRIMARY KEY (service, grp)
);
""",
    ),
    SHARED_MIGRATION,
    STICKY_MIGRATION,
]

_HOST_COLUMNS = ("admin", "healthy", "weight", "down_since", "down_reason", "faults", "total", "bytes_in",
                 "bytes_out", "connect_failures", "retries", "health_changes", "updated_at")
_COUNTERS = ("faults", "total", "bytes_in", "bytes_out", "connect_failures", "retries", "health_changes")


def _rows(services: dict[str, Any], now: float) -> tuple[list, list]:
    hosts, groups = [], []
    for svc in services.values():
        for group_name, group in svc.groups.items():
            groups.append((svc.name, group_name, group.scheduler.name, 1 if svc.active == group_name else 0))
            kept = group.hosts.values()
            if getattr(group, "deploy", None):
                # Hosts that follow a deploy's instances come and go with them: a drain caught
                # mid-restart must not be restored onto the next run's instance.  The servers the
                # group's declaration lists stay, and so do their states.
                fixed = getattr(group, "fixed", ())
                kept = [h for h in kept if h.name in fixed]
            for host in kept:
                hosts.append((svc.name, group_name, host.name, host.admin, 1 if host.healthy else 0,
                              host.weight, host.down_since, host.down_reason)
                             + tuple(getattr(host, c) for c in _COUNTERS)
                             + (now,))
    return hosts, groups


def saveState(store: Any, services: dict[str, Any], now: float) -> Deferred:
    """Upsert every host's state and counters and every group's scheduler in one transaction."""
    hosts, groups = _rows(services, now)
    if not hosts and not groups:
        return succeed(None)
    cols = ", ".join(_HOST_COLUMNS)
    marks = ", ".join("?" for _ in range(3 + len(_HOST_COLUMNS)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _HOST_COLUMNS)
    host_sql = (f"INSERT INTO balancer_hosts (service, grp, host, {cols}) VALUES ({marks}) "
                f"ON CONFLICT (service, grp, host) DO UPDATE SET {updates}")
    group_sql = ("INSERT INTO balancer_groups (service, grp, scheduler, active) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (service, grp) DO UPDATE SET scheduler = excluded.scheduler, "
                 "active = excluded.active")

    def write(cursor):
        if hosts:
            cursor.executemany(host_sql, hosts)
        if groups:
            cursor.executemany(group_sql, groups)

    return store.runInteraction(write)


def loadState(store: Any) -> Deferred:
    """Fires with (host rows as dicts, group rows as dicts)."""
    cols = ", ".join(_HOST_COLUMNS)
    d = store.runQuery(f"SELECT service, grp, host, {cols} FROM balancer_hosts")

    def got_hosts(rows):
        names = ("service", "grp", "host") + _HOST_COLUMNS
        hosts = [dict(zip(names, r, strict=True)) for r in rows]
        d2 = store.runQuery("SELECT service, grp, scheduler, active FROM balancer_groups")
        d2.addCallback(lambda g: (hosts, [dict(zip(("service", "grp", "scheduler", "active"), r,
                                                   strict=True)) for r in g]))
        return d2

    d.addCallback(got_hosts)
    return d


def applyState(services: dict[str, Any], hosts: list[dict], groups: list[dict]) -> int:
    """Apply saved rows to the running services; returns how many hosts were restored."""
    restored = 0
    for row in groups:
        svc = services.get(row["service"])
        if svc is None or row["grp"] not in svc.groups:
            continue
        group = svc.groups[row["grp"]]
        if group.scheduler.name != row["scheduler"]:
            try:
                svc.setScheduler(row["grp"], row["scheduler"], group.scheduler_options)
            except Exception as e:
                log.warn("cannot restore scheduler {s} of {g}: {e}", s=row["scheduler"], g=row["grp"], e=e)
        if row["active"] and svc.active != row["grp"]:
            svc.setActiveGroup(row["grp"])
    for row in hosts:
        svc = services.get(row["service"])
        group = svc.groups.get(row["grp"]) if svc is not None else None
        if group is not None and getattr(group, "deploy", None) and row["host"] not in group.fixed:
            continue
        host = group.hosts.get(row["host"]) if group is not None else None
        if host is None:
            continue
        for c in _COUNTERS:
            setattr(host, c, getattr(host, c) + int(row[c] or 0))
        if row["weight"] and row["weight"] > 0:
            host.weight = int(row["weight"])
        if row["admin"] in states.ADMIN_STATES:
            host.admin = row["admin"]
        if not row["healthy"] and host.healthy:
            host.healthy = False
            host.down_since = row["down_since"]
            host.down_reason = row["down_reason"] or "down before restart"
        host._changed()
        restored += 1
    return restored


def exportState(balanced: dict[str, Any], now: float) -> dict[str, Any]:
    """Host states, weights, schedulers and counters as JSON-able rows (the store's own shape)."""
    hostRows, groupRows = _rows(balanced, now)
    hostNames = ("service", "grp", "host") + _HOST_COLUMNS
    groupNames = ("service", "grp", "scheduler", "active")
    return {
        "hosts": [dict(zip(hostNames, r, strict=True)) for r in hostRows],
        "groups": [dict(zip(groupNames, r, strict=True)) for r in groupRows],
    }

"""How the admin reads the real services' data: one place that knows their shapes.

The pages, C{/metrics}, XML-RPC and C{salvusctl} all read the balancer's snapshot, the monitor's
samples and the alerts through these functions, so a change of shape in a service is one change
here (and the shape tests in C{tests/integration} catch it).

The shapes, as the services produce them:

* L{salvusctl.balancer.control.BalancerService.snapshot}: C{{"services": {name: {"name",
  "listen", "active", "counters", "groups": {name: {"name", "scheduler", "hosts": [{"name",
  "address", "port", "weight", "state", "admin", "healthy", "active", "total", "bytes_in",
  "bytes_out", "faults", "connect_failures", …}]}}}}, "wheel": {…}, "descriptors": {…}}}.  A
  host's C{state} is the effective one (C{up}, C{down}, C{drain}, C{maint}); C{active} is its
  open connections and C{total} the connections made.
* L{salvusctl.monitor.service.MonitorService.latest}: C{{instance: {"name", "group", "state",
  "pid", "port", "starts", and once sampled "timestamp", "cpu_percent", "mem_percent", "rss",
  "vms", "cputime", "walltime", "threads", "fds", "status", "nprocs", "processes",
  "sampled_at"}}}.
* L{salvusctl.monitor.service.MonitorService.history}: stored samples with the same keys as
  C{latest()}'s (C{{"service_id", "timestamp", "load", "cpu_percent", "mem_percent", "cputime",
  "walltime", "vms", "rss", "threads", "fds", "status", "nprocs"}}); the monitor renames the
  store's columns (C{percent_cpu}, C{resident_size} …) on the way out.
* L{salvusctl.alerts.engine.AlertsService.alerts}: L{salvusctl.alerts.engine.Alert.asDict}:
  C{{"rule", "kind", "subject", "severity", "message", "host", "fired_at", "cleared",
  "cleared_at", "title"}}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "balancerServices",
    "balancerGroups",
    "balancerHosts",
    "hostOpen",
    "hostTotal",
    "hostTakesTraffic",
    "sampleCpu",
    "sampleRss",
    "sampleTime",
    "alertName",
    "alertSince",
    "balancerDiff",
]


def _values(container: Any) -> list[Any]:
    """Entries keyed by name (the real shape) or listed; either way, in order."""
    if isinstance(container, Mapping):
        return list(container.values())
    return list(container or [])


def balancerServices(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The balanced services of a snapshot, in declaration order."""
    return _values(snapshot.get("services"))


def balancerGroups(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The groups of one service of a snapshot."""
    return _values(service.get("groups"))


def balancerHosts(snapshot: Mapping[str, Any]) -> Iterator[tuple[dict, dict, dict]]:
    """Every C{(service, group, host)} of a snapshot."""
    for service in balancerServices(snapshot):
        for group in balancerGroups(service):
            for host in _values(group.get("hosts")):
                yield service, group, host


def hostOpen(host: Mapping[str, Any]) -> int:
    """A backend's open connections."""
    return int(host.get("active") or 0)


def hostTotal(host: Mapping[str, Any]) -> int:
    """Connections a backend has taken since the balancer started (or its state was restored)."""
    return int(host.get("total") or 0)


def hostTakesTraffic(host: Mapping[str, Any]) -> bool:
    """True when the balancer sends new connections to this backend."""
    return host.get("state") == "up" and bool(host.get("healthy", True))


def sampleCpu(sample: Mapping[str, Any]) -> float | None:
    """CPU % of a sample, latest or stored (C{cpu_percent})."""
    value = sample.get("cpu_percent")
    return None if value is None else float(value)


def sampleRss(sample: Mapping[str, Any]) -> int | None:
    """Resident bytes of a sample, latest or stored (C{rss})."""
    value = sample.get("rss")
    return None if value is None else int(value)


def sampleTime(sample: Mapping[str, Any]) -> float | None:
    """When a sample was taken (None before an instance's first sample)."""
    value = sample.get("timestamp")
    return None if value is None else float(value)


def alertName(alert: Mapping[str, Any]) -> str:
    """The rule an alert comes from."""
    return str(alert.get("rule", ""))


def alertSince(alert: Mapping[str, Any]) -> float | None:
    """When an alert fired."""
    value = alert.get("fired_at")
    return None if value is None else float(value)


def balancerDiff(ops: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The balancer's diff operations as the admin's C{{added, changed, removed}}.

    C{BalancerService.diff()} lists operations (C{add-host}, C{set-weight} …) that would make the
    running state match the config; the admin reports names: what the config adds, changes and
    removes, as C{service}, C{service/group} or C{service/group/host}.
    """
    out: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    for op in ops:
        kind = str(op.get("op", ""))
        name = "/".join(str(op[k]) for k in ("service", "group", "host") if op.get(k) is not None)
        if kind == "set-active":
            name = str(op.get("service"))
        bucket = "changed"
        if kind.startswith("add-"):
            bucket = "added"
        elif kind.startswith("remove-"):
            bucket = "removed"
        if name not in out[bucket]:
            out[bucket].append(name)
    for names in out.values():
        names.sort()
    return out

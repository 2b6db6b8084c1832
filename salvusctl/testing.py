"""Public fakes of Salvus services, for the admin's tests and for users' own tests.

Each fake lives beside the service it imitates (C{salvusctl/<service>/testing.py}) and is
gathered here.  Each provides the same zope interface as the real service, passes the same
contract suite (C{tests/<service>/test_contract.py} runs one suite against both), keeps its state
in plain attributes that a test can read, and takes a clock so that times are deterministic.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from salvusctl.admin.extensions import IAlertSource
from salvusctl.alerts.engine import Alert
from salvusctl.balancer.testing import FakeBalancer
from salvusctl.interfaces import IMonitor
from salvusctl.monitor.queries import SAMPLE_KEYS
from salvusctl.supervisor.testing import STATES, FakeSupervisor, SupervisorVerbsMixin

__all__ = ["FakeSupervisor", "SupervisorVerbsMixin", "FakeBalancer", "FakeMonitor", "FakeAlerts", "STATES"]

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

"""A fake of the monitor's queries, for the admin's tests and for users' own tests.

L{FakeMonitor} keeps samples that a test C{record}s and answers C{latest()}, C{history()} and
C{leastLoaded()} with the real L{salvusctl.monitor.service.MonitorService}'s keys and choices;
C{tests/monitor/test_contract.py} runs one suite against both.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from salvusctl.interfaces import IMonitor
from salvusctl.monitor.queries import SAMPLE_KEYS

__all__ = ["FakeMonitor"]


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
        if supervisor is not None:
            # as the real monitor: an instance's latest state follows the supervisor's changes
            supervisor.addObserver(self._changed)

    def _changed(self, name: str, old: Any, new: Any, info: dict[str, Any]) -> None:
        if info.get("event", "state") == "state" and name in self._latest:
            self._latest[name]["state"] = getattr(new, "name", new)

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

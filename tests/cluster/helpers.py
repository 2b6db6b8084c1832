"""Cluster members for unit tests: several L{ClusterService}s on one L{MemoryStore} and a Clock.

The MemoryStore is real SQLite run synchronously, and its notifications are delivered in-process,
so two services sharing it behave as two hosts sharing a database: every Deferred has fired by
the time a call returns, and time moves only when the test advances the clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from salvusctl.cluster.clients import ClientRegistry
from salvusctl.cluster.service import ClusterService
from salvusctl.cluster.tables import ClusterTables
from salvusctl.store.testing import MemoryStore

__all__ = ["MemoryCluster"]


class MemoryCluster:
    """One clock, one store, any number of members made with L{member}."""

    def __init__(self, clock: Any = None):
        self.clock = clock if clock is not None else Clock()
        if hasattr(self.clock, "advance"):
            self.clock.advance(1_000_000)
        self.store = MemoryStore(self.clock)
        ClusterTables(self.store)  # registers the migrations once
        ClientRegistry(self.store)
        self.store.start()
        self.members: dict[str, ClusterService] = {}

    def member(self, name: str, start: bool = True, **options: Any) -> ClusterService:
        options.setdefault("heartbeat", 5.0)
        options.setdefault("missed", 3)
        options.setdefault("address", f"10.9.0.{len(self.members) + 1}")
        tables = ClusterTables(self.store, migrate=False)
        service = ClusterService(self.clock, self.store, name, tables=tables, **options)
        self.members[name] = service
        if start:
            service.startService()
        return service

    def stopAll(self, testcase: Any) -> None:
        """Stop every running member (letting their drain delays pass on the clock)."""
        for member in self.members.values():
            if member.running:
                d = member.stopService()
                self.advance(10)
                testcase.successResultOf(d)

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Advance the clock in steps, so every timer due on the way runs."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step

    def rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        box: list = []
        self.store.runQuery(sql, args).addBoth(box.append)
        return box[0]

"""A real store for unit tests that run on a C{Clock}: in-memory SQLite, answered synchronously.

The SQLite store hands every call to its own thread and delivers results through the reactor,
which a C{Clock} or C{MemoryReactor} does not run.  L{MemoryStore} runs the same code — same
migrations, same SQL, same domain queries — in the caller's thread, so every Deferred it returns
has already fired: C{successResultOf(store.latestStatus())} works in a C{SynchronousTestCase}.

    store = MemoryStore(clock)
    store.addMigrations("monitor", MONITOR_MIGRATIONS)
    store.start()
    ...
    self.assertEqual(self.successResultOf(store.latestStatus()), [...])

It can also play an unreachable database: C{store.unreachable = True} makes reads fail with
L{StoreUnavailable} and queues writes until it is set back and L{flushQueued} is called.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from salvusctl.interfaces import IStore
from salvusctl.store.errors import StoreClosed, StoreUnavailable
from salvusctl.store.sqlite import SQLiteStore

__all__ = ["MemoryStore"]


@implementer(IStore)
class MemoryStore(SQLiteStore):
    """An in-memory, synchronous L{IStore} for tests (not for production: it blocks).

    @param clock: supplies C{seconds()} for the rows' timestamps (default: a new C{Clock}).
    """

    def __init__(self, clock=None):
        super().__init__(clock if clock is not None else Clock(), ":memory:")
        self.url = "sqlite::memory:"
        self.unreachable = False
        self._queued: list[tuple[Any, tuple, Deferred]] = []

    def start(self) -> Deferred:
        if self.running:
            return succeed(None)
        self.running = True
        self._pool = None
        try:
            self._openAndMigrate()
        except Exception:
            # as the real stores: a failed start is a failed Deferred, not a raise
            self.running = False
            return fail()
        return succeed(None)

    def close(self) -> Deferred:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.running = False
        queued, self._queued = self._queued, []
        for _, _, d in queued:
            d.errback(StoreClosed(f"store {self.url} closed before this ran"))
        return succeed(None)

    def _call(self, fn, *args, **kwargs) -> Deferred:
        if not self.running:
            raise StoreClosed(f"store {self.url} is not running")
        return maybeDeferred(fn, *args, **kwargs)

    def runQuery(self, sql: str, args: Any = ()) -> Deferred:
        if self.unreachable and self.running:
            return fail(StoreUnavailable(f"store {self.url} is unreachable (simulated)"))
        return super().runQuery(sql, args)

    def runOperation(self, sql: str, args: Any = ()) -> Deferred:
        if self.unreachable and self.running:
            return self._queue(super().runOperation, (sql, args))
        return super().runOperation(sql, args)

    def runInteraction(self, fn, *args, **kwargs) -> Deferred:
        if self.unreachable and self.running:
            return self._queue(lambda: super(MemoryStore, self).runInteraction(fn, *args, **kwargs), ())
        return super().runInteraction(fn, *args, **kwargs)

    def _queue(self, call, args: tuple) -> Deferred:
        d: Deferred = Deferred()
        self._queued.append((call, args, d))
        return d

    def flushQueued(self) -> None:
        """Replay, in order, the writes made while C{unreachable} was set."""
        queued, self._queued = self._queued, []
        for call, args, d in queued:
            call(*args).chainDeferred(d)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats.update(outage=self.unreachable, queued_writes=len(self._queued))
        return stats

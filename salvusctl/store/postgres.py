"""The fleet store: PostgreSQL through txpostgres, with a pool that survives server restarts.

txpostgres 1.7 talks to psycopg2's asynchronous connections from the reactor thread (no threads).
Left alone, a C{txpostgres.Connection} never recovers from a server restart; with a
C{DeadConnectionDetector} it reconnects, but calls made while it is down fail at once with
C{ConnectionDead}.  This module adds what a host needs on top:

  - a small pool of connections (C{pool_size}), each with its own detector and a reactor-driven,
    stoppable reconnection loop;
  - one queue in front of the pool: writes are applied in the order they were made, on one
    connection at a time; a write whose connection died is put back in its place and replayed on
    the next live connection, so a restart loses no write and reorders none; single-statement
    writes queued back to back share a transaction (one commit for a burst or a replayed
    backlog); reads run in parallel on idle connections;
  - while no connection is up (an I{outage}), writes wait in that queue — bounded by
    C{queue_limit}: when full, the oldest queued write is dropped with a log line and its
    Deferred fails with L{QueueFull} — and reads fail at once with L{StoreUnavailable};
  - a dedicated LISTEN connection whose channels are re-LISTENed after each reconnect;
  - migrations applied at start inside one transaction holding C{pg_advisory_xact_lock}, so two
    hosts starting at once on one database apply each step exactly once.

Delivery of a replayed write is at-least-once: when a connection dies after the server committed
a transaction but before the acknowledgement arrived, that write runs again.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, txpostgres
from zope.interface import implementer

from salvusctl.interfaces import IStore
from salvusctl.store.dialects import POSTGRESQL
from salvusctl.store.domain import DomainQueries
from salvusctl.store.errors import QueueFull, StoreClosed, StoreError, StoreUnavailable
from salvusctl.store.migrations import CORE_MIGRATIONS, MIGRATIONS_TABLE, Migration
from salvusctl.store.pgconnection import (
    Detector,
    InlineCooperator,
    ReconnectingConnection,
    backoff,
    isPermanent,
)
from salvusctl.store.pgcursor import InteractionCursor, prepare
from salvusctl.store.sql import checkChannel
from salvusctl.store.url import StoreURL

__all__ = ["PostgresStore", "backoff", "MIGRATION_LOCK_KEY"]

log = Logger()

#: Writes handed to the writing connection at once (txpostgres runs them one after another).
WRITE_PIPELINE = 32

#: Single-statement writes queued back to back that are committed in one transaction: one WAL
#: flush for the lot, which is what makes a replayed backlog drain quickly.
OPS_PER_TRANSACTION = 200

#: The advisory lock every Salvus store takes while migrating (any constant shared by all hosts).
MIGRATION_LOCK_KEY = 0x5A1705


class _Slot:
    """One pooled connection and what the pool knows about it."""

    def __init__(self, store: PostgresStore, name: str, verbose: bool = True):
        self.store = store
        self.name = name
        self.detector = Detector(store._reactor, store._delays, self._down, self._up, name, verbose=verbose)
        self.connection = store.connectionFactory(store._reactor, store._cooperator, detector=self.detector)
        self.up = False
        self.inflight = 0
        self.everUp = False

    def connect(self) -> Deferred:
        """First connection: on a transient failure, the detector keeps retrying."""
        d = self.connection.connect(**self.store._connectKeywords)

        def failed(failure):
            if self.detector.stopped:
                return None
            if isPermanent(failure):
                self.store._permanentFailure(self, failure)
                return None
            self.store._connectFailed(self, failure)
            if not self.detector.connectionIsDead:
                # The detector's retry loop takes over until the server answers.
                self.detector.connectionIsDead = True
                self.detector.startReconnecting(failure)
            return None

        d.addCallbacks(lambda _: self._up(), failed)
        return d

    def _up(self) -> None:
        if self.detector.stopped:
            return
        if self.everUp:
            self.store.reconnects += 1
        self.up = self.everUp = True
        self.store._slotUp(self)

    def _down(self, failure: Failure) -> None:
        wasUp = self.up
        self.up = False
        self.store._slotDown(self, failure, wasUp)

    def close(self) -> None:
        self.detector.stop()
        self.up = False
        try:
            if self.connection._connection is not None:
                self.connection.close()
        except Exception:
            log.failure("closing {name} failed", name=self.name)


class _Job:
    """One call waiting for, or running on, a connection.

    @ivar op: C{(sql, params)} for a single-statement write, which may share a transaction with
        the ones queued next to it; None for reads and interactions.
    @ivar solo: run alone (set after a shared transaction failed, to find which statement did).
    """

    __slots__ = ("seq", "write", "run", "deferred", "queuedAt", "op", "solo")

    def __init__(self, seq: int, write: bool, run, queuedAt: float, op: tuple | None = None):
        self.seq = seq
        self.write = write
        self.run = run
        self.deferred: Deferred = Deferred()
        self.queuedAt = queuedAt
        self.op = op
        self.solo = False


@implementer(IStore)
class PostgresStore(DomainQueries):
    """An L{IStore} on a PostgreSQL database, for hosts that share state.

    @param reactor: the reactor (FD set, timers) the connections run on.
    @param parsed_url: the parsed C{postgresql://} URL.
    @param pool_size: connections used for queries (plus one for LISTEN once C{listen} is used).
    @param queue_limit: writes kept while the database is unreachable.
    @param close_timeout: how long C{close()} waits for queued writes to be flushed.
    @param reconnect_delays: a callable returning an iterator of delays between attempts
        (default L{backoff}C{()}).
    """

    dialect = "postgresql"
    sql = POSTGRESQL

    #: Makes each pooled connection: C{(reactor, cooperator, detector=)} -> a txpostgres
    #: C{Connection}.  Tests put a scripted connection here to drive the queue on a C{Clock}.
    connectionFactory = ReconnectingConnection

    def __init__(
        self,
        reactor,
        parsed_url: StoreURL,
        pool_size: int = 4,
        queue_limit: int = 10000,
        close_timeout: float = 10.0,
        start_timeout: float | None = None,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
    ):
        if parsed_url.scheme != "postgresql":
            raise StoreError(f"not a PostgreSQL URL: {parsed_url.redacted()}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        if queue_limit < 1:
            raise ValueError(f"queue_limit must be at least 1, not {queue_limit}")
        self._reactor = reactor
        self._parsed = parsed_url
        self.url = parsed_url.redacted()
        self.pool_size = pool_size
        self.queue_limit = queue_limit
        self.close_timeout = close_timeout
        #: Seconds start() waits for a first connection before it fails (None: wait for ever).
        self.start_timeout = start_timeout or None
        self._startTimer = None
        self._lastConnectError = ""
        self._delays = reconnect_delays or backoff()
        self._connectKeywords = dict(
            parsed_url.dsnKeywords(),
            application_name="salvus",
            # A server that vanishes without closing the socket (a crashed machine, a cut
            # network) is noticed by TCP keepalive within about a minute, not hours.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        self._migrations: dict[str, list[Migration]] = {"core": list(CORE_MIGRATIONS)}
        self._listeners: dict[str, list[Callable[[str], Any]]] = defaultdict(list)
        self._slots: list[_Slot] = []
        self._listener: _Slot | None = None
        self._reads: deque[_Job] = deque()
        self._writes: deque[_Job] = deque()
        self._writer: _Slot | None = None
        self._writesInFlight = 0
        self._seq = 0
        self._cooperator: InlineCooperator | None = None
        self._starting: Deferred | None = None
        self._migrated = False
        self._migrating = False
        self._outage = False
        self._dropped = 0
        self._idleWaiters: list[Deferred] = []
        self._listenWaiters: list[Deferred] = []
        self._fatal: StoreError | None = None
        self._listening: set[str] = set()
        #: Connections (pool or LISTEN) re-established after a loss, since start.
        self.reconnects = 0
        #: Calls put back in the queue because their connection died under them.
        self.replayed = 0
        self.running = False
        self.closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Deferred:
        """Connect the pool and migrate; fires once the schema is current.

        When the server is unreachable the pool keeps retrying and this fires when it is back;
        writes made meanwhile are queued — unless C{start_timeout} is set: then a server still
        unreachable after that many seconds fails it with L{StoreUnavailable} (the host exits so
        that its service manager can retry, instead of running on without its database).  A
        server that refuses us (no such database, bad credentials) fails it at once.
        """
        if self._starting is not None:
            return self._chain(self._starting)
        self.running = True
        self._starting = Deferred()
        self._cooperator = InlineCooperator()
        self._slots = [_Slot(self, f"{self.url}#{i}", verbose=(i == 0)) for i in range(self.pool_size)]
        for slot in self._slots:
            slot.connect()
        if self.start_timeout is not None and not self._starting.called:
            self._startTimer = self._reactor.callLater(self.start_timeout, self._startTimedOut)
        ready = self._chain(self._starting)
        if self._listeners:
            # Channels subscribed before start are LISTENed before start() fires.
            listening: Deferred = Deferred()
            self._listenWaiters.append(listening)
            self._startListener()
            both = gatherResults([ready, listening], consumeErrors=True)
            both.addCallbacks(lambda _: None, lambda f: f.value.subFailure)
            return both
        return ready

    @staticmethod
    def _chain(d: Deferred) -> Deferred:
        out: Deferred = Deferred()

        def fire(result):
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
            return None  # each caller got its own copy

        d.addBoth(fire)
        return out

    def close(self) -> Deferred:
        """Stop taking calls, flush the queue (at most C{close_timeout}), close every connection."""
        if not self.running or self.closing:
            return succeed(None)
        self.closing = True
        waited: Deferred = Deferred()
        self._idleWaiters.append(waited)
        timer = self._reactor.callLater(self.close_timeout, self._flushTimedOut, waited)
        self._checkIdle()

        def shut(_):
            if timer.active():
                timer.cancel()
            self._shut()

        return waited.addCallback(shut)

    def _startTimedOut(self) -> None:
        self._startTimer = None
        if self._migrated or self._fatal is not None or not self.running:
            return
        why = f": {self._lastConnectError}" if self._lastConnectError else ""
        self._giveUp(StoreUnavailable(
            f"store {self.url} not reachable within {self.start_timeout:g}s of start (start_timeout){why}"
        ))

    def _flushTimedOut(self, waited: Deferred) -> None:
        if waited in self._idleWaiters:
            self._idleWaiters.remove(waited)
            log.warn(
                "store {url}: closing with {n} queued writes not written after {t}s",
                url=self.url,
                n=len(self._writes) + self._writesInFlight,
                t=self.close_timeout,
            )
            waited.callback(None)

    def _cancelStartTimer(self) -> None:
        if self._startTimer is not None and self._startTimer.active():
            self._startTimer.cancel()
        self._startTimer = None

    def _shut(self) -> None:
        self.running = False
        self._cancelStartTimer()
        jobs = list(self._reads) + list(self._writes)
        self._reads.clear()
        self._writes.clear()
        for job in jobs:
            job.deferred.errback(StoreClosed(f"store {self.url} closed before this ran"))
        for slot in self._slots + ([self._listener] if self._listener else []):
            slot.close()
        waiters, self._listenWaiters = self._listenWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._starting is not None and not self._starting.called:
            self._starting.errback(StoreClosed(f"store {self.url} closed while starting"))
        log.info("store closed: {url}", url=self.url)

    # -- connection events (called by the slots) -------------------------------------------------

    def _connectFailed(self, slot: _Slot, failure: Failure) -> None:
        if slot is self._listener:
            return
        self._lastConnectError = str(failure.value).strip().splitlines()[0] if str(failure.value) else ""
        if not any(s.up for s in self._slots) and not self._outage:
            self._enterOutage(failure)

    def _permanentFailure(self, slot: _Slot, failure: Failure) -> None:
        message = str(failure.value).strip().splitlines()[0]
        self._giveUp(StoreError(f"store {self.url} refused the connection: {message}"))

    def _giveUp(self, error: StoreError) -> None:
        """Retrying cannot help (no such database, bad credentials, a broken migration): fail
        start() and every queued and later call with the reason, and stop reconnecting."""
        if self._fatal is not None:
            return
        self._fatal = error
        self._cancelStartTimer()
        log.error("{error}", error=error)
        for s in self._slots + ([self._listener] if self._listener else []):
            s.detector.stop()
        jobs = list(self._reads) + list(self._writes)
        self._reads.clear()
        self._writes.clear()
        for job in jobs:
            job.deferred.errback(error)
        if self._starting is not None and not self._starting.called:
            self._starting.errback(error)

    def _slotUp(self, slot: _Slot) -> None:
        if slot is self._listener:
            self._relisten()
            return
        if self._outage:
            self._outage = False
            log.info(
                "store {url} reachable again: replaying {n} queued writes{dropped}",
                url=self.url,
                n=len(self._writes),
                dropped=f" ({self._dropped} dropped while it was down)" if self._dropped else "",
            )
            self._dropped = 0
        if not self._migrated:
            self._migrate(slot)
        self._pump()

    def _slotDown(self, slot: _Slot, failure: Failure, wasUp: bool) -> None:
        if slot is self._listener:
            self._listening.clear()
            log.warn("store {url}: LISTEN connection lost; reconnecting", url=self.url)
            return
        if self.closing and not self.running:
            return
        if not any(s.up for s in self._slots):
            if not self._outage:
                self._enterOutage(failure)
        elif wasUp:
            log.info(
                "store {url}: connection {name} lost ({why}); reconnecting, the others carry on",
                url=self.url,
                name=slot.name.rsplit("#", 1)[-1],
                why=str(failure.value).strip().splitlines()[0] if str(failure.value) else "?",
            )

    def _enterOutage(self, failure: Failure) -> None:
        self._outage = True
        why = str(failure.value).strip().splitlines()[0] if failure else "?"
        log.warn(
            "store {url} unreachable ({why}): queueing writes (at most {limit}), failing reads",
            url=self.url,
            why=why,
            limit=self.queue_limit,
        )
        reads = list(self._reads)
        self._reads.clear()
        for job in reads:
            job.deferred.errback(self._unavailable())
        self._trim()

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(f"store {self.url} is unreachable; reads fail until it is back")

    # -- migrations ------------------------------------------------------------------------------

    def _migrate(self, slot: _Slot) -> None:
        if self._migrating:
            return
        self._migrating = True
        slot.inflight += 1
        d = slot.connection.runInteraction(self._applyMigrations)

        def done(result):
            slot.inflight -= 1
            self._migrating = False
            if isinstance(result, Failure):
                if slot.detector.connectionIsDead or result.check(reconnection.ConnectionDead):
                    # Retried on the next connection that comes up.
                    live = [s for s in self._slots if s.up]
                    if live:
                        self._migrate(live[0])
                    return None
                error = result.value
                if not isinstance(error, StoreError):
                    error = StoreError(f"store {self.url}: migrations failed: {error}")
                self._giveUp(error)
                return None
            self._migrated = True
            self._cancelStartTimer()
            log.info("store ready: {url} ({n} migration steps applied)", url=self.url, n=result)
            if self._starting is not None and not self._starting.called:
                self._starting.callback(None)
            self._pump()
            return None

        d.addBoth(done)

    def _applyMigrations(self, cursor: txpostgres.Cursor) -> Deferred:
        """One transaction: lock, create the ledger, apply what is missing, record it."""
        applied = []

        def lock(_=None):
            return cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))

        def ledger(_):
            return cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (component TEXT NOT NULL,"
                " version INTEGER NOT NULL, description TEXT, applied_at DOUBLE PRECISION,"
                " PRIMARY KEY (component, version))"
            )

        def done(_):
            return cursor.execute(f"SELECT component, version FROM {MIGRATIONS_TABLE}")

        def apply(c):
            have = {(component, version) for component, version in c.fetchall()}
            d: Deferred = succeed(None)
            for component, steps in self._migrations.items():
                for step in sorted(steps, key=lambda s: s.version):
                    if (component, step.version) in have:
                        continue
                    for statement in step.statements(self.sql):
                        d.addCallback(lambda _, s=statement: cursor.execute(s))
                    d.addCallback(
                        lambda _, c=component, s=step: cursor.execute(
                            f"INSERT INTO {MIGRATIONS_TABLE} VALUES (%s, %s, %s, %s)",
                            (c, s.version, s.description, self._now()),
                        )
                    )
                    d.addErrback(self._stepFailed, component, step)
                    applied.append((component, step.version))
            return d

        d = lock()
        d.addCallback(ledger).addCallback(done).addCallback(apply)
        return d.addCallback(lambda _: len(applied))

    def _stepFailed(self, failure: Failure, component: str, step: Migration) -> Failure:
        if failure.check(StoreError) or self._isConnectionLoss(failure):
            return failure
        message = str(failure.value).strip().splitlines()[0]
        return Failure(
            StoreError(
                f"store {self.url}: migration {component} {step.version} ({step.description})"
                f" failed: {message}"
            )
        )

    @staticmethod
    def _isConnectionLoss(failure: Failure) -> bool:
        return bool(
            failure.check(reconnection.ConnectionDead, psycopg2.OperationalError, psycopg2.InterfaceError)
        )

    # -- the job queue ---------------------------------------------------------------------------

    def _submit(self, write: bool, run, op: tuple | None = None) -> Deferred:
        if not self.running or self.closing:
            return fail(StoreClosed(f"store {self.url} is not running"))
        if self._fatal is not None:
            return fail(self._fatal)
        if not write and self._outage:
            return fail(self._unavailable())
        self._seq += 1
        job = _Job(self._seq, write, run, self._now(), op)
        if write:
            self._writes.append(job)
            self._trim()
        else:
            self._reads.append(job)
        self._pump()
        return job.deferred

    def _trim(self) -> None:
        """In an outage, keep at most C{queue_limit} writes: drop the oldest."""
        if not self._outage:
            return
        while len(self._writes) > self.queue_limit:
            oldest = self._writes.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warn(
                    "store {url} unreachable and its write queue is full ({limit}): dropped the"
                    " oldest queued write (queued {age:.1f}s ago; {n} dropped in this outage)",
                    url=self.url,
                    limit=self.queue_limit,
                    age=self._now() - oldest.queuedAt,
                    n=self._dropped,
                )
            oldest.deferred.errback(
                QueueFull(
                    f"store {self.url} unreachable and {self.queue_limit} writes already queued:"
                    " this, the oldest, was dropped"
                )
            )

    def _pump(self) -> None:
        """Hand queued calls to connections.

        Writes go, in the order they were made, to one connection at a time (pipelined up to
        C{WRITE_PIPELINE} deep), so they are applied in order even across a reconnect: when that
        connection dies, nothing more is sent until every write it held has come back and been
        put back in its place.  Reads run in parallel on idle connections.
        """
        if not self._migrated:
            return
        while self._writes:
            if self._writesInFlight == 0:
                writer = self._pickWriter()
                if writer is None:
                    break
                self._writer = writer
            elif not self._writer.up or self._writesInFlight >= WRITE_PIPELINE:
                break
            job = self._writes.popleft()
            if job.op is not None and not job.solo and self._writes and self._writes[0].op:
                batch = [job]
                while (
                    self._writes
                    and len(batch) < OPS_PER_TRANSACTION
                    and self._writes[0].op is not None
                    and not self._writes[0].solo
                ):
                    batch.append(self._writes.popleft())
                self._dispatchBatch(self._writer, batch)
            else:
                self._dispatch(self._writer, job)
        for slot in self._slots:
            if not self._reads:
                break
            if slot.up and slot.inflight == 0:
                self._dispatch(slot, self._reads.popleft())
        self._checkIdle()

    def _pickWriter(self) -> _Slot | None:
        up = [s for s in self._slots if s.up]
        idle = [s for s in up if s.inflight == 0]
        return (idle or up or [None])[0]

    def _dispatch(self, slot: _Slot, job: _Job) -> None:
        slot.inflight += 1
        if job.write:
            self._writesInFlight += 1
        d = maybeDeferred(job.run, slot.connection)

        def finished(result):
            slot.inflight -= 1
            if job.write:
                self._writesInFlight -= 1
            if isinstance(result, Failure) and (
                result.check(reconnection.ConnectionDead) or slot.detector.connectionIsDead
            ):
                if not self.running:
                    job.deferred.errback(result)
                elif job.write:
                    # Back in its place: replayed on the next live connection.
                    self._requeue(self._writes, job)
                elif not self._outage:
                    self._requeue(self._reads, job)
                else:
                    job.deferred.errback(self._unavailable())
            elif isinstance(result, Failure):
                job.deferred.errback(result)
            else:
                job.deferred.callback(result)
            self._pump()
            return None

        d.addBoth(finished)

    def _dispatchBatch(self, slot: _Slot, jobs: list[_Job]) -> None:
        """Several single-statement writes in one transaction, in order.

        If the transaction fails for another reason than a lost connection, the writes go back to
        the front of the queue to run one by one: only the faulty one fails, the rest commit,
        still in order.
        """
        slot.inflight += 1
        self._writesInFlight += 1

        def together(cursor):
            d: Deferred = succeed(None)
            for job in jobs:
                sql, params = job.op
                d.addCallback(lambda _, sql=sql, params=params: cursor.execute(sql, params))
            return d

        d = maybeDeferred(slot.connection.runInteraction, together)

        def finished(result):
            slot.inflight -= 1
            self._writesInFlight -= 1
            if isinstance(result, Failure):
                dead = result.check(reconnection.ConnectionDead) or slot.detector.connectionIsDead
                for job in reversed(jobs):
                    if not self.running:
                        job.deferred.errback(result)
                        continue
                    if not dead:
                        job.solo = True
                    self._requeue(self._writes, job, replay=bool(dead))
            else:
                for job in jobs:
                    job.deferred.callback(None)
            self._pump()
            return None

        d.addBoth(finished)

    def _requeue(self, queue: deque[_Job], job: _Job, replay: bool = True) -> None:
        index = len(queue)
        for i, other in enumerate(queue):
            if other.seq > job.seq:
                index = i
                break
        queue.insert(index, job)
        if replay:
            self.replayed += 1

    def _checkIdle(self) -> None:
        if not self._idleWaiters:
            return
        if self._writes or self._reads or any(s.inflight for s in self._slots):
            return
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- primitives ------------------------------------------------------------------------------

    def runQuery(self, sql: str, args: Any = ()) -> Deferred:
        try:
            sql, params = self._prepare(sql, args)
        except StoreError:
            return fail()
        return self._submit(False, lambda conn: conn.runQuery(sql, params))

    def runOperation(self, sql: str, args: Any = ()) -> Deferred:
        try:
            sql, params = self._prepare(sql, args)
        except StoreError:
            return fail()
        return self._submit(True, lambda conn: conn.runOperation(sql, params), (sql, params))

    def runInteraction(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        def interaction(txcursor):
            cursor = InteractionCursor(txcursor)
            d = maybeDeferred(fn, cursor, *args, **kwargs)
            return d.addBoth(cursor._settle)

        return self._submit(True, lambda conn: conn.runInteraction(interaction))

    @staticmethod
    def _prepare(sql: str, args: Any) -> tuple[str, tuple | None]:
        return prepare(sql, args)

    # -- notifications ---------------------------------------------------------------------------

    def notify(self, channel: str, payload: str) -> Deferred:
        """C{NOTIFY}: a write, so it is queued (not lost) during an outage."""
        self._checkChannel(channel)
        return self.runOperation("SELECT pg_notify(?, ?)", (channel, payload))

    def listen(self, channel: str, callback: Callable[[str], Any]) -> Deferred:
        """Register C{callback}; fires once the channel is LISTENed (or at once if the server is
        down: the LISTEN is issued when it returns)."""
        self._checkChannel(channel)
        first = channel not in self._listeners
        self._listeners[channel].append(callback)
        if not self.running:
            return succeed(None)
        if self._listener is None:
            self._startListener()
        elif self._listener.up:
            if first:
                return self._issueListen(channel)
            return succeed(None)
        if self._outage:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._listenWaiters.append(waiter)
        return waiter

    @staticmethod
    def _checkChannel(channel: str) -> None:
        checkChannel(channel)

    def _startListener(self) -> None:
        slot = self._listener = _Slot(self, f"{self.url}#listen")
        slot.connection.addNotifyObserver(self._notified)
        slot.connect()

    def _relisten(self) -> None:
        slot = self._listener
        if slot is None:
            return
        issued = [self._issueListen(channel) for channel in list(self._listeners)]

        def fire(_):
            waiters, self._listenWaiters = self._listenWaiters, []
            for waiter in waiters:
                waiter.callback(None)

        DeferredList(issued).addCallback(fire)

    def _issueListen(self, channel: str) -> Deferred:
        assert self._listener is not None
        d = self._listener.connection.runOperation(f'LISTEN "{channel}"')

        def listening(_):
            self._listening.add(channel)

        def failed(f):
            log.warn(
                "store {url}: LISTEN {channel} failed: {why}",
                url=self.url,
                channel=channel,
                why=f.getErrorMessage(),
            )

        return d.addCallbacks(listening, failed)

    def _notified(self, notify) -> None:
        for callback in list(self._listeners.get(notify.channel, ())):
            try:
                callback(notify.payload)
            except Exception:
                log.failure("listener of {channel} failed", channel=notify.channel)

    # -- introspection for the admin and tests ---------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Pool state as plain data: connections up, queued writes, whether in an outage."""
        return {
            "url": self.url,
            "connections": len(self._slots),
            "up": sum(1 for s in self._slots if s.up),
            "busy": sum(1 for s in self._slots if s.inflight),
            "queued_reads": len(self._reads),
            "queued_writes": len(self._writes),
            "outage": self._outage,
            "migrated": self._migrated,
            "reconnects": self.reconnects,
            "replayed": self.replayed,
            "listening": sorted(self._listening),
        }

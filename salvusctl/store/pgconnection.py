"""txpostgres connections that survive a server restart: the pieces the PostgreSQL store pools.

txpostgres 1.7 with psycopg2 2.9: a plain C{Connection} never recovers from a server restart; with
a C{DeadConnectionDetector} it reconnects, but its retry loop cannot be stopped once started (a
closed store would go on reconnecting), any OperationalError — a statement timeout too — counts as
a dead connection, and the library logs an "Unhandled Error" when the server ends an idle
connection and another when it tries to roll back on a closed one.  L{Detector} and
L{ReconnectingConnection} fix those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg2
from twisted.internet import main
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, txpostgres

__all__ = [
    "backoff",
    "isBroken",
    "isPermanent",
    "ReconnectingConnection",
    "Detector",
    "InlineCooperator",
]

log = Logger()

# Connection errors that mean "the server is there but says no": retrying will not help.
_PERMANENT = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "password",
    "permission denied",
    "invalid",
)


def backoff(initial: float = 0.1, factor: float = 2.0, maximum: float = 5.0) -> Callable[[], Iterator[float]]:
    """Reconnection delays: try at once, then C{initial}, growing by C{factor} up to C{maximum}."""

    def delays() -> Iterator[float]:
        yield 0.0
        delay = initial
        while True:
            yield delay
            delay = min(delay * factor, maximum)

    return delays


def isPermanent(failure: Failure) -> bool:
    if not failure.check(psycopg2.OperationalError):
        return False
    text = str(failure.value)
    if "could not connect" in text or "Connection refused" in text or "timeout" in text:
        return False
    return any(marker in text for marker in _PERMANENT)


def isBroken(raw) -> bool:
    """Is this psycopg2 connection unusable?

    psycopg2 marks a connection C{closed} only when it notices the loss itself; when the server
    ends an idle connection during a shutdown, libpq may already have dropped the socket
    (C{fileno()} is -1) while C{closed} is still 0.
    """
    if raw is None or raw.closed:
        return True
    try:
        return raw.fileno() < 0
    except psycopg2.Error:
        return True


class ReconnectingConnection(txpostgres.Connection):
    """A txpostgres connection that reports a server-side disconnect as connection loss.

    When the server ends an idle connection, psycopg2's C{poll()} raises inside C{doRead}, or
    libpq drops the socket and txpostgres then asks the reactor to watch file descriptor -1; the
    reactor would log either as an unhandled error and the loss would go unnoticed until the next
    query.  Here both become C{connectionLost} with an C{OperationalError}, which is what the
    detector listens to.
    """

    def _lost(self) -> psycopg2.OperationalError:
        return psycopg2.OperationalError("the server closed the connection")

    def doRead(self):
        self.reactor.removeReader(self)
        if not self._connection.closed:
            try:
                self.continuePolling()
            except psycopg2.Error as e:
                return e
        self.checkForNotifies()
        if isBroken(self._connection):
            return self._lost()
        self.reactor.addReader(self)
        return None

    def cursorFinished(self, cursor):
        self._cursors.discard(cursor)
        if isBroken(self._connection):
            # The statement's own result (or error) still reaches its caller; the loss of the
            # connection is reported now rather than at its next use.
            if self.detector is not None:
                self.detector.checkForDeadConnection(Failure(self._lost()))
            return
        self.reactor.addReader(self)
        self.checkForNotifies()

    def close(self):
        if not isBroken(self._connection):
            return txpostgres.Connection.close(self)
        # txpostgres would push each cursor's poll cycle forward, which on a dropped socket means
        # watching file descriptor -1: just fail what was waiting and let go.
        self.reactor.removeReader(self)
        self.reactor.removeWriter(self)
        for cursor in set(self._cursors):
            self.reactor.removeReader(cursor)
            self.reactor.removeWriter(cursor)
            if cursor._pollingD is not None:
                d, cursor._pollingD = cursor._pollingD, None
                d.errback(Failure(self._lost()))
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self.connectionLost(Failure(main.CONNECTION_DONE))
        return None

    def connectionLost(self, reason):
        if not isBroken(self._connection):
            txpostgres._PollingMixin.connectionLost(self, reason)
        elif self._pollingD:
            d, self._pollingD = self._pollingD, None
            d.errback(reason)
        if self.detector is not None:
            self.detector.checkForDeadConnection(reason)

    def _runInteraction(self, interaction, *args, **kwargs):
        # As txpostgres's, except that a connection the server already closed is not rolled
        # back (that cannot work, and txpostgres would log the attempt as an error): the
        # original failure goes to the detector, which reconnects.
        c = self.cursor()
        d = c.execute("begin")
        d.addCallback(interaction, *args, **kwargs)

        def commit(result):
            return c.execute("commit").addCallback(lambda _: result)

        def rollback(failure):
            if isBroken(self._connection):
                return failure

            def panic(rollbackFailure):
                log.failure("rollback failed", rollbackFailure)
                return Failure(txpostgres.RollbackFailed(self, failure))

            e = maybeDeferred(c.execute, "rollback")
            return e.addCallbacks(lambda _: failure, panic)

        d.addCallback(commit)
        return d.addErrback(rollback)


class InlineCooperator:
    """Delivers notifications as they are read.

    txpostgres hands each batch of notifications to a Cooperator; our observer is synchronous
    and cheap, so running the batch at once needs no timers and leaves none behind at close.
    """

    def cooperate(self, iterator) -> None:
        for _ in iterator:
            pass


class Detector(reconnection.DeadConnectionDetector):
    """A C{DeadConnectionDetector} whose reconnection loop runs on the injected reactor, can be
    stopped (a closed store must leave no timer behind) and tells its owner when the connection
    goes down and comes back."""

    def __init__(
        self,
        reactor,
        delays: Callable[[], Iterator[float]],
        onDown,
        onUp,
        name: str,
        verbose: bool = True,
    ):
        super().__init__(deathChecker=self._isDeath, reconnectionIterator=delays, reactor=reactor)
        self._onDown = onDown
        self._name = name
        self.stopped = False
        self._delays: Iterator[float] | None = None
        self._timer = None
        self._attempt: Deferred | None = None
        self._failures = 0
        # One connection per pool speaks up about failed attempts; the store logs the outage.
        self._verbose = verbose
        self.addRecoveryHandler(onUp)

    def _isDeath(self, failure: Failure) -> bool:
        if failure.check(txpostgres.RollbackFailed, reconnection.ConnectionDead):
            return True
        if failure.check(psycopg2.InterfaceError, psycopg2.OperationalError):
            # A statement timeout is an OperationalError too: only a broken connection is dead.
            return isBroken(getattr(self.reconnectable, "_connection", None))
        return False

    def checkForDeadConnection(self, f):
        wasDead = self.connectionIsDead
        result = super().checkForDeadConnection(f)
        if self.connectionIsDead and not wasDead:
            self._onDown(f)
        return result

    def startReconnecting(self, f):
        if self.stopped:
            return
        self._delays = self.reconnectionIterator()
        self._failures = 0
        self._schedule()

    def _schedule(self):
        if self.stopped:
            return
        delay = next(self._delays)
        self._timer = self.reactor.callLater(delay, self._try)

    def _try(self):
        self._timer = None
        if self.stopped:
            return
        self._attempt = maybeDeferred(self.reconnect)
        self._attempt.addCallbacks(self._reconnected, self._failedAgain)

    def _reconnected(self, _):
        self._attempt = None
        if self.stopped:
            self.reconnectable.close()
            return
        d = self.connectionRecovered()
        d.addErrback(lambda f: log.failure("recovery of {name} failed", f, name=self._name))

    def _failedAgain(self, failure):
        self._attempt = None
        self._failures += 1
        if self._verbose and self._failures % 20 == 0:
            log.warn(
                "{name}: still unreachable after {n} attempts: {why}",
                name=self._name,
                n=self._failures,
                why=str(failure.value).strip().splitlines()[0] if str(failure.value) else failure,
            )
        self._schedule()

    def stop(self) -> None:
        """Stop reconnecting (the store is closing)."""
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

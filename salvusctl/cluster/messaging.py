"""The mailbox: messages between hosts, kept in the shared store, woken by NOTIFY.

Sending inserts a row into C{cluster_messages} and notifies C{salvus_cluster_messages} with the
recipient's name.  A receiver looks at its pending messages when notified for itself (or for
C{'*'}), and once per heartbeat whatever happened — so a notification lost while the LISTEN
connection was reconnecting delays a message by one heartbeat at most, and a host that was down
finds its messages when it comes back.

Each message is handled in order (oldest id first, so in the order each sender sent them), one at
a time: it is first I{claimed} (a C{cluster_deliveries} row keyed by message and host, so it is
received once per host however many times it is looked at), then given to the handler of its
kind, then marked C{acked} with the handler's result or C{failed} with the reason.  A body that is
not JSON, a kind nobody handles, a handler that raises or times out: each is logged in one line and
marked failed; the next message is handled as usual.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as HandlerTimeout
from twisted.logger import Logger

from salvusctl.cluster.domain import BadMessage, Message, checkKind, decodeBody, encodeBody
from salvusctl.cluster.schema import BROADCAST, CHANNEL_MESSAGES
from salvusctl.store.errors import StoreError

__all__ = ["Mailbox", "ACKED", "FAILED", "DELIVERED"]

log = Logger()

DELIVERED = "delivered"  # claimed by the receiver, its handler not finished (or interrupted)
ACKED = "acked"  # handled; C{result} holds the handler's result as JSON
FAILED = "failed"  # not handled; C{result} holds the reason

Handler = Callable[[Message], Any]


def _oneLine(failure) -> str:
    value = failure.value
    text = str(value).strip().splitlines()[0] if str(value).strip() else ""
    name = type(value).__name__
    if isinstance(value, KeyError) and value.args:
        text = f"unknown name {value.args[0]!r}"
    return f"{name}: {text}" if text else name


class Mailbox:
    """This host's end of the messaging: send, receive in order, handle by kind.

    @param tables: an L{IClusterStore}.
    @param notify: C{notify(channel, payload)} of the store (the wake-up).
    @param claimer: this run's token in the deliveries it claims (default: random).
    @param batch: pending messages read at once.
    @param handler_timeout: seconds a handler may take before its message is marked failed.
    """

    def __init__(self, clock: Any, tables: Any, name: str, notify: Callable[[str, str], Any],
                 claimer: str | None = None, batch: int = 100, handler_timeout: float = 600.0):
        self.clock = clock
        self.tables = tables
        self.name = name
        self.notify = notify
        self.claimer = claimer or secrets.token_hex(8)
        self.batch = batch
        self.handler_timeout = handler_timeout
        self.handlers: dict[str, Handler] = {}
        self.running = False
        self._polling: Deferred | None = None
        self._again = False
        self._unreachable = False
        #: Messages handled since start, by outcome (for the admin and tests).
        self.counts = {ACKED: 0, FAILED: 0}

    # -- handlers --------------------------------------------------------------------------------

    def addHandler(self, kind: str, handler: Handler) -> None:
        """Handle messages of C{kind} with C{handler(message)} (a result or a Deferred of one)."""
        checkKind(kind)
        if not callable(handler):
            raise TypeError(f"handler for {kind!r} is not callable: {handler!r}")
        self.handlers[kind] = handler

    def removeHandler(self, kind: str) -> None:
        self.handlers.pop(kind, None)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, recipient: str, kind: str, body: Any = None, reply_to: str | None = None,
             uid: str | None = None) -> Deferred:
        """Queue a message for C{recipient} (a host name or C{'*'}); fires with its id.

        Bad input (kind, body that is not JSON data) fails the Deferred with L{BadMessage} and
        stores nothing.  While the store is unreachable the message waits in the store's write
        queue and is sent when it returns.
        """
        try:
            checkKind(kind)
            text = encodeBody(body)
            if not isinstance(recipient, str) or not recipient:
                raise BadMessage(f"recipient must be a host name or '*', not {recipient!r}")
        except BadMessage:
            from twisted.internet.defer import fail

            return fail()
        uid = uid or secrets.token_hex(12)
        d = self.tables.send(uid, self.name, recipient, kind, text, self.clock.seconds(), reply_to)

        def sent(message_id):
            woken = self.notify(CHANNEL_MESSAGES, recipient)
            if isinstance(woken, Deferred):
                woken.addErrback(lambda f: log.warn("cluster: wake-up for {to} not sent: {why}",
                                                    to=recipient, why=f.getErrorMessage()))
            return message_id

        return d.addCallback(sent)

    # -- receiving -------------------------------------------------------------------------------

    def notified(self, payload: str) -> None:
        """A C{salvus_cluster_messages} notification: look at the mailbox if it is for us."""
        if self.running and payload in (self.name, BROADCAST):
            self.poll()

    def poll(self) -> Deferred:
        """Handle every pending message, oldest first; fires when the mailbox is empty.

        One poll runs at a time; a poll asked for while one runs makes that one look again
        before it ends.  Never fails: a store error is logged and the next poll retries.
        """
        if not self.running:
            return succeed(None)
        if self._polling is not None:
            self._again = True
            return succeed(None)
        d = self._drain()

        def done(result):
            self._polling = None
            return None

        def failed(failure):
            if failure.check(StoreError):
                if not self._unreachable:
                    self._unreachable = True
                    log.warn("cluster: mailbox of {name} not read: {why}; retrying at the next heartbeat",
                             name=self.name, why=failure.getErrorMessage())
                return None
            log.failure("cluster: reading the mailbox failed", failure)
            return None

        d.addErrback(failed).addBoth(done)
        if not d.called:
            self._polling = d
        return d

    @inlineCallbacks
    def _drain(self):
        while self.running:
            self._again = False
            rows = yield self.tables.pending(self.name, self.batch)
            self._unreachable = False
            for row in rows:
                if not self.running:
                    return
                yield self._deliver(tuple(row))
            if len(rows) < self.batch and not self._again:
                return

    @inlineCallbacks
    def _deliver(self, row: tuple):
        message_id, uid, sender, recipient, kind, body, created, reply_to = row
        mine = yield self.tables.claim(int(message_id), self.name, self.claimer, self.clock.seconds())
        if not mine:
            return
        state, result = yield self._handle(row)
        self.counts[state] += 1
        yield self.tables.finish(int(message_id), self.name, state, result, self.clock.seconds())

    def _handle(self, row: tuple) -> Deferred:
        """Run the handler of one message; fires with C{(state, result text)}, never fails."""
        message_id, uid, sender, recipient, kind, body, created, reply_to = row
        where = f"message {message_id} ({kind!r} from {sender})"
        try:
            data = decodeBody(body)
        except BadMessage as e:
            log.error("cluster: {where}: {why}; marked failed", where=where, why=str(e))
            return succeed((FAILED, str(e)))
        handler = self.handlers.get(kind)
        if handler is None:
            why = f"no handler for kind {kind!r} on {self.name} (known: {', '.join(sorted(self.handlers))})"
            log.error("cluster: {where}: {why}; marked failed", where=where, why=why)
            return succeed((FAILED, why))
        message = Message(id=int(message_id), uid=uid, sender=sender, recipient=recipient, kind=kind,
                          body=data, created=float(created), reply_to=reply_to)
        d = maybeDeferred(handler, message)
        if self.handler_timeout:
            d.addTimeout(self.handler_timeout, self.clock)

        def handled(result):
            try:
                text = json.dumps(result, sort_keys=True, default=str)
            except ValueError:
                text = json.dumps(str(result))
            return (ACKED, text)

        def failed(failure):
            if failure.check(CancelledError, HandlerTimeout):
                why = f"handler timed out after {self.handler_timeout:g}s"
            else:
                why = _oneLine(failure)
            if failure.check(KeyError, ValueError, TypeError, HandlerTimeout, CancelledError, BadMessage):
                log.error("cluster: {where} failed: {why}", where=where, why=why)
            else:
                log.failure("cluster: {where} failed", failure, where=where)
            return (FAILED, why)

        return d.addCallbacks(handled, failed)

    # -- retention -------------------------------------------------------------------------------

    def prune(self, retention: float, keep: int) -> Deferred:
        """Drop messages older than C{retention} seconds and beyond the newest C{keep}."""
        d = self.tables.prune(self.clock.seconds() - retention, keep)

        def pruned(n):
            if n:
                log.info("cluster: retention dropped {n} old messages", n=n)
            return n

        return d.addCallback(pruned)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True

    def stop(self) -> Deferred:
        """Stop handling; fires once the message being handled (if any) is finished."""
        self.running = False
        polling = self._polling
        if polling is None:
            return succeed(None)
        waited: Deferred = Deferred()
        polling.addBoth(lambda r: (waited.callback(None), r)[1])
        return waited

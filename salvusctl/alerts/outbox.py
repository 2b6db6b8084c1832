"""The alert notification outbox: every e-mail and webhook notice is first written to the store,
then delivered, and retried with backoff until it is delivered or expires.

A notice sent once and forgotten is lost whenever its receiver is down when the alert fires — the
FIRING notice of exactly the outage an operator most needs to hear about.  So the engine only
I{enqueues}: one row per (notice, action) in C{alert_notifications}.  The outbox delivers the
rows of its host in order, per action: a later notice (the RESOLVED) waits behind an earlier one
(its FIRING) still being retried, so an operator never reads "resolved" before "firing".  A
failed attempt is retried after C{retry_initial} seconds, doubling up to C{retry_max}; a notice
not delivered within C{expire_after} seconds of being queued is given up, logged as an error and
counted.  Rows survive a restart of the host: what was queued is delivered after it.

Delivery is at-least-once: a host that stops between a receiver's acceptance and the row's
update sends that notice again when it starts.

Timing goes through the injected clock (a C{Clock} in tests); the actions use their own reactor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.logger import Logger

from salvusctl.alerts.actions import actionKey

__all__ = ["NotificationOutbox", "actionKey"]

log = Logger()

_COLUMNS = ("id", "action", "title", "alert", "attempts", "created_at", "next_at", "expires_at",
            "delivered_at", "expired_at", "last_error")


def _alertFromDict(data: Mapping[str, Any]):
    from salvusctl.alerts.engine import Alert

    return Alert(**{f.name: data[f.name] for f in fields(Alert) if f.name in data})


def _oneLine(error: Any) -> str:
    text = getattr(error, "getErrorMessage", lambda: str(error))()
    text = " ".join(str(text).split())
    return text[:300] or type(error).__name__


class NotificationOutbox:
    """Queue notices durably in the store and deliver them through the host's actions.

    @param clock: the reactor (or a C{Clock}) that times retries.
    @param store: an L{IStore} with the monitor's migrations (C{alert_notifications}).
    @param actions: returns the current notification actions by L{actionKey} (a reload may
        change them; a notice whose action is gone expires with that reason).
    """

    def __init__(
        self,
        clock: Any,
        store: Any,
        host_name: str,
        actions: Callable[[], Mapping[str, Any]],
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        expire_after: float = 86400.0,
        keep_done: float = 7 * 86400.0,
    ):
        if not 0 < retry_initial <= retry_max:
            raise ValueError(f"need 0 < retry_initial <= retry_max, not {retry_initial!r}, {retry_max!r}")
        if expire_after <= 0:
            raise ValueError(f"expire_after must be > 0 seconds, not {expire_after!r}")
        self._clock = clock
        self._store = store
        self.host_name = host_name
        self._actions = actions
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.expire_after = float(expire_after)
        self.keep_done = float(keep_done)
        self.running = False
        self._pumping: Deferred | None = None
        self._again = False
        self._timer = None
        self._lastPrune: float | None = None
        #: Counters since start (metrics, pages): delivered notices, failed attempts, given up.
        self.delivered = 0
        self.failed_attempts = 0
        self.expired = 0
        #: Notices not yet delivered, as of the last pass (and those queued since).
        self.pending = 0
        #: Of those, the ones whose last attempt failed.
        self.retrying = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Deliver what earlier runs left queued, then whatever is enqueued."""
        self.running = True
        self.kick()

    def stop(self) -> Deferred:
        """Stop retrying; fires once a delivery pass under way has finished."""
        self.running = False
        self._cancelTimer()
        return self._pumping if self._pumping is not None else succeed(None)

    # -- queueing --------------------------------------------------------------------------------

    def enqueue(self, action: Any, alert: Any) -> Deferred:
        """Write one notice for C{action} to the store, then try to deliver it; fires once it
        is queued (the delivery follows on its own)."""
        now = self._clock.seconds()
        payload = json.dumps(alert.asDict(), sort_keys=True)
        d = self._store.runOperation(
            "INSERT INTO alert_notifications (host, action, title, alert, attempts, created_at,"
            " next_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.host_name, actionKey(action), alert.title, payload, 0, now, now, now + self.expire_after),
        )
        self.pending += 1

        def queued(_):
            self.kick()

        def failed(failure):
            self.pending -= 1
            log.error("alerts: {title} for {action} not queued, so never sent: {why}",
                      title=alert.title, action=actionKey(action), why=_oneLine(failure.value))

        return d.addCallbacks(queued, failed)

    def kick(self) -> None:
        """Run a delivery pass now (or right after the one under way)."""
        if not self.running:
            return
        if self._pumping is not None:
            self._again = True
            return
        self._cancelTimer()
        self._again = False
        d = self._pumping = self._pump()

        def done(_):
            self._pumping = None
            if self._again:
                self.kick()

        d.addBoth(done)

    # -- delivery --------------------------------------------------------------------------------

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt C{attempts + 1}: C{retry_initial}, doubling, at most C{retry_max}."""
        return min(self.retry_max, self.retry_initial * 2 ** max(0, attempts - 1))

    @inlineCallbacks
    def _pump(self):
        soonest: float | None = None
        try:
            rows = yield self._store.runQuery(
                "SELECT id, action, title, alert, attempts, next_at, expires_at FROM alert_notifications"
                " WHERE host = ? AND delivered_at IS NULL AND expired_at IS NULL ORDER BY id",
                (self.host_name,),
            )
            actions = dict(self._actions())
            blocked: set[str] = set()
            pending = retrying = 0
            for row_id, key, title, payload, attempts, next_at, expires_at in rows:
                if not self.running:
                    break
                if key in blocked or next_at > self._clock.seconds():
                    # Order per action: nothing overtakes a notice that is still waiting (and
                    # only the first waiting notice of an action sets when to look again).
                    if key not in blocked:
                        blocked.add(key)
                        soonest = next_at if soonest is None else min(soonest, next_at)
                    pending += 1
                    retrying += 1 if attempts else 0
                    continue
                action = actions.get(key)
                if action is None:
                    yield self._expire(row_id, title, key, attempts, "this action is no longer configured")
                    continue
                try:
                    yield maybeDeferred(action.fire, _alertFromDict(json.loads(payload)))
                except Exception as e:
                    attempts += 1
                    self.failed_attempts += 1
                    now = self._clock.seconds()
                    why = _oneLine(e)
                    if now + self.backoff(attempts) > expires_at:
                        yield self._expire(row_id, title, key, attempts, why)
                        continue
                    retry = now + self.backoff(attempts)
                    yield self._store.runOperation(
                        "UPDATE alert_notifications SET attempts = ?, next_at = ?, last_error = ?"
                        " WHERE id = ?", (attempts, retry, why, row_id))
                    if attempts == 1:
                        log.warn("alerts: {title} not delivered by {action}: {why}; retrying (every"
                                 " {first:g}s up to {most:g}s, for {life:g}s)", title=title, action=key,
                                 why=why, first=self.retry_initial, most=self.retry_max,
                                 life=self.expire_after)
                    blocked.add(key)
                    pending += 1
                    retrying += 1
                    soonest = retry if soonest is None else min(soonest, retry)
                    continue
                yield self._store.runOperation(
                    "UPDATE alert_notifications SET attempts = ?, delivered_at = ?, last_error = NULL"
                    " WHERE id = ?", (attempts + 1, self._clock.seconds(), row_id))
                self.delivered += 1
                if attempts:
                    log.info("alerts: {title} delivered by {action} after {n} failed attempts",
                             title=title, action=key, n=attempts)
            self.pending, self.retrying = pending, retrying
            yield self._prune()
        except Exception as e:
            # The store did not answer (an outage): the queue is in it, so look again later.
            log.warn("alerts: notification queue not read: {why}; trying again in {t:g}s",
                     why=_oneLine(e), t=self.retry_initial)
            soonest = self._clock.seconds() + self.retry_initial
        if soonest is not None and self.running:
            self._timer = self._clock.callLater(max(0.0, soonest - self._clock.seconds()), self._wake)

    def _wake(self) -> None:
        self._timer = None
        self.kick()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expire(self, row_id: int, title: str, key: str, attempts: int, why: str) -> Deferred:
        self.expired += 1
        log.error("alerts: {title} given up for {action} after {n} attempts: {why}", title=title,
                  action=key, n=attempts, why=why)
        return self._store.runOperation(
            "UPDATE alert_notifications SET attempts = ?, expired_at = ?, last_error = ? WHERE id = ?",
            (attempts, self._clock.seconds(), why, row_id))

    def _prune(self) -> Deferred:
        """Forget delivered and expired notices older than C{keep_done} (at most hourly)."""
        now = self._clock.seconds()
        if self._lastPrune is not None and now - self._lastPrune < 3600:
            return succeed(None)
        self._lastPrune = now
        cutoff = now - self.keep_done
        return self._store.runOperation(
            "DELETE FROM alert_notifications WHERE host = ? AND (delivered_at < ? OR expired_at < ?)",
            (self.host_name, cutoff, cutoff))

    # -- reading ---------------------------------------------------------------------------------

    def notifications(self, include_delivered: bool = False, limit: int = 100) -> Deferred:
        """This host's queued notices, newest first, as plain data with a C{state}: C{queued}
        (not tried yet), C{retrying} (its last attempt failed), C{expired} (given up) or
        C{delivered}."""
        where = "" if include_delivered else " AND delivered_at IS NULL"
        d = self._store.runQuery(
            "SELECT {} FROM alert_notifications WHERE host = ?{} ORDER BY id DESC LIMIT {}".format(
                ", ".join(_COLUMNS), where, int(limit)),
            (self.host_name,),
        )

        def shape(rows):
            out = []
            for row in rows:
                item = dict(zip(_COLUMNS, row, strict=True))
                del item["alert"]
                if item["delivered_at"] is not None:
                    item["state"] = "delivered"
                elif item["expired_at"] is not None:
                    item["state"] = "expired"
                else:
                    item["state"] = "retrying" if item["attempts"] else "queued"
                out.append(item)
            return out

        return d.addCallback(shape)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: delivered, failed attempts, expired, pending, retrying."""
        return {"delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "expired": self.expired, "pending": max(0, self.pending), "retrying": self.retrying}

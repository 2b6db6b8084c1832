"""The alerts engine: evaluates rules on each monitor sample and notifies without spamming.

For each (rule, subject) it remembers since when the condition holds, whether the alert is firing,
and when it last notified.  An alert fires once its condition has held for the rule's seconds; it is
not notified again for the same rule and subject within C{repeat_interval} (a flapping condition
therefore sends one message, not one per flap); when it clears, a recovery notice goes to the same
actions, if its firing was notified.  Recording actions (the store and the log) see every firing
and clearing; notification actions (e-mail, webhook) see only what passes the repeat filter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.admin.extensions import IAlertSource
from salvusctl.alerts.rules import Rule

__all__ = ["Alert", "AlertsService"]

log = Logger()


@dataclass(frozen=True)
class Alert:
    """What actions receive: one alert of one subject, firing or (C{cleared}) recovered."""

    rule: str
    kind: str
    subject: str
    severity: str
    message: str
    host: str
    fired_at: float
    cleared: bool = False
    cleared_at: float | None = None
    #: The measured value (L{salvusctl.alerts.rules.Reading}): when firing, the one that fired
    #: it; when cleared, the one that cleared it; None when the rule measures nothing.
    value: Any = None

    @property
    def title(self) -> str:
        """A one-line summary (the e-mail subject)."""
        what = "RESOLVED" if self.cleared else f"FIRING {self.severity}"
        return f"[salvus] {what}: {self.rule} {self.subject} on {self.host}"

    def asDict(self) -> dict[str, Any]:
        """Plain data for JSON (the webhook body) and pages."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "subject": self.subject,
            "severity": self.severity,
            "message": self.message,
            "host": self.host,
            "fired_at": self.fired_at,
            "cleared": self.cleared,
            "cleared_at": self.cleared_at,
            "value": self.value,
            "title": self.title,
        }


@dataclass
class _State:
    since: float | None = None
    firing: Alert | None = None
    notified: bool = False
    last_notified: float | None = None
    history: list[float] = field(default_factory=list)


@implementer(IAlertSource)
class AlertsService(Service):
    """Rules in, actions out; fed by the monitor's sample observer.

    @param monitor: has C{addSampleObserver} / C{removeSampleObserver} (the monitor service).
    @param rules: L{Rule}s.
    @param actions: L{IAlertAction}s; those with a true C{records} attribute see every change,
        the others only notifications that pass the repeat filter.
    @param repeat_interval: seconds within which the same alert of the same subject is not
        notified again.
    @param clock: the reactor, for the time of a clearing that happens outside a sample (a rule
        removed by L{reconfigure}); without one, the last sample's time.
    """

    name = "alerts"

    def __init__(
        self,
        monitor,
        rules: Iterable[Rule],
        actions: Iterable[Any],
        host_name: str,
        repeat_interval: float = 3600.0,
        clock: Any = None,
        outbox: Any = None,
    ):
        if repeat_interval < 0:
            raise ValueError(f"repeat_interval must be >= 0 seconds, not {repeat_interval!r}")
        self._monitor = monitor
        self.rules = list(rules)
        self.actions = list(actions)
        self.host_name = host_name
        self.repeat_interval = repeat_interval
        self._states: dict[tuple[str, str], _State] = {}
        self._firstSeen: dict[str, float] = {}
        self._clock = clock
        #: A L{salvusctl.alerts.outbox.NotificationOutbox}: notification actions are queued in
        #: the store and retried through it; without one they are called once, directly.
        self.outbox = outbox
        self._lastSample = 0.0
        #: (declaration, action) of each notification action, set by the builder: a reload keeps
        #: the action of a declaration it did not change.
        self.notifiers: list[tuple[Any, Any]] = []
        self.sent: list[Alert] = []
        self.cleared: deque[Alert] = deque(maxlen=self.KEEP_CLEARED)

    def startService(self) -> None:
        super().startService()
        if self.outbox is not None:
            self.outbox.start()
        if self._monitor is not None:
            self._monitor.addSampleObserver(self.evaluate)

    def stopService(self):
        super().stopService()
        if self._monitor is not None:
            self._monitor.removeSampleObserver(self.evaluate)
        if self.outbox is not None:
            return self.outbox.stop()
        return None

    def notificationActions(self) -> dict[str, Any]:
        """The notification actions by their outbox key (what queued notices are sent through)."""
        from salvusctl.alerts.actions import actionKey

        return {actionKey(a): a for a in self.actions if not getattr(a, "records", False)}

    def notifications(self, include_delivered: bool = False, limit: int = 100):
        """Queued notices of this host, newest first (see L{NotificationOutbox.notifications});
        an empty list without an outbox."""
        from twisted.internet.defer import succeed

        if self.outbox is None:
            return succeed([])
        return self.outbox.notifications(include_delivered, limit)

    def deliveryStats(self) -> dict[str, int]:
        """The outbox's counters (delivered, failed_attempts, expired, pending, retrying)."""
        if self.outbox is None:
            return {"delivered": 0, "failed_attempts": 0, "expired": 0, "pending": 0, "retrying": 0}
        return self.outbox.stats()

    KEEP_CLEARED = 100

    def alerts(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        """Firing alerts (and the last L{KEEP_CLEARED} cleared ones), newest first, as dicts.

        What the admin's pages, C{salvus.alerts} and C{/metrics} read; each dict is
        L{Alert.asDict}.
        """
        items = list(self.active())
        if include_cleared:
            items.extend(self.cleared)
        items.sort(key=lambda a: (a.cleared_at if a.cleared else a.fired_at) or 0.0, reverse=True)
        return [a.asDict() for a in items]

    def active(self) -> list[Alert]:
        """Alerts firing now."""
        return [s.firing for s in self._states.values() if s.firing is not None]

    def recorded(self, store, since: float = 0.0, open_only: bool = False, limit: int = 200):
        """Alert records from the store (every host sharing it), newest first: for the admin."""
        sql = (
            "SELECT id, host, rule, subject, severity, message, fired_at, cleared_at FROM alerts"
            " WHERE fired_at >= ?" + (" AND cleared_at IS NULL" if open_only else "")
            + f" ORDER BY fired_at DESC LIMIT {int(limit)}"
        )
        columns = ("id", "host", "rule", "subject", "severity", "message", "fired_at", "cleared_at")
        d = store.runQuery(sql, (since,))
        return d.addCallback(lambda rows: [dict(zip(columns, r, strict=True)) for r in rows])

    def evaluate(self, snapshot: Mapping[str, Any]):
        """Evaluate every rule on one snapshot; fires with the actions' results (for tests)."""
        now = self._lastSample = snapshot["timestamp"]
        for name in (snapshot.get("instances") or {}):
            self._firstSeen.setdefault(name, now)
        pending = []
        for rule in self.rules:
            try:
                results = rule.evaluate(snapshot, now, self._firstSeen)
            except Exception:
                log.failure("alert rule {rule} failed", rule=rule.label)
                continue
            seen = set()
            for subject, reading in results.items():
                holds, message = reading
                seen.add(subject)
                pending.extend(self._step(rule, subject, holds, message, now,
                                          getattr(reading, "value", None)))
            # Subjects that vanished (an instance removed, a mount gone) clear.
            for (label, subject), state in list(self._states.items()):
                if label == rule.label and subject not in seen and state.firing is not None:
                    pending.extend(self._step(rule, subject, False, f"{subject} is gone", now))
        return DeferredList(pending, consumeErrors=True) if pending else None

    def _step(self, rule: Rule, subject: str, holds: bool, message: str, now: float,
              value: Any = None):
        state = self._states.setdefault((rule.label, subject), _State())
        if holds:
            if state.since is None:
                state.since = now
            if state.firing is None and now - state.since >= rule.holdSeconds:
                alert = Alert(rule.label, rule.kind, subject, rule.severity, message,
                              self.host_name, now, value=value)
                state.firing = alert
                recent = state.last_notified is not None and (
                    now - state.last_notified < self.repeat_interval
                )
                state.notified = not recent
                if state.notified:
                    state.last_notified = now
                return self._dispatch(alert, notify=state.notified)
            if (
                state.firing is not None
                and not state.notified
                and now - (state.last_notified or 0.0) >= self.repeat_interval
            ):
                # Suppressed as a repeat but still firing once the interval is over: the last
                # word the operator got was "resolved", so say it is back.
                state.notified = True
                state.last_notified = now
                return self._dispatch(state.firing, notify=True, record=False)
            return []
        state.since = None
        if state.firing is None:
            return []
        alert = replace(state.firing, cleared=True, cleared_at=now, message=message, value=value)
        state.firing = None
        self.cleared.append(alert)
        return self._dispatch(alert, notify=state.notified)

    def reconfigure(
        self, rules: Iterable[Rule], actions: Iterable[Any], repeat_interval: float
    ) -> dict[str, list[str]]:
        """Take new rules, actions and repeat interval on a running engine (a host reload).

        Rules are matched by label.  An unchanged or changed rule keeps its state per subject
        (since when it holds, whether it fires, when it last notified), so a reload never sends
        again an alert still within C{repeat_interval}, and a changed threshold takes effect at the
        next evaluation.  A removed rule stops: its firing alerts are cleared (recorded, and a
        recovery notice goes out if the firing was notified) and its state is forgotten.  A new
        rule starts from nothing at the next sample.  Returns the labels added, changed and
        removed.
        """
        rules = list(rules)
        if repeat_interval < 0:
            raise ValueError(f"repeat_interval must be >= 0 seconds, not {repeat_interval!r}")
        old = {r.label: r for r in self.rules}
        new = {r.label: r for r in rules}
        if len(new) != len(rules):
            raise ValueError("two alert rules share a name")
        summary = {
            "added": sorted(n for n in new if n not in old),
            "changed": sorted(n for n in new if n in old and new[n] != old[n]),
            "removed": sorted(n for n in old if n not in new),
        }
        now = None
        for label in summary["removed"]:
            for key in [k for k in self._states if k[0] == label]:
                state = self._states.pop(key)
                if state.firing is None:
                    continue
                if now is None:
                    now = self._now()
                alert = replace(state.firing, cleared=True, cleared_at=now,
                                message=f"rule {label} removed by a reload")
                self.cleared.append(alert)
                self._dispatch(alert, notify=state.notified)
        self.rules = rules
        self.actions = list(actions)
        self.repeat_interval = repeat_interval
        for kind, labels in summary.items():
            for label in labels:
                log.info("alerts: rule {label} {kind}", label=label, kind=kind)
        return summary

    def _now(self) -> float:
        """The time of a clearing made outside a sample: the clock's, else the last sample's."""
        if self._clock is not None:
            return self._clock.seconds()
        return self._lastSample

    def _dispatch(self, alert: Alert, notify: bool, record: bool = True):
        out = []
        if notify:
            self.sent.append(alert)
        for action in self.actions:
            records = getattr(action, "records", False)
            if not (notify and not records or record and records):
                continue
            if not records and self.outbox is not None:
                out.append(self.outbox.enqueue(action, alert))
                continue
            d = maybeDeferred(action.fire, alert)
            d.addErrback(self._actionFailed, action, alert)
            out.append(d)
        return out

    def _actionFailed(self, failure, action, alert):
        log.failure("alert action {action} failed for {title}", failure, action=type(action).__name__,
                    title=alert.title)
        return None

"""Alert actions that act through the supervisor: events to its listeners, and restarts.

C{EventAction} makes each firing and clearing an C{ALERT_FIRED} / C{ALERT_RESOLVED} event on the
supervisor's event bus, so supervisord-style listeners hear Salvus's own alert rules as they hear
process state changes.  C{RestartAction} is monit's C{then restart}: the instance an alert names
is restarted once per firing.  Both see every change (C{records = True}): neither is a message
to a person, so the repeat filter and the notification outbox (retries after a restart of the
host) do not apply to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.alerts.rules import RULE_KINDS
from salvusctl.interfaces import IAlertAction
from salvusctl.supervisor.events import alertPayload

__all__ = ["EventAction", "RestartAction", "alertEvent"]

log = Logger()


def alertEvent(alert: Any) -> tuple[str, str]:
    """The event name and payload of one alert (see L{alertPayload})."""
    names: dict[str, str] = {}
    if RULE_KINDS.get(alert.kind, ("", False, False))[2] and ":" in alert.subject:
        group, _, process = alert.subject.partition(":")
        names = {"groupname": group, "processname": process}
    payload = alertPayload(rule=alert.rule, kind=alert.kind, subject=alert.subject,
                           severity=alert.severity, host=alert.host, value=alert.value,
                           message=alert.message, fired_at=alert.fired_at,
                           cleared_at=alert.cleared_at if alert.cleared else None, **names)
    return ("ALERT_RESOLVED" if alert.cleared else "ALERT_FIRED"), payload


@implementer(IAlertAction)
class EventAction:
    """Sends each alert and each recovery to the supervisor's event listeners.

    @param hub: the supervisor's L{salvusctl.supervisor.eventlistener.EventHub}; it builds
        nothing when no listener is subscribed to anything.
    """

    records = True

    def __init__(self, hub: Any):
        self._hub = hub

    def fire(self, alert: Any) -> None:
        if self._hub.bus.active:
            self._hub.notify(*alertEvent(alert))


@implementer(IAlertAction)
class RestartAction:
    """Restarts the instance an alert of one of C{rules} names, once per firing.

    An alert that stays firing is not acted on again, whatever the engine re-sends; once it
    has cleared, the next firing restarts again.  A restart that fails (the instance is gone)
    is logged by the engine, as any action's failure.

    @param supervisor: an L{salvusctl.interfaces.ISupervisor} (its C{restartInstance}).
    @param rules: the rule names (labels) whose alerts restart their subject.
    """

    records = True

    def __init__(self, supervisor: Any, rules: Iterable[str]):
        self._supervisor = supervisor
        self.rules = frozenset(rules)
        #: (rule, subject) restarted for a firing that has not cleared yet.
        self.acting: set[tuple[str, str]] = set()
        #: Restarts made, in order, as (rule, subject): for the tests and the log.
        self.restarts: list[tuple[str, str]] = []

    def fire(self, alert: Any) -> Deferred | None:
        if alert.rule not in self.rules:
            return None
        key = (alert.rule, alert.subject)
        if alert.cleared:
            self.acting.discard(key)
            return None
        if key in self.acting:
            return None
        self.acting.add(key)
        self.restarts.append(key)
        log.warn("alert {title}: restarting {subject}", title=alert.title, subject=alert.subject)
        return maybeDeferred(self._supervisor.restartInstance, alert.subject)

"""The builder that turns the alert declarations (L{salvusctl.alerts.declare}: C{AlertRule},
C{EmailAlerts}, C{WebhookAlerts}, C{RestartAlerts}, C{AlertSettings}) into one L{AlertsService}
fed by the host's monitor."""

from __future__ import annotations

from typing import Any

from salvusctl.alerts.actions import RecordAction
from salvusctl.alerts.declare import (
    NOTIFIERS,
    AlertRule,
    AlertSettings,
    EmailAlerts,
    RestartAlerts,
    WebhookAlerts,
)
from salvusctl.alerts.engine import AlertsService
from salvusctl.alerts.outbox import NotificationOutbox
from salvusctl.alerts.rules import Rule
from salvusctl.errors import ConfigError

__all__ = ["AlertRule", "EmailAlerts", "WebhookAlerts", "RestartAlerts", "AlertSettings", "buildAlerts",
           "checkRules", "repeatInterval", "supervisorActions"]


def checkRules(declarations) -> list[Rule]:
    """The declared rules, refusing two with one name (a rule's state is kept by its name)."""
    rules = [d.rule() for d in declarations if isinstance(d, AlertRule)]
    labels = [r.label for r in rules]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise ConfigError(f"two alert rules share the name {sorted(duplicates)[0]!r}: give one a name=")
    return rules


def repeatInterval(declarations) -> float:
    """The one C{AlertSettings(repeat_interval=…)}, or the default."""
    settings = [d for d in declarations if isinstance(d, AlertSettings)]
    if len(settings) > 1:
        raise ConfigError("a host has one AlertSettings(...)")
    return settings[0].repeat_interval if settings else 3600.0


def supervisorActions(supervisor: Any, declarations: list) -> list:
    """The actions through the host's supervisor service: its listeners hear every alert (when it
    has an event hub), and each C{RestartAlerts} restarts what its rules' alerts name."""
    from salvusctl.alerts.supervisoractions import EventAction, RestartAction

    restarts = [d for d in declarations if isinstance(d, RestartAlerts)]
    if restarts and supervisor is None:
        raise ConfigError("RestartAlerts restarts deploys: the host runs no supervisor")
    hub = getattr(supervisor, "eventHub", None)
    actions: list = [EventAction(hub)] if hub is not None else []
    return actions + [RestartAction(supervisor, d.rules) for d in restarts]


def buildAlerts(context: Any, declarations: list, monitor: Any = None,
                supervisor: Any = None) -> AlertsService | None:
    """The host's alerts: rules over C{monitor}'s samples, recorded and notified (and, through
    C{supervisor}, heard by its event listeners and acted on by C{RestartAlerts})."""
    rules = checkRules(declarations)
    if not rules:
        return None
    if monitor is None or not hasattr(monitor, "addSampleObserver"):
        raise ConfigError("alert rules need a Monitor(...) on the host")
    repeat = repeatInterval(declarations)
    notifiers = [(d, d.action(context.reactor)) for d in declarations
                 if isinstance(d, NOTIFIERS)]
    recorders = [RecordAction(context.store)] + supervisorActions(supervisor, declarations)
    service = AlertsService(monitor, rules, recorders + [a for _, a in notifiers],
                            context.host.name, repeat_interval=repeat, clock=context.reactor)
    settings = [d for d in declarations if isinstance(d, AlertSettings)]
    delivery = settings[0] if settings else AlertSettings()
    # E-mail and webhook notices are queued in the store and retried until delivered or expired.
    service.outbox = NotificationOutbox(context.reactor, context.store, context.host.name,
                                        service.notificationActions, retry_initial=delivery.retry_initial,
                                        retry_max=delivery.retry_max, expire_after=delivery.expire_after)
    # Which declaration made which action: a reload keeps the actions whose declaration is unchanged.
    service.notifiers = notifiers
    return service

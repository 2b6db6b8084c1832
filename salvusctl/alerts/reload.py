"""Reloading the alerts: rules, notification actions and the repeat interval, applied live.

The running L{AlertsService} takes the new rules through C{reconfigure}, which matches them by
label: a rule that stays (changed or not) keeps its per-subject state, so an alert still within
its repeat interval is not sent again because of a reload; a removed rule stops (its firing alerts
are cleared); a new rule is evaluated from the next sample on.  E-mail and webhook actions whose
declaration is unchanged are kept as they are; changed or new ones are made afresh.  A host that
had no rule has no alerts service: the first rules make one, wired to the running monitor, and it
starts at once.  Rules without a running monitor need a restart (the monitor's entry says why).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from salvusctl.alerts.build import checkRules, repeatInterval, supervisorActions
from salvusctl.alerts.declare import NOTIFIERS, RestartAlerts
from salvusctl.host.components import buildOne, component, oneEntry, peers

__all__ = ["diff", "apply", "entries", "applyEntries"]

log = Logger()

NO_MONITOR = "alert rules read the monitor's samples and this host runs no monitor yet"


def _notifiers(declarations: list[Any]) -> dict[str, Any]:
    """Notification declarations by a label that names no secret (a webhook URL may hold one)."""
    out: dict[str, Any] = {}
    for d in declarations:
        if isinstance(d, RestartAlerts):
            label = "restart"
        elif isinstance(d, NOTIFIERS):
            label = d.label()
        else:
            continue
        key, n = label, 1
        while key in out:
            n += 1
            key = f"{label}#{n}"
        out[key] = d
    return out


def _delivery(declarations) -> tuple[float, float, float]:
    """The outbox's retry settings the declarations give (AlertSettings, else the defaults)."""
    from salvusctl.alerts.build import AlertSettings

    settings = [d for d in declarations if isinstance(d, AlertSettings)] or [AlertSettings()]
    return (settings[0].retry_initial, settings[0].retry_max, settings[0].expire_after)


def diff(context: Any, old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """Rule labels, C{email:SERVER} / C{webhook:HOST} actions and C{repeat_interval} added,
    changed and removed; None when the same.  Raises L{ConfigError} for a set of rules the
    builder would refuse, before anything is applied."""
    before = {r.label: r for r in checkRules(old)}
    after = {r.label: r for r in checkRules(new)}
    repeat = repeatInterval(new)
    entry: dict[str, Any] = {
        "added": sorted(n for n in after if n not in before),
        "changed": sorted(n for n in after if n in before and after[n] != before[n]),
        "removed": sorted(n for n in before if n not in after),
    }
    olds, news = _notifiers(old), _notifiers(new)
    entry["added"] += sorted(n for n in news if n not in olds)
    entry["changed"] += sorted(n for n in news if n in olds and vars(news[n]) != vars(olds[n]))
    entry["removed"] += sorted(n for n in olds if n not in news)
    if repeat != repeatInterval(old):
        entry["changed"].append("repeat_interval")
    if _delivery(new) != _delivery(old):
        entry["changed"].append("delivery")
    if not any(entry.values()):
        return None
    if after and context.services.get("alerts") is None:
        monitor = peers(context, component("alerts"))["monitor"]
        if monitor is None or not hasattr(monitor, "addSampleObserver"):
            entry.update(restart=True, reason=NO_MONITOR)
    return entry


def apply(context: Any, new: list[Any], entry: dict[str, Any]) -> None:
    """Give the running alerts service the new declarations (or start one for the first rules)."""
    service = context.services.get("alerts")
    if service is None:
        service = buildOne(context, component("alerts"), new)
        if service is None:
            return  # notification settings without any rule: nothing runs them yet
        service.setName("alerts")
        service.setServiceParent(context.services["store"].parent)  # starts it if the host runs
        context.services["alerts"] = service
        log.info("reload: alerts started with {n} rules", n=len(service.rules))
        return
    kept = list(service.notifiers)
    notifiers = []
    for declaration in new:
        if not isinstance(declaration, NOTIFIERS):
            continue
        same = next((pair for pair in kept if pair[0] == declaration), None)
        if same is not None:
            kept.remove(same)
            notifiers.append(same)
        else:
            notifiers.append((declaration, declaration.action(context.reactor)))
    from salvusctl.alerts.supervisoractions import EventAction, RestartAction

    # The store's record action stays; the supervisor's (events, restarts) follow the new file.
    recorders = [a for a in service.actions if getattr(a, "records", False)
                 and not isinstance(a, EventAction | RestartAction)]
    recorders += supervisorActions(peers(context, component("alerts"))["supervisor"], new)
    service.reconfigure(checkRules(new), recorders + [a for _, a in notifiers], repeatInterval(new))
    service.notifiers = notifiers
    if service.outbox is not None:
        # Queued notices keep their rows; the next retry and expiry use the new settings.
        outbox = service.outbox
        outbox.retry_initial, outbox.retry_max, outbox.expire_after = _delivery(new)


# The host's reloader asks for named entries; the alerts's diff gives its one entry.
entries, applyEntries = oneEntry("alerts", diff, apply)

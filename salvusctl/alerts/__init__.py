"""Salvus alerts: rules over the monitor's samples, notified by e-mail and webhook without spam,
sent to event listeners, acted on by restarts.

The declarations a C{.tac} uses are re-exported here.
"""

from salvusctl.alerts.declare import AlertRule, AlertSettings, EmailAlerts, RestartAlerts, WebhookAlerts

__all__ = ["AlertRule", "AlertSettings", "EmailAlerts", "RestartAlerts", "WebhookAlerts"]

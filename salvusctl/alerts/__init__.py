"""Salvus alerts: rules over the monitor's samples, notified by e-mail and webhook without spam.

The declarations a C{.tac} uses are re-exported here.
"""

from salvusctl.alerts.declare import AlertRule, AlertSettings, EmailAlerts, WebhookAlerts

__all__ = ["AlertRule", "AlertSettings", "EmailAlerts", "WebhookAlerts"]

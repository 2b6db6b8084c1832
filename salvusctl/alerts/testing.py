"""A fake of the alerts service as the admin reads it, for the admin's tests and users' own tests.

L{FakeAlerts} answers C{alerts()} with L{Alert.asDict} dicts, as the real alerts service does
(C{tests/integration/test_realhost.py} compares their keys).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zope.interface import implementer

from salvusctl.admin.extensions import IAlertSource
from salvusctl.alerts.engine import Alert

__all__ = ["FakeAlerts"]


@implementer(IAlertSource)
class FakeAlerts:
    """Alerts kept in a list, newest first, answered as the real alerts service answers them
    (L{salvusctl.alerts.engine.Alert.asDict})."""

    def __init__(self, host_name: str = "test"):
        self.host_name = host_name
        self.items: list[Alert] = []

    def fire(self, name: str, subject: str, message: str, since: float, severity: str = "warning") -> None:
        """Alert C{name} (a rule's label) fires for C{subject} at C{since}."""
        self.items.insert(0, Alert(name, "fake", subject, severity, message, self.host_name, since))

    def clear(self, name: str, subject: str, when: float) -> None:
        """The alert of C{name} on C{subject} recovers at C{when}."""
        for i, alert in enumerate(self.items):
            if alert.rule == name and alert.subject == subject and not alert.cleared:
                self.items[i] = replace(alert, cleared=True, cleared_at=when)
                return
        raise KeyError(f"{name} {subject}")

    def alerts(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        return [a.asDict() for a in self.items if include_cleared or not a.cleared]

"""Optional capabilities the admin uses when a service offers them.

These go beyond L{salvusctl.interfaces}: a service that provides one gets the matching admin
feature (config-vs-running diff and reconcile, alert listing, log clearing); one that does not gets
a clear "not supported" answer instead.
"""

from __future__ import annotations

from zope.interface import Interface

# The supervisor's own capabilities live with it, so a host that only supervises never loads the
# admin: they are named here too, for the admin's side.
from salvusctl.supervisor.capabilities import ILogClearing, IMainLog, IProcessStdin

__all__ = ["IReconcilable", "IAlertSource", "ILogClearing", "IProcessStdin", "IMainLog"]


class IReconcilable(Interface):
    """A service that can compare its declared configuration with what is running."""

    def configDiff():
        """Return C{{"added": [..], "changed": [..], "removed": [..]}}: names that the config has and
        the running service lacks, that differ, and that run but are no longer declared."""

    def reconcile():
        """Apply the config: start what was added, restart what changed, stop what was removed.
        May return a Deferred; fires with the diff that was applied."""


class IAlertSource(Interface):
    """The alerts service as the admin reads it."""

    def alerts(include_cleared=False):
        """Return alert dicts (name, severity, subject, message, since, cleared), newest first."""

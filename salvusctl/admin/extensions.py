"""Optional capabilities the admin uses when a service offers them.

These go beyond L{salvusctl.interfaces}: a service that provides one gets the matching admin
feature (config-vs-running diff and reconcile, alert listing, log clearing); one that does not gets
a clear "not supported" answer instead.
"""

from __future__ import annotations

from zope.interface import Interface

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


class ILogClearing(Interface):
    """A supervisor that can truncate an instance's captured logs."""

    def clearLogs(name):
        """Empty the stdout and stderr logs of instance C{name} (KeyError if unknown)."""


class IProcessStdin(Interface):
    """A supervisor whose instances may have a stdin pipe (supervisord's C{sendProcessStdin})."""

    def sendStdin(name, data):
        """Write the bytes C{data} to instance C{name}'s stdin.  Raise KeyError for an unknown
        name, C{process.NotRunning} when no process runs, C{process.NoStdin} when it has no
        stdin pipe (or closed it)."""


class IMainLog(Interface):
    """A supervisor that keeps a main log of its own events (supervisord's C{readLog}, C{maintail})."""

    def mainLogPath():
        """The path of the main log file (it may not exist yet)."""

    def followMainLog(callback):
        """Call C{callback(line)} for each new event; returns the function that stops following."""

    def clearMainLog():
        """Empty the main log file."""

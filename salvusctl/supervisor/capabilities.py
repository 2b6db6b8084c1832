"""What a supervisor may offer beyond L{salvusctl.interfaces.ISupervisor}, for the admin to use.

A leaf module (zope.interface only): the supervisor declares these without importing the admin,
so a host that only supervises loads no admin code.  L{salvusctl.admin.extensions} re-exports them.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["ILogClearing", "IProcessStdin", "IMainLog"]


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

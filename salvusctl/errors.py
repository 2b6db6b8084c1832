"""Errors that reach the operator as one clear line."""

from __future__ import annotations

__all__ = ["ConfigError", "OperationFailed"]


class ConfigError(Exception):
    """A host declaration is missing, unreadable or impossible.

    Raised before anything starts, so a bad config never leaves a half-started host.  C{str()} gives
    the one line the operator sees: C{file:line: message} when the file and line are known.
    """

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None):
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.lineno = lineno

    def __str__(self) -> str:
        where = ""
        if self.filename:
            where = self.filename + (f":{self.lineno}" if self.lineno else "") + ": "
        return where + self.message


class OperationFailed(Exception):
    """An action was tried and did not succeed, for a reason the operator can act on.

    A program that went FATAL while a reload started it, a start a limit refused: the message is
    the whole story, so it is logged and answered as one line, never as a traceback (those are
    kept for the failures nobody expected).
    """

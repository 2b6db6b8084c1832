"""XML-RPC fault codes: supervisord's table (so its clients understand us) plus Salvus's own.

The numbers are supervisord's (C{supervisor/xmlrpc.py}, class C{Faults}); C{supervisorctl} branches
on them (C{ALREADY_STARTED} prints "already started", C{BAD_NAME} "no such process" …).  Codes
Salvus adds start at 1000 so they can never collide with supervisord's.  This is the one table:
every XML-RPC verb of a host (supervisor.*, salvus.*, salvus.cluster.*, backup.*) answers with these
codes, and an unexpected error is always C{FAILED} (logged with its traceback on the host).
"""

from __future__ import annotations

from xmlrpc.client import Fault

__all__ = ["Faults", "faultName", "rpcFault"]


class Faults:
    """The numeric fault table."""

    UNKNOWN_METHOD = 1
    INCORRECT_PARAMETERS = 2
    BAD_ARGUMENTS = 3
    SIGNATURE_UNSUPPORTED = 4
    SHUTDOWN_STATE = 6
    BAD_NAME = 10
    BAD_SIGNAL = 11
    NO_FILE = 20
    NOT_EXECUTABLE = 21
    FAILED = 30
    ABNORMAL_TERMINATION = 40
    SPAWN_ERROR = 50
    ALREADY_STARTED = 60
    NOT_RUNNING = 70
    SUCCESS = 80
    ALREADY_ADDED = 90
    STILL_RUNNING = 91
    CANT_REREAD = 92
    # Salvus's own
    PERMISSION_DENIED = 1001
    NO_SERVICE = 1002
    BAD_REQUEST = 1003
    REFUSED = 1004  # understood, but the service's state refuses it (a backup running, no good run)


_NAMES = {v: k for k, v in vars(Faults).items() if isinstance(v, int)}


def faultName(code: int) -> str:
    """C{BAD_NAME} for 10, as supervisord spells its fault strings."""
    return _NAMES.get(code, "UNKNOWN")


def rpcFault(code: int, extra: str | None = None) -> Fault:
    """A Fault whose string is supervisord-style: C{NAME: detail}."""
    text = faultName(code)
    if extra is not None:
        text = f"{text}: {extra}"
    return Fault(code, text)

"""The process state set, with supervisord's numeric codes, and the transitions allowed between them.

A leaf module: no I/O, no Twisted.  The codes are the ones C{supervisorctl} and XML-RPC clients
already know, so the admin can speak supervisord's protocol without a translation table.
"""

from __future__ import annotations

import enum

__all__ = ["ProcessState", "TRANSITIONS", "InvalidTransition", "checkTransition", "RUNNING_STATES",
           "STOPPED_STATES", "SIGNALLABLE_STATES"]


class ProcessState(enum.IntEnum):
    """supervisord's process states, same names, same numbers."""

    STOPPED = 0
    STARTING = 10
    RUNNING = 20
    BACKOFF = 30
    STOPPING = 40
    EXITED = 100
    FATAL = 200
    UNKNOWN = 1000


S = ProcessState

# Where each state may go next.  Anything else is a bug in the caller, raised as InvalidTransition
# rather than silently corrupting the record.
TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    S.STOPPED: frozenset({S.STARTING, S.FATAL}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.STOPPING}),
    S.RUNNING: frozenset({S.STOPPING, S.EXITED}),
    S.BACKOFF: frozenset({S.STARTING, S.FATAL, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.EXITED: frozenset({S.STARTING, S.FATAL, S.STOPPED}),
    S.FATAL: frozenset({S.STARTING, S.STOPPED}),
    S.UNKNOWN: frozenset(S),
}

# States in which a process exists (or is about to) and counts against limits.
RUNNING_STATES = frozenset({S.STARTING, S.RUNNING, S.STOPPING})
# States from which a start is allowed.
STOPPED_STATES = frozenset({S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF, S.UNKNOWN})
SIGNALLABLE_STATES = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


class InvalidTransition(Exception):
    """A state change the machine does not allow (a programming error, not an operator error)."""

    def __init__(self, name: str, old: ProcessState, new: ProcessState):
        super().__init__(f"{name}: invalid transition {old.name} -> {new.name}")
        self.old = old
        self.new = new


def checkTransition(name: str, old: ProcessState, new: ProcessState) -> None:
    """Raise L{InvalidTransition} unless C{old -> new} is allowed."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(name, old, new)

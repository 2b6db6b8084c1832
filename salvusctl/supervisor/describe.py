"""An instance's C{description}, worded as supervisord words it.

C{supervisorctl status} prints the description as its last column and tools parse it (the uptime,
the stop time, the spawn error), so the real supervisor and the fake share this one function.
Salvus's extras (waiting for readiness, a C{STATUS=} line) are appended after supervisord's text.
"""

from __future__ import annotations

import datetime
import time

__all__ = ["describe", "spawnDescription"]


def spawnDescription(spawnerr: str, name: str) -> str:
    """BACKOFF and FATAL: the spawn error, or supervisord's pointer to the log."""
    return spawnerr or f'unknown error (try "tail {name}")'


def describe(state: str, name: str, pid: int, start: float, stop: float, now: float,
             spawnerr: str, extra: str = "", started: bool | None = None) -> str:
    """supervisord's C{_interpretProcessInfo}: C{pid N, uptime H:MM:SS} while RUNNING (its
    C{timedelta} spelling, C{1 day, 2:03:04} past a day), the spawn error in BACKOFF and FATAL,
    the local stop time (C{Dec 03 02:05 PM}) or C{Not started} in STOPPED and EXITED, and nothing
    while STARTING or STOPPING; C{extra} (Salvus's) after it, comma-separated.  C{started}: has
    it ever started (supervisord reads a non-zero C{start}; a test clock may start at 0)."""
    if started is None:
        started = bool(start)
    if state == "RUNNING" and pid:
        text = f"pid {pid}, uptime {datetime.timedelta(seconds=max(0, int(now) - int(start)))}"
    elif state in ("FATAL", "BACKOFF"):
        text = spawnDescription(spawnerr, name)
    elif state in ("STOPPED", "EXITED"):
        if started:
            text = datetime.datetime(*time.localtime(int(stop))[:6]).strftime("%b %d %I:%M %p")
        else:
            text = "Not started"
    else:
        text = ""
    if extra:
        text = f"{text}, {extra}" if text else extra
    return text

"""When backups run: every N seconds, or once a day at HH:MM (UTC), on an injected clock.

L{nextTime} is a pure function of C{now}; L{Scheduler} drives a job with C{callLater}, never runs
two at once, and survives a job that fails (the next one is still scheduled).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

__all__ = ["Schedule", "parseSchedule", "nextTime", "Scheduler"]

log = Logger()

_DAY = 86400.0


@dataclass(frozen=True)
class Schedule:
    """C{every} seconds, or C{daily} at seconds-after-midnight UTC (exactly one is set)."""

    every: float | None = None
    daily: float | None = None

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every:g}s"
        assert self.daily is not None
        hours, rest = divmod(int(self.daily), 3600)
        return f"daily at {hours:02d}:{rest // 60:02d} UTC"


def parseSchedule(every: float | None = None, daily: str | None = None) -> Schedule | None:
    """Build a L{Schedule}; raise ValueError with the reason for a bad value; None for manual."""
    if every is not None and daily is not None:
        raise ValueError("give either every= or daily=, not both")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
            raise ValueError(f"every= must be a positive number of seconds, not {every!r}")
        return Schedule(every=float(every))
    if daily is not None:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(daily))
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError(f"daily= must be HH:MM (UTC), not {daily!r}")
        return Schedule(daily=float(int(match[1]) * 3600 + int(match[2]) * 60))
    return None


def nextTime(schedule: Schedule, now: float, last: float | None = None) -> float:
    """The next time a backup is due, strictly after C{now}.

    An interval counts from the last run's start (or from C{now} if none ran); a daily time is the
    next occurrence of that time of day.
    """
    if schedule.every is not None:
        if last is None:
            return now + schedule.every
        due = last + schedule.every
        if due <= now:
            # A run that overran its interval: skip the missed slots, keep the phase.
            due += schedule.every * (int((now - due) // schedule.every) + 1)
        return due
    assert schedule.daily is not None
    midnight = now - (now % _DAY)
    due = midnight + schedule.daily
    return due if due > now else due + _DAY


class Scheduler:
    """Calls C{job()} when due, one run at a time.

    @param clock: an C{IReactorTime} (a C{Clock} in tests).
    @param job: returns a Deferred (or a value); its failure is logged, never fatal.
    """

    def __init__(self, clock, schedule: Schedule, job: Callable[[], Deferred | object]):
        self.clock = clock
        self.schedule = schedule
        self.job = job
        self.last: float | None = None
        self.due: float | None = None
        self._call = None
        self._running: Deferred | None = None
        self._stopped = True

    def start(self) -> None:
        self._stopped = False
        self._arm()

    def stop(self) -> None:
        """No further run; a run in progress finishes and arms nothing (a reload may have put
        another scheduler in this one's place)."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        now = self.clock.seconds()
        self.due = nextTime(self.schedule, now, self.last)
        self._call = self.clock.callLater(self.due - now, self._fire)

    def _fire(self) -> None:
        self._call = None
        self.last = self.clock.seconds()
        d = maybeDeferred(self.job)
        d.addErrback(lambda f: log.failure("scheduled backup failed", f))
        self._running = d
        d.addBoth(self._done)

    def _done(self, _) -> None:
        self._running = None
        if not self._stopped:
            self._arm()

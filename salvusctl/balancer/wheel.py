"""A shared timeout wheel: one timer for every connection's deadlines.

A C{DelayedCall} per connection (connect timeout, idle timeouts, queue timeout) costs a heap push,
a cancel and a reschedule on every read.  Instead, time is cut into ticks of C{resolution} seconds;
an entry sits in the bucket of the tick it should be looked at again, and activity costs one
attribute store (C{conn.last = wheel.tick}).  When a bucket comes due, each entry's
C{wheelExpired()} says whether it is done (C{None}) or when to look again (a delay in seconds) —
so a busy connection is rescheduled once per timeout period, not once per read.

An entry is in at most one bucket (the wheel notes which on the entry, C{wheel_slot}), and
L{TimeoutWheel.cancel} takes it out at once: a closed connection must not stay referenced, with
everything it holds, until a deadline that no longer means anything (300 s of idle timeout at
thousands of new connections a second is gigabytes).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["TimeoutWheel", "WheelEntry"]


class WheelEntry(Protocol):
    #: the tick of the bucket the entry is in (set by the wheel; None when in none)
    wheel_slot: int | None

    def wheelExpired(self) -> float | None:
        """Deadline reached (or passed): act, and return None, or the seconds until the next look."""


class TimeoutWheel:
    """Buckets of entries by tick, driven by a single C{callLater} that runs only while needed.

    @ivar tick: the current tick number (C{int(now / resolution)}); connections record it on
        activity.
    """

    def __init__(self, clock: Any, resolution: float = 0.25):
        if resolution <= 0:
            raise ValueError("resolution must be > 0")
        self._clock = clock
        self.resolution = float(resolution)
        self.tick = self._now()
        self._done = self.tick
        # each bucket is a dict used as an ordered set: O(1) removal on cancel
        self._buckets: dict[int, dict[WheelEntry, None]] = {}
        self._call = None
        self.size = 0

    def _now(self) -> int:
        return int(self._clock.seconds() / self.resolution)

    def now(self) -> int:
        """The current tick, refreshed first if the wheel was idle (its C{tick} is then stale)."""
        if self._call is None:
            # _now() inlined: this runs three times per new connection
            self.tick = int(self._clock.seconds() / self.resolution)
        return self.tick

    def ticks(self, seconds: float) -> int:
        """Whole ticks covering C{seconds} (at least one)."""
        return max(1, math.ceil(seconds / self.resolution))

    def schedule(self, entry: WheelEntry, delay: float) -> None:
        """Call C{entry.wheelExpired()} once C{delay} seconds have passed (to the resolution).

        An entry already in the wheel moves to the new time.
        """
        if getattr(entry, "wheel_slot", None) is not None:
            self.cancel(entry)
        if self._call is None:
            self.tick = self._now()
            self._done = self.tick
        due = self.tick + self.ticks(delay)
        bucket = self._buckets.get(due)
        if bucket is None:
            self._buckets[due] = {entry: None}
        else:
            bucket[entry] = None
        entry.wheel_slot = due
        self.size += 1
        if self._call is None:
            self._call = self._clock.callLater(self.resolution, self._run)

    def cancel(self, entry: WheelEntry) -> None:
        """Take C{entry} out of the wheel now (nothing happens if it is in none)."""
        slot = getattr(entry, "wheel_slot", None)
        if slot is None:
            return
        entry.wheel_slot = None
        bucket = self._buckets.get(slot)
        if bucket is not None and entry in bucket:
            del bucket[entry]
            self.size -= 1
            if not bucket:
                del self._buckets[slot]

    def _run(self) -> None:
        self._call = None
        now = self._now()
        self.tick = now
        buckets = self._buckets
        if now - self._done > len(buckets):
            due = sorted(t for t in buckets if t <= now)
        else:
            due = [t for t in range(self._done + 1, now + 1) if t in buckets]
        self._done = now
        for t in due:
            entries = buckets.pop(t)
            self.size -= len(entries)
            for entry in entries:
                entry.wheel_slot = None
                try:
                    again = entry.wheelExpired()
                except Exception:  # pragma: no cover - an entry's bug must not stop the wheel
                    from twisted.logger import Logger

                    Logger().failure("timeout entry {entry!r} failed", entry=entry)
                    again = None
                if again is not None:
                    self.schedule(entry, again)
        if buckets and self._call is None:
            self._call = self._clock.callLater(self.resolution, self._run)

    def stop(self) -> None:
        """Cancel the timer (entries stay; a later C{schedule} restarts it)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

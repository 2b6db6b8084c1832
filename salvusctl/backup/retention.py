"""Which backups to keep: counts per tier (like rsnapshot's hourly/daily/weekly) and a maximum age.

A pure function of the run list and C{now}, so every rule is tested without a clock or a disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Retention", "RunInfo", "selectRuns"]

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
# The epoch was a Thursday; shifting by three days makes week buckets start on Monday.
_WEEK_SHIFT = 3 * DAY


@dataclass(frozen=True)
class Retention:
    """How many backups to keep.

    @ivar last: the newest N good runs, whatever their age.
    @ivar hourly: the newest run of each of the N most recent hours that have one.
    @ivar daily: likewise per day (UTC); C{weekly} per ISO week.
    @ivar max_age: seconds; older runs go even if a tier would keep them (never the newest good).
    All None keeps everything.
    """

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    max_age: float | None = None

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        for name in ("last", "hourly", "daily", "weekly"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"retention {name}= must be a non-negative integer, not {value!r}")
        if self.max_age is not None and (
            isinstance(self.max_age, bool) or not isinstance(self.max_age, int | float) or self.max_age <= 0
        ):
            raise ValueError(f"retention max_age= must be positive seconds, not {self.max_age!r}")

    @property
    def keepsEverything(self) -> bool:
        return all(getattr(self, n) is None for n in ("last", "hourly", "daily", "weekly", "max_age"))


@dataclass(frozen=True)
class RunInfo:
    """What retention needs to know of a run."""

    run_id: str
    started: float
    good: bool


def _buckets(runs: list[RunInfo], count: int, size: float, shift: float = 0.0) -> set[str]:
    keep: set[str] = set()
    seen: set[int] = set()
    for run in runs:  # newest first
        bucket = int((run.started + shift) // size)
        if bucket in seen:
            continue
        if len(seen) >= count:
            break
        seen.add(bucket)
        keep.add(run.run_id)
    return keep


def selectRuns(runs: Iterable[RunInfo], now: float, policy: Retention) -> tuple[list[str], list[str]]:
    """Split runs into (keep, drop), each newest first.

    Failed or partial runs are dropped once a newer good run exists: they are never a base or a
    restore point, so they only cost space.  The newest good run is always kept.
    """
    ordered = sorted(runs, key=lambda r: r.started, reverse=True)
    good = [r for r in ordered if r.good]
    newest_good = good[0] if good else None
    keep: set[str] = set()
    if policy.keepsEverything:
        keep = {r.run_id for r in good}
    else:
        if policy.last:
            keep |= {r.run_id for r in good[: policy.last]}
        if policy.hourly:
            keep |= _buckets(good, policy.hourly, HOUR)
        if policy.daily:
            keep |= _buckets(good, policy.daily, DAY)
        if policy.weekly:
            keep |= _buckets(good, policy.weekly, WEEK, _WEEK_SHIFT)
        if all(getattr(policy, n) is None for n in ("last", "hourly", "daily", "weekly")):
            keep = {r.run_id for r in good}
        if policy.max_age is not None:
            keep = {r.run_id for r in good if r.run_id in keep and now - r.started <= policy.max_age}
    if newest_good is not None:
        keep.add(newest_good.run_id)
    for run in ordered:
        if not run.good and (newest_good is None or run.started > newest_good.started):
            keep.add(run.run_id)
    return (
        [r.run_id for r in ordered if r.run_id in keep],
        [r.run_id for r in ordered if r.run_id not in keep],
    )

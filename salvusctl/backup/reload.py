"""Reloading the backup sets: added, removed and changed C{Backup(...)} declarations, applied live.

The running L{BackupService} takes the new list through C{reconfigure}: new schedules take effect
at once, and a set's sources, destination and keep counts reach it between runs, so a backup
running during the reload finishes with the settings it started with.  A host that had no backup
set has no backup service, and the store creates the backup tables only when it starts: the first
C{Backup(...)} on a running host needs a restart.  Removing the last one leaves the service
running with no set.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from salvusctl.backup.build import checkSets
from salvusctl.backup.service import sameBackup
from salvusctl.host.components import oneEntry

__all__ = ["diff", "apply", "entries", "applyEntries"]

log = Logger()

PRESENCE_REASON = (
    "the backup service is added or removed: the store creates the backup tables only when the "
    "host starts"
)


def diff(context: Any, old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """Set names added, changed and removed, or None; L{ConfigError} for two sets with one name or
    destination (checked before anything is applied)."""
    checkSets(new, context.host)
    before = {d.name: d for d in old}
    after = {d.name: d for d in new}
    entry: dict[str, Any] = {
        "added": sorted(n for n in after if n not in before),
        "changed": sorted(n for n in after if n in before and not sameBackup(before[n], after[n])),
        "removed": sorted(n for n in before if n not in after),
    }
    if not any(entry.values()):
        return None
    if context.services.get("backup") is None:
        entry.update(restart=True, reason=PRESENCE_REASON)
    return entry


def apply(context: Any, new: list[Any], entry: dict[str, Any]) -> dict[str, list[str]]:
    """Give the running backup service the new sets."""
    return context.services["backup"].reconfigure(list(new))


# The host's reloader asks for named entries; the backup's diff gives its one entry.
entries, applyEntries = oneEntry("backup", diff, apply)

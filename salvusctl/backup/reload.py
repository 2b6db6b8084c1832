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


def entries(context: Any, running: list[Any], declared: list[Any]) -> dict[str, dict[str, Any]]:
    """The backup's entries of a host reload diff (L{salvusctl.host.reload}): C{{"backup": entry}}
    from L{diff}, or none when the declarations are the same."""
    entry = diff(context, running, declared)
    return {"backup": entry} if entry else {}


def applyEntries(context: Any, declared: list[Any], live: dict[str, dict[str, Any]]) -> Any:
    """Apply the backup's live entry through L{apply} (the reloader passes none that needs a restart)."""
    return apply(context, declared, live["backup"])

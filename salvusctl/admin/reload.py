"""Reloading the admin: its users file, roles, page options and limits, applied live.

The running L{AdminService} keeps every bound listener and gives each one's site a new root
(C{reconfigure}): a new users file (and with it the users' roles; edits of the file itself are
picked up without any reload), C{refresh}, C{title}, C{project_url}, C{max_request_bytes},
C{login_limit} and C{login_window} answer the next request; C{header_timeout} and
C{max_connections_per_address} apply to the next connection.

Listeners are not rebound live, and a change to any C{listen} endpoint (or adding or removing an
C{Admin(...)}) makes the whole admin entry "restart needed", with nothing of it applied:

  - twistd binds listeners in C{privilegedStartService}, before it drops privileges (C{--uid});
    the running host may no longer be allowed to bind the new one (a port below 1024, a socket in
    a root-owned directory), and finding that out halfway would leave the admin on some of its
    endpoints only;
  - a reload usually arrives over the admin itself (C{salvus.reconcile}, C{salvusctl reconcile}):
    closing the listener it came in on would cut off the client before it hears the result.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from salvusctl.admin.build import AdminService
from salvusctl.host.components import oneEntry

__all__ = ["diff", "apply", "entries", "applyEntries", "LISTENER_REASON"]

log = Logger()

LISTENER_REASON = (
    "admin listeners are bound once, before twistd drops privileges: the running host may not be "
    "allowed to bind the new endpoint, and closing the old one would cut off the client that asked "
    "for the reload"
)
LIVE_OPTIONS = AdminService.LIVE_OPTIONS


def diff(context: Any, old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """The options that changed (names), or None; C{restart} when the listeners differ."""
    if [d.listen for d in old] != [d.listen for d in new] or context.services.get("admin") is None:
        if not old and not new:
            return None
        return {"added": [], "changed": ["listen"], "removed": [], "restart": True,
                "reason": LISTENER_REASON}
    changed = sorted({name for a, b in zip(old, new, strict=True) for name in LIVE_OPTIONS
                      if getattr(a, name) != getattr(b, name)})
    return {"added": [], "changed": changed, "removed": []} if changed else None


def apply(context: Any, new: list[Any], entry: dict[str, Any]) -> list[str]:
    """Serve the new options on the running listeners."""
    return context.services["admin"].reconfigure(list(new))


# The host's reloader asks for named entries; the admin's diff gives its one entry.
entries, applyEntries = oneEntry("admin", diff, apply)

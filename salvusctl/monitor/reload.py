"""Reloading the monitor: compare the running C{Monitor(...)} with the file's and apply it live.

Everything that only steers sampling is applied to the running L{MonitorService} through
C{reconfigure}: the intervals (its looping calls are restarted on the injected clock, buffered rows
are kept), the retention policies, the buffer bound, which deploys and deploy directories are
sampled and whether mounts are.  Three things are fixed when the host starts, so a change to any of
them makes the whole monitor entry "restart needed" and nothing of it is applied (the monitor never
runs half old, half new):

  - C{address}: written into every open C{services} row and handed to the balancer's least-load
    sources when they were bound;
  - C{memcached} / C{memcached_expire}: the publisher's connection is made at start;
  - adding or dropping C{load_source}: it was bound into the balancer's scheduler at build time.

A host that gains or loses its C{Monitor} altogether needs a restart too: the store creates the
monitor's tables only when it starts, and the alerts and the balancer are wired to it at build.
"""

from __future__ import annotations

from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.host.components import oneEntry

__all__ = ["diff", "apply", "entries", "applyEntries", "LIVE_FIELDS", "RESTART_FIELDS"]

# Monitor fields applied to the running service (the declaration's name -> the service's).
LIVE_FIELDS = ("interval", "disk_interval", "buffer_rows", "deploy_dirs", "retention",
               "retention_interval", "deploys", "mounts", "synchronous_commit")
RESTART_FIELDS = ("address", "memcached", "memcached_expire", "load_source")

RESTART_REASON = (
    "the monitor's address, memcached publisher and load source are fixed when the host starts "
    "(services rows, the publisher's connection and the balancer's least-load sources use them)"
)
PRESENCE_REASON = (
    "a Monitor(...) added or removed: the store creates the monitor's tables only at start, and "
    "the alerts and the balancer are wired to the monitor when they are built"
)
NOT_RUNNING = "this host runs no monitor service to apply it to"


def _value(declaration: Any, name: str) -> Any:
    value = getattr(declaration, name)
    if name == "load_source":
        return value is not None  # a new file makes a new (unbound) source object each read
    if name == "retention":
        return declaration.policies()
    return value


def _entry(changed: list[str], restart: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"added": [], "changed": sorted(changed), "removed": []}
    if restart:
        entry.update(restart=True, reason=restart)
    return entry


def diff(context: Any, old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """The monitor's part of a reload diff: C{{added, changed, removed[, restart, reason]}} with
    the changed fields as names, or None when the declarations are the same."""
    if not old and not new:
        return None
    if bool(old) != bool(new):
        return dict(_entry([]), added=["monitor"] if new else [], removed=[] if new else ["monitor"],
                    restart=True, reason=PRESENCE_REASON)
    if len(new) > 1 or len(old) > 1:
        raise ConfigError("a host has one Monitor(...); merge the declarations")
    before, after = old[0], new[0]
    live = [n for n in LIVE_FIELDS if _value(before, n) != _value(after, n)]
    fixed = [n for n in RESTART_FIELDS if _value(before, n) != _value(after, n)]
    if fixed:
        return _entry(live + fixed, RESTART_REASON)
    if live and context.services.get("monitor") is None:
        return _entry(live, NOT_RUNNING)
    return _entry(live) if live else None


def apply(context: Any, new: list[Any], entry: dict[str, Any]) -> list[str]:
    """Give the running monitor the new declaration's live settings; returns the names changed."""
    declaration = new[0]
    settings = {n: getattr(declaration, n) for n in LIVE_FIELDS}
    settings["retention"] = declaration.policies()
    return context.services["monitor"].reconfigure(**settings)


# The host's reloader asks for named entries; the monitor's diff gives its one entry.
entries, applyEntries = oneEntry("monitor", diff, apply)

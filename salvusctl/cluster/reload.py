"""Reloading the cluster: compare the running C{Cluster(...)} with the file's and apply what can be.

Retention (C{retention}, C{max_messages}, C{prune_interval}) and C{drain_delay} only steer what
this host does with its own rows and stops, so they reach the running L{ClusterService} through
C{reconfigure}.  Everything else is how peers know and reach this host (its name, address and
admin URL, the heartbeat and missed count every peer reads from its row), what it publishes and
which handlers its mailbox runs: a change to any of those makes the whole cluster entry "restart
needed" and nothing of it is applied, so a member never runs half old, half new.  A host that
gains or loses its C{Cluster(...)} needs a restart too: it joins or leaves as it starts or stops.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.host.components import oneEntry

__all__ = ["diff", "apply", "entries", "applyEntries", "LIVE_FIELDS"]

#: The C{Cluster} fields applied to the running service.
LIVE_FIELDS = ("retention", "max_messages", "prune_interval", "drain_delay")

RESTART_REASON = (
    "the cluster name, address, admin URL, heartbeat, missed count, published deploys and handlers "
    "are fixed when the host joins: peers read them from its row and its mailbox runs the handlers"
)
PRESENCE_REASON = "a Cluster(...) added or removed: a host joins its cluster when it starts"
NOT_RUNNING = "this host runs no cluster service to apply it to"


def _value(declaration: Any, name: str) -> Any:
    value = getattr(declaration, name)
    if name == "handlers":
        # A file read again makes new function objects: a handler is the same by its kind and name.
        return {kind: getattr(fn, "__qualname__", repr(fn)) for kind, fn in value.items()}
    return value


def diff(context: Any, old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """The cluster's part of a reload diff: C{{added, changed, removed[, restart, reason]}} with
    the changed fields as names, or None when the declarations are the same."""
    if not old and not new:
        return None
    entry: dict[str, Any] = {"added": [], "changed": [], "removed": []}
    if bool(old) != bool(new):
        return dict(entry, added=["cluster"] if new else [], removed=[] if new else ["cluster"],
                    restart=True, reason=PRESENCE_REASON)
    if len(new) > 1:
        raise ConfigError("a host has one Cluster(...); merge the declarations")
    before, after = old[0], new[0]
    changed = sorted(f.name for f in fields(after) if _value(before, f.name) != _value(after, f.name))
    if not changed:
        return None
    entry["changed"] = changed
    if any(name not in LIVE_FIELDS for name in changed):
        entry.update(restart=True, reason=RESTART_REASON)
    elif context.services.get("cluster") is None:
        entry.update(restart=True, reason=NOT_RUNNING)
    return entry


def apply(context: Any, new: list[Any], entry: dict[str, Any]) -> list[str]:
    """Give the running cluster member the new declaration's retention and drain settings."""
    declaration = new[0]
    return context.services["cluster"].reconfigure(**{n: getattr(declaration, n) for n in LIVE_FIELDS})


# The host's reloader asks for named entries; the cluster's diff gives its one entry.
entries, applyEntries = oneEntry("cluster", diff, apply)

"""Backend host states, as a leaf module every other balancer module may import.

A host's I{effective} state combines three inputs, each owned by one party:

- the admin state (C{up}, C{drain}, C{maint}), set by an operator through the live API;
- the health state (up or down), set by the active health check and by failed connects;
- the agent state (C{up}, C{drain}, C{maint}, C{down}), set by the backend's own agent.

The most restrictive wins: maint, then down, then drain, then up (HAProxy's order).
"""

from __future__ import annotations

__all__ = ["UP", "DOWN", "DRAIN", "MAINT", "ADMIN_STATES", "STATES", "combine"]

UP = "up"
DOWN = "down"
DRAIN = "drain"
MAINT = "maint"

ADMIN_STATES = frozenset({UP, DRAIN, MAINT})
STATES = (UP, DOWN, DRAIN, MAINT)


def combine(admin: str, healthy: bool, agent: str) -> str:
    """The effective state of a host from its three inputs (most restrictive wins)."""
    if admin == MAINT or agent == MAINT:
        return MAINT
    if not healthy or agent == DOWN:
        return DOWN
    if admin == DRAIN or agent == DRAIN:
        return DRAIN
    return UP

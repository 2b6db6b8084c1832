"""HAProxy's agent-check protocol: a backend's own agent says how it wants to be treated.

The balancer connects to the agent port, optionally sends a line, and reads one line of words:
C{up}/C{ready}, C{down}/C{fail}/C{stopped}, C{drain}, C{maint}, C{NN%} (weight as a percentage of
the configured one), C{weight:N} (an absolute weight, as a percentage of the configured one, kept
for the predecessors' agents) and C{maxconn:N}.  Unknown words are ignored, as HAProxy does.
"""

from __future__ import annotations

from dataclasses import dataclass

from salvusctl.balancer import states

__all__ = ["AgentReply", "parseAgentReply"]

_STATE_WORDS = {
    "up": states.UP,
    "ready": states.UP,
    "down": states.DOWN,
    "fail": states.DOWN,
    "stopped": states.DOWN,
    "drain": states.DRAIN,
    "maint": states.MAINT,
}


@dataclass
class AgentReply:
    """What one agent line asked for; None where it said nothing."""

    state: str | None = None
    percent: int | None = None
    weight: int | None = None
    maxconn: int | None = None
    unknown: tuple[str, ...] = ()


def parseAgentReply(text: str) -> AgentReply:
    """Parse one agent line; words may be separated by spaces, commas or tabs."""
    reply = AgentReply()
    unknown = []
    for word in text.replace(",", " ").replace("\t", " ").split():
        w = word.strip().lower()
        if w in _STATE_WORDS:
            reply.state = _STATE_WORDS[w]
        elif w.endswith("%") and w[:-1].isdigit():
            reply.percent = int(w[:-1])
        elif w.startswith("weight:") and w[7:].isdigit():
            reply.weight = int(w[7:])
        elif w.startswith("maxconn:") and w[8:].isdigit():
            reply.maxconn = int(w[8:])
        else:
            unknown.append(word)
    reply.unknown = tuple(unknown)
    return reply

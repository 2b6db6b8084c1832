"""Alert rules: pure functions of a monitor snapshot and the time.

A rule looks at one snapshot (the monitor's latest instances and host sample) and says, for each
subject it covers (an instance name, the host, a mount point), whether its condition holds now and a
one-line message.  Holding "for Y seconds in a row" and not repeating notifications are the engine's
job (L{salvusctl.alerts.engine}), so rules stay stateless and their tests need no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.units import humanBytes

__all__ = ["Rule", "Reading", "RULE_KINDS", "DOWN_STATES", "MB"]

MB = 1024 * 1024
DOWN_STATES = frozenset({"EXITED", "BACKOFF", "FATAL", "UNKNOWN"})

# kind -> (what the threshold means, whether it needs one, instance-scoped)
RULE_KINDS: dict[str, tuple[str, bool, bool]] = {
    "stale": ("seconds without a sample", True, True),
    "down": ("(none)", False, True),
    "fatal": ("(none)", False, True),
    "flapping": ("starts within `seconds`", True, True),
    "cpu": ("instance cpu %", True, True),
    "host_cpu": ("host cpu %", True, False),
    "host_free_ram": ("MB of available RAM (alert below)", True, False),
    "rss": ("MB of resident memory of an instance's process tree", True, True),
    "disk": ("% used of a mount", True, False),
    "threads": ("threads of an instance's process tree", True, True),
    "fds": ("open fds of an instance's process tree", True, True),
}


class Reading(tuple):
    """One subject's C{(holds, message)}, with the measured C{value} beside it.

    A 2-tuple, so C{holds, message = reading} reads it as before; C{value} is the number the
    threshold is compared with, in the threshold's unit (MB for C{rss}, % for C{cpu} …), or the
    state for C{down} and C{fatal}, or None.  Event listeners and webhooks get it as such.
    """

    value: Any

    def __new__(cls, holds: bool, message: str, value: Any = None) -> Reading:
        self = super().__new__(cls, (holds, message))
        self.value = value
        return self


def _mb(v: float) -> float:
    return round(v / MB, 1)


@dataclass(frozen=True)
class Rule:
    """One declared alert rule.

    @ivar kind: one of L{RULE_KINDS}.
    @ivar threshold: the limit (unit by kind, see L{RULE_KINDS}).
    @ivar seconds: how long the condition must hold before the alert fires; for C{flapping}, the
        window the starts are counted in.
    @ivar deploy: only instances of this deploy (instance rules).
    @ivar name: the alert's name in notifications and the store (default: the kind, with the
        deploy).
    """

    kind: str
    threshold: float | None = None
    seconds: float = 0.0
    deploy: str | None = None
    name: str | None = None
    severity: str = "warning"

    def __post_init__(self):
        if self.kind not in RULE_KINDS:
            raise ConfigError(f"unknown alert kind {self.kind!r}: one of {', '.join(RULE_KINDS)}")
        meaning, needs, scoped = RULE_KINDS[self.kind]
        if needs and not isinstance(self.threshold, int | float):
            raise ConfigError(f"alert {self.kind!r} needs a numeric threshold ({meaning})")
        if needs and self.threshold < 0:
            raise ConfigError(f"alert {self.kind!r} threshold must be >= 0, not {self.threshold}")
        if not isinstance(self.seconds, int | float) or self.seconds < 0:
            raise ConfigError(f"alert {self.kind!r} seconds must be >= 0, not {self.seconds!r}")
        if self.kind == "flapping" and not self.seconds:
            raise ConfigError("alert 'flapping' needs seconds= (the window the starts are counted in)")
        if self.deploy is not None and not scoped:
            raise ConfigError(f"alert {self.kind!r} is about the host: it takes no deploy")
        if self.severity not in ("info", "warning", "critical"):
            raise ConfigError(f"alert severity must be info, warning or critical, not {self.severity!r}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.kind if self.deploy is None else f"{self.kind}:{self.deploy}"

    @property
    def holdSeconds(self) -> float:
        """How long the condition must hold before firing (flapping counts within its window)."""
        return 0.0 if self.kind == "flapping" else float(self.seconds)

    def evaluate(self, snapshot: Mapping[str, Any], now: float, firstSeen: Mapping[str, float]):
        """{subject: L{Reading} (condition holds, message; and the value)} for every subject this
        rule covers now.

        @param firstSeen: when the engine first saw each instance (a stale rule's start for an
            instance never sampled).
        """
        kind = self.kind
        t = self.threshold
        out: dict[str, Reading] = {}
        if not RULE_KINDS[kind][2]:
            host = snapshot.get("host") or {}
            if kind == "host_cpu" and host.get("cpu_percent") is not None:
                v = host["cpu_percent"]
                out["host"] = Reading(v > t, f"host cpu {v:.0f}% (limit {t:g}%)", v)
            elif kind == "host_free_ram" and host.get("mem_available") is not None:
                v = host["mem_available"]
                out["host"] = Reading(v < t * MB, f"host available RAM {humanBytes(v)} (limit {t:g} MB)",
                                      _mb(v))
            elif kind == "disk":
                for m in host.get("mounts", ()):
                    out[m["mountpoint"]] = Reading(
                        m["percent"] > t,
                        f"disk {m['mountpoint']} {m['percent']:.0f}% used (limit {t:g}%),"
                        f" {humanBytes(m['free'])} free",
                        m["percent"],
                    )
            return out
        for name, e in (snapshot.get("instances") or {}).items():
            if self.deploy is not None and e.get("group") != self.deploy:
                continue
            state = e.get("state")
            running = state == "RUNNING"
            if kind == "down":
                out[name] = Reading(state in DOWN_STATES, f"{name} is {state}", state)
            elif kind == "fatal":
                out[name] = Reading(state == "FATAL", f"{name} is {state}", state)
            elif kind == "flapping":
                starts = [s for s in e.get("starts", ()) if now - s <= self.seconds]
                out[name] = Reading(
                    len(starts) >= t,
                    f"{name} started {len(starts)} times in {self.seconds:g}s (limit {t:g})",
                    len(starts),
                )
            elif kind == "stale":
                if not running:
                    out[name] = Reading(False, f"{name} is {state}")
                    continue
                last = e.get("sampled_at", firstSeen.get(name, now))
                age = now - last
                out[name] = Reading(age > t, f"{name} sent no sample for {age:.0f}s (limit {t:g}s)",
                                    round(age, 1))
            elif not running or e.get("sampled_at") is None:
                out[name] = Reading(False, f"{name} is {state}")
            elif kind == "cpu":
                v = e.get("cpu_percent") or 0.0
                out[name] = Reading(v > t, f"{name} cpu {v:.0f}% (limit {t:g}%)", v)
            elif kind == "rss":
                v = e.get("rss") or 0
                out[name] = Reading(v > t * MB, f"{name} rss {humanBytes(v)} (limit {t:g} MB)", _mb(v))
            elif kind in ("threads", "fds"):
                v = e.get(kind)
                if v is None:
                    continue
                out[name] = Reading(v > t, f"{name} has {v} {kind} (limit {t:g})", v)
        return out

"""supervisord's event types, their payloads, and the bus that carries them to listener pools.

A leaf module: no I/O, no Twisted.  The names, the type hierarchy (subscribing to
C{PROCESS_STATE} receives every C{PROCESS_STATE_*}) and the payload text are supervisord 4.3's,
byte for byte, so listeners written for supervisord (superlance's C{memmon}, C{httpok},
C{crashmail}, anything on C{supervisor.childutils}) parse what Salvus sends unchanged.
C{ALERT}, C{ALERT_FIRED} and C{ALERT_RESOLVED} are Salvus's own (its alert rules as event
sources), with a payload in the same C{key:value} style.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENT_TYPES",
    "ABSTRACT",
    "Event",
    "EventBus",
    "isA",
    "unknownEvents",
    "processStatePayload",
    "processLogPayload",
    "processCommunicationPayload",
    "remoteCommunicationPayload",
    "groupPayload",
    "tickPayload",
    "alertPayload",
    "timeslice",
    "TICK_PERIODS",
    "COMM_BEGIN",
    "COMM_END",
]

# name -> parent name (None for the root).  supervisord's EventTypes, plus EVENT_BUFFER_OVERFLOW
# (supervisord 3.0's overflow notice, which 4.x only logs).
EVENT_TYPES: dict[str, str | None] = {
    "EVENT": None,
    "PROCESS_STATE": "EVENT",
    "PROCESS_STATE_STOPPED": "PROCESS_STATE",
    "PROCESS_STATE_EXITED": "PROCESS_STATE",
    "PROCESS_STATE_STARTING": "PROCESS_STATE",
    "PROCESS_STATE_STOPPING": "PROCESS_STATE",
    "PROCESS_STATE_BACKOFF": "PROCESS_STATE",
    "PROCESS_STATE_FATAL": "PROCESS_STATE",
    "PROCESS_STATE_RUNNING": "PROCESS_STATE",
    "PROCESS_STATE_UNKNOWN": "PROCESS_STATE",
    "PROCESS_COMMUNICATION": "EVENT",
    "PROCESS_COMMUNICATION_STDOUT": "PROCESS_COMMUNICATION",
    "PROCESS_COMMUNICATION_STDERR": "PROCESS_COMMUNICATION",
    "PROCESS_LOG": "EVENT",
    "PROCESS_LOG_STDOUT": "PROCESS_LOG",
    "PROCESS_LOG_STDERR": "PROCESS_LOG",
    "REMOTE_COMMUNICATION": "EVENT",
    "SUPERVISOR_STATE_CHANGE": "EVENT",
    "SUPERVISOR_STATE_CHANGE_RUNNING": "SUPERVISOR_STATE_CHANGE",
    "SUPERVISOR_STATE_CHANGE_STOPPING": "SUPERVISOR_STATE_CHANGE",
    "TICK": "EVENT",
    "TICK_5": "TICK",
    "TICK_60": "TICK",
    "TICK_3600": "TICK",
    "PROCESS_GROUP": "EVENT",
    "PROCESS_GROUP_ADDED": "PROCESS_GROUP",
    "PROCESS_GROUP_REMOVED": "PROCESS_GROUP",
    "EVENT_BUFFER_OVERFLOW": "EVENT",
    # Salvus's own: its alert rules firing and clearing (salvusctl.alerts.supervisoractions).
    "ALERT": "EVENT",
    "ALERT_FIRED": "ALERT",
    "ALERT_RESOLVED": "ALERT",
}

# Types that are only ever subscribed to, never sent.
ABSTRACT = frozenset({"EVENT", "PROCESS_STATE", "PROCESS_COMMUNICATION", "PROCESS_LOG",
                      "SUPERVISOR_STATE_CHANGE", "TICK", "PROCESS_GROUP", "ALERT"})

TICK_PERIODS = {"TICK_5": 5, "TICK_60": 60, "TICK_3600": 3600}

COMM_BEGIN = b"<!--XSUPERVISOR:BEGIN-->"
COMM_END = b"<!--XSUPERVISOR:END-->"


def isA(name: str, subscribed: str) -> bool:
    """Whether an event called C{name} reaches a subscription to C{subscribed} (itself or an
    ancestor type)."""
    current: str | None = name
    while current is not None:
        if current == subscribed:
            return True
        current = EVENT_TYPES.get(current)
    return False


def unknownEvents(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in EVENT_TYPES]


@dataclass(eq=False)
class Event:
    """One notification.  C{serial} is the global serial, given when the first pool takes it;
    C{poolSerials} holds each pool's own serial, kept when a rejected event is buffered again
    (so a re-sent event carries the serials it had the first time, as in supervisord)."""

    name: str
    payload: str
    serial: int = -1
    poolSerials: dict[str, int] = field(default_factory=dict)


class EventBus:
    """Delivers each event to every subscriber, in subscription order; owns the global serial."""

    def __init__(self) -> None:
        self.serial = -1
        self._subscribers: list[Callable[[Event], Any]] = []

    def subscribe(self, callback: Callable[[Event], Any]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Event], Any]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def nextSerial(self) -> int:
        self.serial += 1
        return self.serial

    def notify(self, name: str, payload: str) -> Event:
        if name not in EVENT_TYPES or name in ABSTRACT:
            raise ValueError(f"not an event type that is sent: {name!r}")
        event = Event(name, payload)
        for callback in list(self._subscribers):
            callback(event)
        return event

    @property
    def active(self) -> bool:
        """Whether anyone listens: payloads need not be built otherwise."""
        return bool(self._subscribers)


def _pairs(items: Iterable[tuple[str, Any]]) -> str:
    return " ".join(f"{k}:{v}" for k, v in items)


def processStatePayload(processname: str, groupname: str, old: str, new: str, *, tries: int = 0,
                        pid: int = 0, expected: bool = True) -> str:
    """C{processname:x groupname:g from_state:S} and the keys supervisord adds per new state:
    C{tries} (STARTING, BACKOFF), C{pid} (RUNNING, STOPPING, STOPPED), C{expected pid} (EXITED)."""
    items: list[tuple[str, Any]] = [("processname", processname), ("groupname", groupname),
                                    ("from_state", old)]
    if new in ("STARTING", "BACKOFF"):
        items.append(("tries", int(tries)))
    elif new in ("RUNNING", "STOPPING", "STOPPED"):
        items.append(("pid", int(pid)))
    elif new == "EXITED":
        items += [("expected", int(bool(expected))), ("pid", int(pid))]
    return _pairs(items)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"Undecodable: {data!r}"


def processLogPayload(processname: str, groupname: str, pid: int, channel: str, data: bytes) -> str:
    return f"processname:{processname} groupname:{groupname} pid:{pid} channel:{channel}\n{_text(data)}"


def processCommunicationPayload(processname: str, groupname: str, pid: int, data: bytes) -> str:
    return f"processname:{processname} groupname:{groupname} pid:{pid}\n{_text(data)}"


def remoteCommunicationPayload(type: str, data: str) -> str:
    return f"type:{type}\n{data}"


def groupPayload(group: str) -> str:
    return f"groupname:{group}\n"


def tickPayload(when: int) -> str:
    return f"when:{when}"


def _token(value: Any) -> str:
    """A header value with no colon, space or newline: C{supervisor.childutils.get_headers}
    splits tokens on spaces and each on I{every} colon, and instance names and rule names hold
    colons (C{web:0}, C{rss:web}).  Percent-encoded, so C{urllib.parse.unquote} gives it back."""
    from urllib.parse import quote

    if isinstance(value, float):
        value = f"{value:g}"
    return quote(str(value), safe="")


def alertPayload(*, rule: str, kind: str, subject: str, severity: str, host: str, value: Any,
                 message: str, fired_at: float, cleared_at: float | None = None,
                 groupname: str | None = None, processname: str | None = None) -> str:
    """C{ALERT_FIRED} / C{ALERT_RESOLVED}: one header line of C{key:value} tokens (values
    percent-encoded, see L{_token}), a newline, the alert's one-line message.

    C{groupname} and C{processname} are there, as in C{PROCESS_STATE} payloads, when the subject
    is an instance; C{value} is absent when the rule measures nothing; C{cleared_at} only when
    resolved.
    """
    items: list[tuple[str, Any]] = [("rule", rule), ("kind", kind), ("subject", subject),
                                    ("severity", severity), ("host", host)]
    if groupname is not None and processname is not None:
        items += [("groupname", groupname), ("processname", processname)]
    if value is not None:
        items.append(("value", value))
    items.append(("fired_at", int(fired_at)))
    if cleared_at is not None:
        items.append(("cleared_at", int(cleared_at)))
    return _pairs((k, _token(v)) for k, v in items) + "\n" + message.replace("\n", " ")


def timeslice(period: int, when: float) -> int:
    """The start of the C{period}-second slice C{when} falls in (supervisord's tick times)."""
    return int(when - (when % period))

"""supervisord's event listeners: the C{EventListener} declaration, its pool and its protocol.

An event listener is a deploy whose stdout speaks supervisord's listener protocol and whose
stdin receives events:

    listener -> Salvus   C{READY\\n}
    Salvus -> listener   C{ver:3.0 server:supervisor serial:S pool:P poolserial:N eventname:E len:L\\n}
                         and L characters of payload
    listener -> Salvus   C{RESULT 2\\nOK} (processed) or C{RESULT 4\\nFAIL} (buffered again, re-sent)

Each declaration is one I{pool}: its C{numprocs} instances share one buffer of at most
C{buffer_size} events (the oldest is dropped beyond it, with an C{EVENT_BUFFER_OVERFLOW} event)
and one pool serial; an event goes to the first instance that is RUNNING and READY, and waits in
the buffer while all are busy.  The service calls L{EventHub} from its state, output and
lifecycle hooks; everything here is driven by those calls and the injected reactor.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from salvusctl.errors import ConfigError
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.events import (
    ABSTRACT,
    COMM_BEGIN,
    COMM_END,
    EVENT_TYPES,
    TICK_PERIODS,
    Event,
    EventBus,
    groupPayload,
    isA,
    processCommunicationPayload,
    processLogPayload,
    processStatePayload,
    remoteCommunicationPayload,
    tickPayload,
    timeslice,
)
from salvusctl.supervisor.states import ProcessState

__all__ = ["EventListener", "ListenerState", "ListenerPool", "ListenerChannel", "EventHub",
           "processNames"]

log = Logger()
S = ProcessState


@dataclass(eq=True)
class EventListener(Deploy):
    """A deploy that receives supervisord events on stdin (supervisord's C{[eventlistener:x]}).

    @ivar events: event type names (C{PROCESS_STATE}, C{TICK_60} …); a type receives its
        subtypes, C{EVENT} receives everything.
    @ivar buffer_size: events kept while every instance is busy; beyond it the oldest is dropped.

    Its stdin is always a pipe (the events arrive there) and its stdout is the protocol, not
    logged; stderr is logged as any deploy's.  Priority defaults to -1, as supervisord's: the
    listeners start before the programs they hear about and stop after them.
    """

    events: Sequence[str] = ()
    buffer_size: int = 10
    priority: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.events, str):
            self.events = (self.events,)
        self.events = tuple(self.events)
        self.stdin = True

    def _validateSelf(self) -> None:
        super()._validateSelf()
        if not self.events:
            raise ConfigError("an event listener needs events=[...] (event type names)")
        unknown = [e for e in self.events if not isinstance(e, str) or e not in EVENT_TYPES]
        if unknown:
            raise ConfigError(f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
        size = self.buffer_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"buffer_size must be an int >= 1, not {self.buffer_size!r}")
        if self.redirect_stderr:
            raise ConfigError("an event listener's stdout is its protocol: redirect_stderr is refused")


class ListenerState(enum.IntEnum):
    """supervisord's listener states, same names, same numbers."""

    READY = 10
    BUSY = 20
    ACKNOWLEDGED = 30
    UNKNOWN = 40


L = ListenerState
_READY = b"READY\n"
_RESULT = b"RESULT "


def processNames(instance: Any) -> tuple[str, str]:
    """(processname, groupname) as supervisord's payloads and C{getProcessInfo} give them."""
    group = instance.deploy.groupName
    full = instance.name
    return (full[len(group) + 1:] if full.startswith(group + ":") else full), group


class ListenerChannel:
    """One listener instance's side of the protocol: parses its stdout, writes to its stdin."""

    def __init__(self, pool: ListenerPool, instance: Any):
        self.pool = pool
        self.instance = instance
        self.state = L.ACKNOWLEDGED
        self.event: Event | None = None
        self._buffer = b""
        self._resultLen: int | None = None
        self._result = b""

    def spawned(self) -> None:
        """A new process: it must say READY before it is sent anything."""
        self.state = L.ACKNOWLEDGED
        self.event = None
        self._buffer = b""
        self._resultLen = None
        self._result = b""

    def gone(self) -> None:
        """The process ended: an event it held unanswered is buffered again, at the head."""
        event, self.event = self.event, None
        if event is not None:
            self.pool.accept(event, head=True)

    def _change(self, new: ListenerState) -> None:
        old, self.state = self.state, new
        log.debug("{name}: {old} -> {new}", name=self.instance.name, old=old.name, new=new.name)
        if new == L.UNKNOWN:
            log.warn("{name}: has entered the UNKNOWN state and will no longer receive events, "
                     "this usually indicates the process violated the eventlistener protocol",
                     name=self.instance.name)

    def received(self, data: bytes) -> None:
        self._buffer += data
        self._advance()
        if self.state == L.READY:
            self.pool.dispatch()

    def _advance(self) -> None:
        while self._buffer:
            if self.state == L.UNKNOWN:
                self._buffer = b""
                return
            if self.state == L.ACKNOWLEDGED:
                if len(self._buffer) < len(_READY):
                    return
                if self._buffer.startswith(_READY):
                    self._buffer = self._buffer[len(_READY):]
                    self.event = None
                    self._change(L.READY)
                    continue
                self._buffer = b""
                self.event = None
                self._change(L.UNKNOWN)
                return
            if self.state == L.READY:
                # Output before it was sent anything: strict, as supervisord.
                self._buffer = b""
                self.event = None
                self._change(L.UNKNOWN)
                return
            # BUSY
            if self._resultLen is None:
                pos = self._buffer.find(b"\n")
                if pos == -1:
                    return
                line, self._buffer = self._buffer[:pos], self._buffer[pos + 1:]
                try:
                    if not line.startswith(_RESULT):
                        raise ValueError(line)
                    self._resultLen = int(line[len(_RESULT):])
                    if self._resultLen < 0:
                        raise ValueError(line)
                except ValueError:
                    log.warn("{name}: bad result line: {line!r}", name=self.instance.name, line=line)
                    self._buffer = b""
                    self._resultLen = None
                    self._change(L.UNKNOWN)
                    self.gone()
                    return
            needed = self._resultLen - len(self._result)
            self._result += self._buffer[:needed]
            self._buffer = self._buffer[needed:]
            if len(self._result) < self._resultLen:
                return
            result, self._result, self._resultLen = self._result, b"", None
            event, self.event = self.event, None
            self._change(L.ACKNOWLEDGED)
            if result != b"OK" and event is not None:
                log.warn("{name}: event was rejected", name=self.instance.name)
                self.pool.accept(event, head=True)

    def send(self, event: Event, poolSerial: int) -> bool:
        """Write the envelope and go BUSY; False when the pipe is gone (state unchanged)."""
        envelope = (f"ver:3.0 server:supervisor serial:{event.serial} pool:{self.pool.name} "
                    f"poolserial:{poolSerial} eventname:{event.name} len:{len(event.payload)}\n"
                    f"{event.payload}")
        transport = getattr(self.instance, "transport", None)
        if transport is None:
            return False
        try:
            transport.writeToChild(0, envelope.encode("utf-8"))
        except (OSError, KeyError):
            return False
        self.state = L.BUSY
        self.event = event
        return True


class ListenerPool:
    """The buffer, serial and instances of one L{EventListener} declaration."""

    def __init__(self, hub: EventHub, listener: EventListener):
        self.hub = hub
        self.name = listener.name
        self.events = tuple(listener.events)
        self.bufferSize = listener.buffer_size
        self.serial = -1
        self.buffer: list[Event] = []
        self.channels: dict[str, ListenerChannel] = {}
        self._dispatching = False

    def wants(self, event: Event) -> bool:
        return any(isA(event.name, s) for s in self.events)

    def offer(self, event: Event) -> None:
        if self.wants(event):
            self.accept(event)
            self.dispatch()

    def accept(self, event: Event, head: bool = False) -> None:
        """Buffer an event (supervisord's C{_acceptEvent}): serials on first sight, the oldest
        dropped when the buffer is full."""
        if event.serial < 0:
            event.serial = self.hub.bus.nextSerial()
        if self.name not in event.poolSerials:
            self.serial += 1
            event.poolSerials[self.name] = self.serial
        if len(self.buffer) >= self.bufferSize and self.buffer:
            dropped = self.buffer.pop(0)
            log.error("pool {pool} event buffer overflowed, discarding event {serial}",
                      pool=self.name, serial=dropped.serial)
            self.hub.overflowed(self, dropped)
        if head:
            self.buffer.insert(0, event)
        else:
            self.buffer.append(event)

    def channel(self, instance: Any) -> ListenerChannel:
        channel = self.channels.get(instance.name)
        if channel is None or channel.instance is not instance:
            channel = self.channels[instance.name] = ListenerChannel(self, instance)
        return channel

    def dispatch(self) -> None:
        """Send buffered events, oldest first, while some instance is RUNNING and READY."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self.buffer:
                ready = [c for c in self.channels.values()
                         if c.state == L.READY and c.instance.state == S.RUNNING]
                event = self.buffer[0]
                if not any(c.send(event, event.poolSerials[self.name]) for c in ready):
                    return
                self.buffer.pop(0)
        finally:
            self._dispatching = False


class EventHub:
    """The supervisor's event side: makes events from its hooks, feeds the pools.

    @param service: the L{SupervisorService} (its C{reactor}, C{instances}, C{groups()}).
    """

    def __init__(self, service: Any):
        self.service = service
        self.bus = EventBus()
        self.pools: dict[str, ListenerPool] = {}
        self._lastPid: dict[str, int] = {}
        self._ticks: dict[int, int] = {}
        self._tickCall = None
        self._capture: dict[tuple[str, str], bytearray | None] = {}

    # -- pools -------------------------------------------------------------------------------

    def deployAdded(self, deploy: Deploy) -> None:
        if isinstance(deploy, EventListener) and deploy.name not in self.pools:
            pool = self.pools[deploy.name] = ListenerPool(self, deploy)
            self.bus.subscribe(pool.offer)

    def deployRemoved(self, deploy: Deploy) -> None:
        pool = self.pools.pop(deploy.name, None)
        if pool is not None:
            self.bus.unsubscribe(pool.offer)

    def notify(self, name: str, payload: str) -> None:
        if self.bus.active:
            self.bus.notify(name, payload)

    def overflowed(self, pool: ListenerPool, dropped: Event) -> None:
        if dropped.name != "EVENT_BUFFER_OVERFLOW":
            self.service.reactor.callLater(0, self.notify, "EVENT_BUFFER_OVERFLOW",
                                           f"groupname:{pool.name} eventname:{dropped.name}")

    # -- hooks from the service ------------------------------------------------------------------

    def stateChanged(self, instance: Any, old: ProcessState, new: ProcessState) -> None:
        pool = self.pools.get(instance.deploy.name)
        channel = pool.channel(instance) if pool is not None else None
        if channel is not None and new == S.STARTING:
            channel.spawned()
        if instance.pid:
            self._lastPid[instance.name] = instance.pid
        if self.bus.active and new.name != old.name:
            processname, groupname = processNames(instance)
            expected = instance.exitstatus in tuple(instance.deploy.exitcodes)
            tries = instance.backoffCount + (1 if new == S.BACKOFF else 0)
            self.bus.notify(f"PROCESS_STATE_{new.name}", processStatePayload(
                processname, groupname, old.name, new.name, tries=tries,
                pid=instance.pid or self._lastPid.get(instance.name, 0), expected=expected))
        if channel is not None:
            if new == S.RUNNING:
                pool.dispatch()
            elif new not in (S.STARTING, S.STOPPING):
                channel.gone()

    def output(self, instance: Any, stream: str, data: bytes) -> bytes:
        """A deploy's output: events for it, and the bytes its log should keep.

        A listener's stdout is its protocol (nothing is logged).  Otherwise C{PROCESS_LOG_*}
        events when the deploy enables them, and C{<!--XSUPERVISOR:BEGIN-->…END-->} blocks
        taken out of the stream as C{PROCESS_COMMUNICATION_*} events when its capture size
        allows them.
        """
        deploy = instance.deploy
        pool = self.pools.get(deploy.name)
        if pool is not None and stream == "stdout":
            pool.channel(instance).received(data)
            return b""
        if getattr(deploy, f"{stream}_capture_maxbytes", 0):
            data = self._captured(instance, stream, data)
        if data and getattr(deploy, f"{stream}_events_enabled", False) and self.bus.active:
            processname, groupname = processNames(instance)
            self.bus.notify(f"PROCESS_LOG_{stream.upper()}", processLogPayload(
                processname, groupname, instance.pid or 0, stream, data))
        return data

    def _captured(self, instance: Any, stream: str, data: bytes) -> bytes:
        """Take capture blocks out of C{data}; what lies outside them is returned for the log."""
        key = (instance.name, stream)
        limit = getattr(instance.deploy, f"{stream}_capture_maxbytes")
        kept = bytearray()
        block = self._capture.get(key)
        pending = data
        while pending:
            if block is None:
                at = pending.find(COMM_BEGIN)
                if at == -1:
                    kept += pending
                    break
                kept += pending[:at]
                pending = pending[at + len(COMM_BEGIN):]
                block = bytearray()
            else:
                block += pending
                pending = b""
                at = block.find(COMM_END)
                if at != -1:
                    body, pending = bytes(block[:at]), bytes(block[at + len(COMM_END):])
                    block = None
                    processname, groupname = processNames(instance)
                    self.notify(f"PROCESS_COMMUNICATION_{stream.upper()}", processCommunicationPayload(
                        processname, groupname, instance.pid or 0, body))
                elif len(block) > limit:
                    log.warn("{name}: {stream} capture block over {limit} bytes, logged instead",
                             name=instance.name, stream=stream, limit=limit)
                    kept += COMM_BEGIN + bytes(block)
                    block = None
        self._capture[key] = block
        return bytes(kept)

    def remote(self, type: str, data: str) -> None:
        self.notify("REMOTE_COMMUNICATION", remoteCommunicationPayload(type, data))

    def groupAdded(self, group: str) -> None:
        self.notify("PROCESS_GROUP_ADDED", groupPayload(group))

    def groupRemoved(self, group: str) -> None:
        self.notify("PROCESS_GROUP_REMOVED", groupPayload(group))

    # -- supervisor lifecycle and ticks ------------------------------------------------------------

    def started(self) -> None:
        self.notify("SUPERVISOR_STATE_CHANGE_RUNNING", "")
        now = self.service.reactor.seconds()
        self._ticks = {p: timeslice(p, now) for p in TICK_PERIODS.values()}
        self._scheduleTick(now)

    def stopping(self) -> None:
        self.notify("SUPERVISOR_STATE_CHANGE_STOPPING", "")
        if self._tickCall is not None and self._tickCall.active():
            self._tickCall.cancel()
        self._tickCall = None

    def _scheduleTick(self, now: float) -> None:
        # The next 5-second boundary: every tick period is a multiple of it.
        delay = timeslice(5, now) + 5 - now
        self._tickCall = self.service.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        now = self.service.reactor.seconds()
        for name, period in TICK_PERIODS.items():
            this = timeslice(period, now)
            if this != self._ticks.get(period):
                self._ticks[period] = this
                try:
                    self.notify(name, tickPayload(this))
                except Exception:
                    log.failure("tick event failed")
        self._scheduleTick(now)

    def subscribedTypes(self) -> list[str]:
        return sorted({e for p in self.pools.values() for e in p.events})


def sentTypes() -> list[str]:
    """Every event type Salvus sends (the abstract ones are only subscribed to)."""
    return [n for n in EVENT_TYPES if n not in ABSTRACT]

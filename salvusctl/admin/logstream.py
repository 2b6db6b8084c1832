"""An HTTP response that streams a log as it grows (C{supervisorctl tail -f} / C{maintail -f}).

New lines are pushed by the log itself (a follower callback), so a follower costs nothing while
the log is quiet and never re-reads a file.  Given a clock, the lines that come within
C{interval} (0.1 s) go out as one write: a log growing 100 lines a second costs each follower 10
writes (and socket sends) a second, not 100, in the reactor that also serves the balancer.

The response is the transport's push producer: when a client reads more slowly than the log
grows and the transport's buffer fills, lines are counted and skipped (one C{[N lines skipped …]}
marker is written when it drains) instead of piling up in the host's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["LogStream", "lineBytes"]


#: The last line formatted and its bytes, per form (stamped, raw): every follower of a log is
#: pushed the same line object in turn, so it is formatted once, not once per follower.  The
#: line is held, so its identity cannot be reused by another object while it is here.
_lastLine: dict[bool, list[Any]] = {False: [None, b""], True: [None, b""]}
#: The same for a chunk of lines pushed at once (L{LogStream.lines}).
_lastLines: dict[bool, list[Any]] = {False: [None, b""], True: [None, b""]}


def lineBytes(line: Any, raw: bool = False) -> bytes:
    """A pushed line's bytes: C{raw}, what the program wrote (a C{LogLine}'s text and its
    newline, as its log file holds it); else as Salvus's own log shows it (a C{LogLine} formats
    itself with its receive time and level; plain text gets a newline)."""
    last = _lastLine[raw]
    if line is last[0]:
        return last[1]
    if raw and hasattr(line, "text"):
        text = line.text + "\n"
    else:
        fmt = getattr(line, "format", None)
        text = fmt() if callable(fmt) else f"{line}\n"
    data = text.encode("utf-8", "replace")
    last[0], last[1] = line, data
    return data


def linesBytes(lines: list[Any], raw: bool = False) -> bytes:
    """A chunk of pushed lines (see L{lineBytes}), formatted once for every follower."""
    last = _lastLines[raw]
    if lines is last[0]:
        return last[1]
    data = b"".join(lineBytes(line, raw) for line in lines)
    last[0], last[1] = lines, data
    return data


@implementer(IPushProducer)
class LogStream:
    """Writes C{first}, then each line C{follow(callback)} pushes, until the client goes away.

    @param follow: registers a line callback and returns the function that unregisters it.
    @param clock: an C{IReactorTime}; with one, lines are gathered for C{interval} seconds and
        written together; without, each is written as it comes.
    @param raw: write each line as the program wrote it (a process log: C{supervisorctl tail -f}
        shows what the log file holds, as under supervisord); else with Salvus's receive time
        and level (the main log, whose file is written that way).
    @ivar done: fires (with C{b""}) once the client has gone; Klein ends the response then.
    """

    def __init__(self, request: Any, first: bytes,
                 follow: Callable[[Callable[[Any], None]], Callable[[], None]],
                 clock: Any = None, interval: float = 0.1, raw: bool = False):
        self.request = request
        self.raw = raw
        self._cancel: Callable[[], None] | None = None
        self.paused = False
        self.skipped = 0
        self.clock = clock
        self.interval = interval
        self._pending: list[bytes] = []
        self._pendingLines = 0  # lines in _pending beyond one per entry (chunks), for skipped
        self._timer: Any = None
        self.done: defer.Deferred = defer.Deferred()
        request.registerProducer(self, True)
        if first:
            request.write(first)
        self._cancel = follow(self)
        request.notifyFinish().addBoth(self._finished)

    def __call__(self, line: Any) -> None:
        """A follower is a callable of one line (what every log's C{follow} takes)."""
        self.line(line)

    def lines(self, lines: list[Any]) -> None:
        """A chunk of lines at once (a log that pushes chunks): one formatted block, shared."""
        if self.done.called or not lines:
            return
        if self.paused:
            self.skipped += len(lines)
            return
        if self.clock is None:
            self.request.write(linesBytes(lines, self.raw))
            return
        self._pending.append(linesBytes(lines, self.raw))
        self._pendingLines += len(lines) - 1
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def line(self, line: Any) -> None:
        if self.done.called:
            return
        if self.paused:
            self.skipped += 1
            return
        if self.clock is None:
            self.request.write(lineBytes(line, self.raw))
            return
        self._pending.append(lineBytes(line, self.raw))
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending, self._pendingLines = self._pending, [], 0
        if pending and not self.done.called:
            self.request.write(b"".join(pending))

    # IPushProducer: the transport says when its buffer is full and when it has drained.

    def pauseProducing(self) -> None:
        self.paused = True
        # Gathered, not yet written: skipped like the rest.
        self.skipped += len(self._pending) + self._pendingLines
        self._pending, self._pendingLines = [], 0

    def resumeProducing(self) -> None:
        self.paused = False
        if self.skipped and not self.done.called:
            self.request.write(f"[{self.skipped} lines skipped: the client read too slowly]\n".encode())
            self.skipped = 0

    def stopProducing(self) -> None:
        self._finished(None)

    def _finished(self, _: Any) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._pending, self._pendingLines = [], 0
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
        if getattr(self.request, "channel", None) is not None and self.request.producer is self:
            self.request.unregisterProducer()
        if not self.done.called:
            self.done.callback(b"")


class RawLogStream(LogStream):
    """A L{LogStream} of a process log: what the program wrote, as its log file holds it.

    Its C{chunk} method takes the bytes of whole lines as the supervisor received them, so the
    supervisor makes no per-line record for it (L{salvusctl.supervisor.logs.InstanceLog.follow});
    a supervisor that pushes lines one at a time (a fake) is served through C{__call__}."""

    def __init__(self, request: Any, first: bytes,
                 follow: Callable[[Callable[[Any], None]], Callable[[], None]],
                 clock: Any = None, interval: float = 0.1):
        super().__init__(request, first, follow, clock, interval, raw=True)

    def chunk(self, data: bytes, count: int) -> None:
        """C{count} whole lines, as written (one shared bytes object for every follower)."""
        if self.done.called or not data:
            return
        if self.paused:
            self.skipped += count
            return
        if self.clock is None:
            self.request.write(data)
            return
        self._pending.append(data)
        self._pendingLines += count - 1
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)

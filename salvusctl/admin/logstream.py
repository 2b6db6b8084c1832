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


#: The last line formatted and its bytes: every follower of a log is pushed the same line object
#: in turn, so it is formatted once, not once per follower.  The line is held, so its identity
#: cannot be reused by another object while it is here.
_lastLine: list[Any] = [None, b""]


def lineBytes(line: Any) -> bytes:
    """A pushed line as the log file shows it (a C{LogLine} formats itself; text gets a newline)."""
    if line is _lastLine[0]:
        return _lastLine[1]
    fmt = getattr(line, "format", None)
    text = fmt() if callable(fmt) else f"{line}\n"
    data = text.encode("utf-8", "replace")
    _lastLine[0], _lastLine[1] = line, data
    return data


#: The same for a chunk of lines pushed at once (L{LogStream.lines}): formatted once for all.
_lastLines: list[Any] = [None, b""]


def linesBytes(lines: list[Any]) -> bytes:
    """A chunk of pushed lines as the log file shows them, formatted once for every follower."""
    if lines is _lastLines[0]:
        return _lastLines[1]
    data = b"".join(lineBytes(line) for line in lines)
    _lastLines[0], _lastLines[1] = lines, data
    return data


@implementer(IPushProducer)
class LogStream:
    """Writes C{first}, then each line C{follow(callback)} pushes, until the client goes away.

    @param follow: registers a line callback and returns the function that unregisters it.
    @param clock: an C{IReactorTime}; with one, lines are gathered for C{interval} seconds and
        written together; without, each is written as it comes.
    @ivar done: fires (with C{b""}) once the client has gone; Klein ends the response then.
    """

    def __init__(self, request: Any, first: bytes,
                 follow: Callable[[Callable[[Any], None]], Callable[[], None]],
                 clock: Any = None, interval: float = 0.1):
        self.request = request
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
            self.request.write(linesBytes(lines))
            return
        self._pending.append(linesBytes(lines))
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
            self.request.write(lineBytes(line))
            return
        self._pending.append(lineBytes(line))
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

"""An HTTP response that streams a log as it grows (C{supervisorctl tail -f} / C{maintail -f}).

New lines are pushed by the log itself (a follower callback), so a follower costs nothing while
the log is quiet and never re-reads a file.  The response is the transport's push producer: when a
client reads more slowly than the log grows and the transport's buffer fills, lines are counted
and skipped (one C{[N lines skipped …]} marker is written when it drains) instead of piling up
in the host's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["LogStream", "lineBytes"]


def lineBytes(line: Any) -> bytes:
    """A pushed line as the log file shows it (a C{LogLine} formats itself; text gets a newline)."""
    fmt = getattr(line, "format", None)
    text = fmt() if callable(fmt) else f"{line}\n"
    return text.encode("utf-8", "replace")


@implementer(IPushProducer)
class LogStream:
    """Writes C{first}, then each line C{follow(callback)} pushes, until the client goes away.

    @param follow: registers a line callback and returns the function that unregisters it.
    @ivar done: fires (with C{b""}) once the client has gone; Klein ends the response then.
    """

    def __init__(self, request: Any, first: bytes,
                 follow: Callable[[Callable[[Any], None]], Callable[[], None]]):
        self.request = request
        self._cancel: Callable[[], None] | None = None
        self.paused = False
        self.skipped = 0
        self.done: defer.Deferred = defer.Deferred()
        request.registerProducer(self, True)
        if first:
            request.write(first)
        self._cancel = follow(self.line)
        request.notifyFinish().addBoth(self._finished)

    def line(self, line: Any) -> None:
        if self.done.called:
            return
        if self.paused:
            self.skipped += 1
            return
        self.request.write(lineBytes(line))

    # IPushProducer: the transport says when its buffer is full and when it has drained.

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.skipped and not self.done.called:
            self.request.write(f"[{self.skipped} lines skipped: the client read too slowly]\n".encode())
            self.skipped = 0

    def stopProducing(self) -> None:
        self._finished(None)

    def _finished(self, _: Any) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
        if getattr(self.request, "channel", None) is not None and self.request.producer is self:
            self.request.unregisterProducer()
        if not self.done.called:
            self.done.callback(b"")

"""
An epoll reactor whose dispatch loop costs less per event.

Profiling the balancer under keep-alive load (py-spy, wrk -c50 through one
process) shows about a tenth of its CPU in Twisted's per-event logging
context: ``EPollReactor.doPoll`` wraps every ready descriptor in
``log.callWithLogger``, which pushes and pops a context dict to prefix log
lines with the connection's ``logPrefix()``.  A proxy turns over two events
per message, so that context costs as much as the ``recv`` it surrounds.

This reactor dispatches directly: a plain readable event calls ``doRead``;
anything else goes to the stock ``_doReadOrWrite``.  Errors are still logged
and still disconnect the descriptor; their log lines lack the per-connection
prefix.

Its main loop also skips the timed-call bookkeeping while no timed call is due.
Twisted's loop runs ``runUntilCurrent`` and ``timeout`` on every turn (two
clock reads, two scans for new calls, a context manager, ``min``/``max``):
about ten Python calls per turn, and a short proxied connection takes four or
five turns.  Here a turn with no thread call, no new timed call and no due one
computes the poll timeout from the heap's head and polls; otherwise it is
Twisted's turn.  Everything else is Twisted's ``EPollReactor``.

Install it before anything imports ``twisted.internet.reactor``
(L{install}), or run ``twistd --reactor=epoll`` to keep the stock one.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.python import log

_log = Logger()

#: the longest epoll_wait timeout in seconds (2 ** 31 ms), as Twisted's C{timeout()} caps it
_LONGEST = 2147483

__all__ = ["FastEPollReactor", "install"]


class FastEPollReactor(EPollReactor):
    """L{EPollReactor} without the per-event logging context."""

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                try:
                    why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)
            else:
                self._doReadOrWrite(selectable, fd, event)

    doIteration = doPoll

    def mainLoop(self) -> None:
        while self._started:
            try:
                self._turns()
            except BaseException:
                _log.failure("Unexpected error in main loop")

    def _turns(self) -> None:
        seconds = self.seconds
        poll = self.doPoll
        while self._started:
            if self.threadCallQueue or self._newTimedCalls:
                self.runUntilCurrent()
                t = self.timeout()
            else:
                pending = self._pendingTimedCalls
                if pending:
                    delay = pending[0].time - seconds()
                    if delay <= 0:
                        self.runUntilCurrent()
                        t = self.timeout()
                    else:
                        t = delay if delay < _LONGEST else _LONGEST
                else:
                    t = None
            if not self.running:
                t = 0
            poll(t)


def install() -> FastEPollReactor:
    """Install L{FastEPollReactor} as the global reactor (only from a main entry point)."""
    from twisted.internet.main import installReactor

    reactor = FastEPollReactor()
    installReactor(reactor)
    return reactor

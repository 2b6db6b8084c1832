"""Refused clients, counted by kind and logged at a bounded rate.

A refusal (queue full, every host down, retries exhausted …) closes a client without serving it.
An operator must see that it happens, and why, without a log line per client: under a flood that
is thousands of lines a second.  So the first refusal of a kind is logged at once, and after it at
most one line per kind per C{interval} seconds, carrying how many clients that kind refused since
the last line and since start.  One C{DelayedCall} per kind that is refusing right now, none per
client.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

__all__ = ["RefusalLog", "KINDS"]

#: refusal kind -> the reason as logged
KINDS = {
    "queue_full": "queue full",
    "all_down": "every host down",
    "retries_exhausted": "retries exhausted",
    "no_group": "no active group",
    "no_host": "the scheduler chose no host",
    "queue_timeout": "waited in the queue too long",
    "local_error": "no local descriptor or buffer for a backend connection",
}

_log = Logger()


class RefusalLog:
    """Counts of refused clients per kind for one balanced service, and their log lines.

    @ivar counts: kind -> clients refused since start.
    """

    def __init__(self, reactor: Any, service: str, interval: float = 10.0, log: Logger | None = None):
        self.reactor = reactor
        self.service = service
        self.interval = interval
        self.log = log or _log
        self.counts: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._calls: dict[str, Any] = {}

    def refused(self, kind: str) -> None:
        """One client refused for C{kind} (a key of L{KINDS})."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind in self._calls:
            self._pending[kind] = self._pending.get(kind, 0) + 1
            return
        self._emit(kind, 1, None)
        self._calls[kind] = self.reactor.callLater(self.interval, self._flush, kind)

    def _flush(self, kind: str) -> None:
        count = self._pending.pop(kind, 0)
        if count:
            self._emit(kind, count, self.interval)
            self._calls[kind] = self.reactor.callLater(self.interval, self._flush, kind)
        else:
            del self._calls[kind]

    def _emit(self, kind: str, count: int, window: float | None) -> None:
        self.log.warn(
            "service {service} refused {count} client{s} ({why}){window}; {total} since start",
            service=self.service, count=count, s="" if count == 1 else "s", why=KINDS.get(kind, kind),
            window="" if window is None else f" in the last {window:g} s", total=self.counts[kind],
            refusal=kind, refused=count,
        )  # fmt: skip

    def stop(self) -> None:
        """Log what is still uncounted in the log and cancel the pending lines."""
        for kind, call in list(self._calls.items()):
            if call.active():
                call.cancel()
            count = self._pending.pop(kind, 0)
            if count:
                self._emit(kind, count, None)
        self._calls.clear()

"""The collector settings of a Salvus process (a host, a balancer process): fewer, shorter pauses.

CPython's cyclic collector runs a young collection every 700 net allocations and, now and then, a
full one over every tracked object, the modules, classes and configuration that start-up made
included.  A proxy allocates a handful of objects per connection (its protocols, transports,
sockets; a client and its backend refer to each other, a cycle only the collector frees), so at
thousands of connections a second the default thresholds collect many times a second, and a full
collection over everything start-up made is a pause that every request then waiting sees: the
tail of the latency.

L{tuneCollector} runs once the reactor runs: C{gc.freeze()} moves everything alive then (the
start-up objects) into the permanent generation, which no collection scans again, and
C{gc.set_threshold} makes young collections rarer (each then looks at more young objects, which
costs less than the same work spread over many runs) and full ones rarer still.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["THRESHOLDS", "tuneCollector", "freezeNow"]

#: young, middle and old generation thresholds (CPython's default: 700, 10, 10)
THRESHOLDS = (20_000, 10, 100)


def freezeNow(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Collect once, freeze what is left (start-up's objects), and set the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def tuneCollector(reactor: Any, thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Tune the collector of this process once C{reactor} runs (everything is started then).

    A process-wide setting: only entry points and host builders call it, never a library path
    that tests run many times in one process.
    """
    reactor.callWhenRunning(freezeNow, thresholds)

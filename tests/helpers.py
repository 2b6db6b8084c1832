"""Shared test helpers: waiting on real events without sleeping, child interpreters, temp dirs."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def childEnv(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout's salvusctl."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def freePort() -> int:
    """A port on 127.0.0.1 that was free a moment ago (bound, then closed): for a child or a
    server that must be told its port before it starts (for an address that must stay dead, use
    L{deadPort})."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# Sockets that keep dead ports reserved for the whole test run.
_reserved: list[socket.socket] = []


def deadPort() -> int:
    """A port on 127.0.0.1 where a connect is refused, for as long as the tests run.

    Bound and never listened on, and kept so: a port that was only free a moment ago may be taken
    by another test's server, or picked as the source port of a connect to itself (TCP's
    simultaneous open then "connects" to nothing), and the dead backend answers.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _reserved.append(s)
    return s.getsockname()[1]


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@inlineCallbacks
def waitFor(predicate, timeout: float = 10.0, interval: float = 0.02, reactor=_reactor) -> Deferred:
    """Poll C{predicate} on the reactor until it is true; fail after C{timeout} seconds.

    For behaviour that lives in real processes and sockets, where no Clock can stand in.
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        yield deferLater(reactor, interval, lambda: None)


class PendingPort:
    """A port on 127.0.0.1 where a connect stays in progress: its listener's queue is full.

    Linux drops a SYN to a listener whose accept queue is full, so the client's connect neither
    succeeds nor fails until the SYN is sent again (about a second later).  L{refuse} closes the
    listener: that retransmitted SYN is then answered with a reset, so the refusal reaches the
    client on a later turn of its reactor, long after C{connect()} returned, the way a refusal
    arrives from a host across a real network.  Loopback only, no other address is involved.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refuse(self) -> None:
        """From now on every retransmitted or new SYN is answered with a reset."""
        self.listener.close()

    def close(self) -> None:
        self.listener.close()
        for s in self.fillers:
            s.close()


class LoadLoops:
    """Client loops that keep requests going, one after another in each loop, until L{stop}.

    Each loop makes at most C{limit} requests, so the load is bounded in count as well as in time.
    A request's result is appended to C{bodies}; a request that fails is counted in C{failures}
    as C{"Type: message"} and the loop goes on, so a test sees every request that did not succeed
    while something changed under the load.
    """

    def __init__(self, request: Callable[[], Deferred], loops: int, limit: int):
        self.bodies: list = []
        self.failures: list[str] = []
        self._stopped = False
        self._loops = [self._loop(request, limit) for _ in range(loops)]

    @inlineCallbacks
    def _loop(self, request: Callable[[], Deferred], limit: int):
        for _ in range(limit):
            if self._stopped:
                return
            try:
                self.bodies.append((yield request()))
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")

    def stop(self) -> Deferred:
        """No new request in any loop; fires once the requests under way have ended."""
        self._stopped = True
        return gatherResults(self._loops)

    @inlineCallbacks
    def during(self, action: Callable[[], Deferred]) -> Deferred:
        """Run C{action()}, then L{stop} (also when it fails); fires with its result."""
        try:
            result = yield action()
        finally:
            yield self.stop()
        return result

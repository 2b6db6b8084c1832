"""The file descriptors a balancer process may spend on clients, and the listeners paused at the limit.

Running out of descriptors used to take the whole pool down: health checks could not open a socket
and marked every healthy backend down, Twisted's accept loop answered EMFILE by accepting and closing
everything in the listen backlog, and a backend connect that could not get a socket left its client
orphaned.  HAProxy instead sizes its maxconn from C{RLIMIT_NOFILE} at start (warning when the
configured one cannot fit), keeps descriptors for checks, and stops accepting while it is at the
limit: new clients wait in the kernel's backlog, and are taken the moment a connection closes.

L{DescriptorBudget} does that for one process: each client costs two descriptors (its own and its
backend's), a reserve is kept for health and agent checks, the admin, the store and the listeners,
and the listening ports (L{GuardedPort}) stop reading while the budget is spent.  A descriptor error
that still happens (something else in the process used them) is a I{local} error
(L{isLocalError}): it never counts against a backend.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

from salvusctl._twistedcompat import adoptListeningPort
from salvusctl.balancer.fastpath import LeanServer, acceptBatch

__all__ = ["DescriptorBudget", "GuardedPort", "LOCAL_ERRNOS", "descriptorLimit", "isLocalError",
           "listenGuarded", "adoptGuarded", "openDescriptors"]

log = Logger()

#: errors that say this host ran out of something, not that the backend failed: no descriptor
#: (process or system), no buffer or memory, no free local port.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})

#: descriptors kept beyond the clients' for what is not a client: the admin, logs, the store, DNS,
#: the control socket (checks are counted per host on top).
BASE_RESERVE = 32
#: descriptors a client connection costs: its own and its backend connection's.
PER_CLIENT = 2
#: seconds after a local error before accepting again if no connection closed meanwhile.
RETRY_AFTER = 1.0


def isLocalError(reason: Any) -> bool:
    """Whether an exception (or a Failure of one) is a resource error of this host (L{LOCAL_ERRNOS})."""
    value = getattr(reason, "value", reason)
    for attr in ("errno", "osError"):
        number = getattr(value, attr, None)
        if isinstance(number, int) and number in LOCAL_ERRNOS:
            return True
    return False


def descriptorLimit() -> int:
    """The soft C{RLIMIT_NOFILE} (a large number when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return 1 << 20
    return soft


def openDescriptors() -> int:
    """Descriptors this process has open now (0 when the system cannot say)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(path)) - 1)  # listdir's own descriptor
        except OSError:
            continue
    return 0


class DescriptorBudget:
    """How many clients one process holds at once, and the listening ports paused at that number.

    @ivar capacity: clients at once (each with its backend connection) that fit in the limit.
    @ivar clients: client connections open now (admitted, queued or closing).
    @ivar pauses: how many times accepting was paused; C{local_errors}: descriptor (or buffer)
        errors that happened anyway.
    """

    def __init__(self, reactor: Any, limit: int | None = None, in_use: int | None = None,
                 reserve: int | None = None):
        self.reactor = reactor
        self._real = limit is None  # the process's own limit: plan() may raise it, as HAProxy does
        self.limit = descriptorLimit() if limit is None else limit
        self.in_use = openDescriptors() if in_use is None else in_use
        # the larger of BASE_RESERVE and a sixteenth of the limit, for what is not a client
        self.base_reserve = max(BASE_RESERVE, self.limit // 16) if reserve is None else reserve
        self.reserve = self.base_reserve
        self.capacity = 1
        self.size(0)
        self.clients = 0
        self.ports: list[Any] = []
        self.paused = False
        self.blocked = False  # a local error happened: wait for a close (or RETRY_AFTER)
        self.pauses = 0
        self.local_errors = 0
        self._retry: Any = None
        self._logged_at: float | None = None

    def size(self, checks: int) -> int:
        """Recompute the capacity for C{checks} check connections (health and agent, per host)."""
        self.reserve = self.base_reserve + checks
        self.capacity = max(1, (self.limit - self.in_use - self.reserve) // PER_CLIENT)
        return self.capacity

    def needed(self, maxconn: int) -> int:
        """Descriptors C{maxconn} clients need, with what is in use and the reserve."""
        return self.in_use + self.reserve + PER_CLIENT * maxconn

    def plan(self, maxconn: int, checks: int) -> int:
        """Size for C{checks} checks; log as HAProxy does when the declared C{maxconn} cannot fit.

        C{maxconn} 0 means none was declared: the limit alone decides.  A declared one that needs
        more than the soft C{RLIMIT_NOFILE} raises it, up to the hard limit.  Returns the capacity.
        """
        capacity = self.size(checks)
        if maxconn and maxconn > capacity and self._real:
            self._raiseLimit(self.needed(maxconn))
            capacity = self.size(checks)
        if maxconn and maxconn > capacity:
            log.warn(
                "balancer: maxconn {maxconn} cannot fit in the descriptor limit (RLIMIT_NOFILE "
                "{limit}); it needs {needed} ({per} per connection, {reserve} kept for checks, the admin "
                "and listeners, {in_use} in use at start). At most {capacity} connections at once; "
                "raise 'ulimit -n' to {needed} or more to serve them all",
                maxconn=maxconn, limit=self.limit, needed=self.needed(maxconn), per=PER_CLIENT,
                reserve=self.reserve, in_use=self.in_use, capacity=capacity)
        elif not maxconn:
            log.info("balancer: at most {capacity} connections at once (RLIMIT_NOFILE {limit})",
                     capacity=capacity, limit=self.limit)
        return capacity

    def _raiseLimit(self, needed: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target <= soft:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return
        log.info("balancer: raised RLIMIT_NOFILE from {soft} to {target} for maxconn",
                 soft=soft, target=target)
        self.limit = target

    # -- the count ---------------------------------------------------------------------------------

    def headroom(self) -> int:
        """Clients that may still be accepted now."""
        if self.blocked:
            return 0
        return self.capacity - self.clients

    def opened(self) -> None:
        self.clients += 1
        if self.clients >= self.capacity and not self.paused:
            self.pause()

    def closed(self) -> None:
        self.clients -= 1
        if self.blocked:
            self._unblock()
        elif self.paused and self.clients <= self.capacity - max(1, self.capacity // 20):
            self.resume()

    def localError(self) -> None:
        """A descriptor could not be had despite the budget: stop accepting until one frees."""
        self.local_errors += 1
        self.blocked = True
        self.pause()
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(RETRY_AFTER, self._unblock)

    def _unblock(self) -> None:
        self.blocked = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self.clients < self.capacity:
            self.resume()

    # -- the listeners -----------------------------------------------------------------------------

    def addPort(self, port: Any) -> None:
        """Pause and resume C{port} with the budget (a L{GuardedPort} also caps each accept batch)."""
        if isinstance(port, GuardedPort):
            port.budget = self
        self.ports.append(port)
        if self.paused:
            _stopReading(port)

    def removePort(self, port: Any) -> None:
        if port in self.ports:
            self.ports.remove(port)
        if isinstance(port, GuardedPort):
            port.budget = None

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.pauses += 1
        now = self.reactor.seconds()
        if self._logged_at is None or now - self._logged_at >= 10.0:  # one line per 10 s at most
            self._logged_at = now
            log.info("balancer: {clients} connections, at the descriptor limit (capacity {capacity}): "
                     "accepting paused ({pauses} pauses so far)", clients=self.clients,
                     capacity=self.capacity, pauses=self.pauses)
        for port in self.ports:
            _stopReading(port)

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        for port in self.ports:
            if getattr(port, "connected", False) and not getattr(port, "disconnecting", False):
                port.startReading()

    def stop(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def info(self) -> dict:
        return {"limit": self.limit, "reserve": self.reserve, "in_use_at_start": self.in_use,
                "capacity": self.capacity, "clients": self.clients, "paused": self.paused,
                "pauses": self.pauses, "local_errors": self.local_errors}


def _stopReading(port: Any) -> None:
    stop = getattr(port, "stopReading", None)
    if stop is not None:
        stop()


class GuardedPort(tcp.Port):
    """A TCP listening port that never accepts more clients in one batch than the budget allows.

    Twisted's accept loop takes up to C{numberAccepts} clients per readable event (a number that
    grows by 20 after every full batch); pausing between events alone would still overshoot by a
    whole batch.
    """

    budget: DescriptorBudget | None = None
    transport = LeanServer

    def startListening(self) -> None:
        """Listen, with C{TCP_NODELAY} set once on the listening socket: Linux copies it to every
        socket accepted from it, so clients get no Nagle delay and cost no C{setsockopt} each
        (HAProxy sets it on both sides of a pair too)."""
        tcp.Port.startListening(self)
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a stack that refuses it on a listener: clients keep Nagle's algorithm

    def doRead(self) -> None:
        budget = self.budget
        if budget is not None:
            room = budget.headroom()
            if room <= 0:
                budget.pause()
                return
            if self.numberAccepts > room:
                self.numberAccepts = room
        # The batch of Twisted's loop (and its adaptive size), without its per-client layers;
        # any accept error but "no more" goes to Twisted's loop, which handles each kind.
        limit = self.numberAccepts
        try:
            accepted = acceptBatch(self, limit)
        except BaseException:
            log.failure("balancer: accepting a client failed")
            return
        if accepted is None:
            tcp.Port.doRead(self)
        elif accepted == limit:
            self.numberAccepts = limit + 20
        else:
            self.numberAccepts = max(1, accepted)


def listenGuarded(reactor: Any, port: int, factory: Any, backlog: int, interface: str) -> GuardedPort:
    """C{reactor.listenTCP} with a L{GuardedPort}."""
    p = GuardedPort(port, factory, backlog, interface, reactor)
    p.startListening()
    return p


def adoptGuarded(reactor: Any, fd: int, family: int, factory: Any) -> GuardedPort:
    """C{reactor.adoptStreamPort} with a L{GuardedPort}."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"a balancer listener is TCP, not address family {family}")
    p = adoptListeningPort(GuardedPort, reactor, fd, family, factory)
    p.startListening()
    return p

"""The per-connection path: a client protocol, a backend protocol, and nothing else per connection.

Kept lean on purpose (it is measured against HAProxy): no Deferred, no endpoint and no
C{DelayedCall} per connection.  A connection pair is one L{Frontend} (the accepted client), one
small L{BackendFactory} handed to C{reactor.connectTCP} (timeout None: the shared
L{TimeoutWheel} owns every deadline) and one L{Backend}.  Once the backend is connected the two
transports are each other's producers, as in C{twisted.protocols.portforward}, so a slow reader
pauses the fast writer instead of buffering without bound.

Half-close is forwarded, as HAProxy does: a client that shuts down its sending side (and waits for
the answer) gets it; the pair closes once both directions have ended, or at the idle timeout.  TLS
transports do not half-close and fall back to a full close.

Decisions (which host, retry or refuse, queue) belong to the service; this module only moves bytes
and reports what happened.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer

from salvusctl.balancer.fastpath import READ_SIZE, closeNow, fastWrite, isPlain, shutdownWriteNow
from salvusctl.balancer.proxyproto import header as proxyHeader

__all__ = ["Frontend", "Backend", "BackendFactory", "FrontendFactory", "NEW", "QUEUED", "CONNECTING",
           "CONNECTED", "CLOSING", "CLOSED"]

NEW, QUEUED, CONNECTING, CONNECTED, CLOSING, CLOSED = range(6)


def _shutdownWrite(transport: Any) -> None:
    if isPlain(transport):
        shutdownWriteNow(transport)
        return
    lose = getattr(transport, "loseWriteConnection", None)
    if lose is None:
        transport.loseConnection()
    else:
        lose()


@implementer(IHalfCloseableProtocol)
class Frontend(Protocol):
    """An accepted client connection, paused until a backend is connected.

    @ivar lc: wheel tick of the client's last bytes; C{ls}: of the server's.
    @ivar tried: hosts that failed for this client (not offered again on retry).
    """

    # class-level defaults keep per-connection construction to a few attribute stores
    peer: Backend | None = None
    host: Any = None
    connector: Any = None
    phase = NEW
    tried: list | None = None
    attempts = 0
    admitted = False
    timed_out = False
    due = 0
    armed = False
    wheel_slot = None  # the wheel's note of the bucket this connection is in
    pending: bytes | None = None
    eof = 0  # bit 1: the client finished sending; bit 2: the backend did
    since = 0
    lc = 0
    ls = 0

    def __init__(self, service: Any, wheel: Any):
        self.service = service
        self.wheel = wheel

    def connectionMade(self):
        self.lc = self.ls = self.since = self.wheel.now()
        self.service.accept(self)
        # Pause reading until a backend is connected; a connect that completed at once
        # (fastpath.connectTCP on a fast network) spares the two epoll changes.
        if self.phase == QUEUED or self.phase == CONNECTING:
            self.transport.pauseProducing()

    def dataReceived(self, data):
        peer = self.peer
        if peer is None:
            self.pending = data if self.pending is None else self.pending + data
            return
        self.lc = self.wheel.tick
        self.host.bytes_in += len(data)
        fastWrite(peer.transport, data)

    def readConnectionLost(self):
        """The client shut down its sending side: pass the shutdown on to the backend."""
        self.eof |= 1
        peer = self.peer
        if peer is None or self.phase != CONNECTED:
            self.close()
        elif self.eof == 3:
            self.finish()
        else:
            _shutdownWrite(peer.transport)

    def writeConnectionLost(self):
        pass

    def finish(self) -> None:
        """Both directions ended: close the pair."""
        self.phase = CLOSING
        closeNow(self.transport)
        if self.peer is not None:
            closeNow(self.peer.transport)

    def connectionLost(self, reason):
        phase = self.phase
        self.phase = CLOSED
        if self.armed:
            # Leave the wheel now: waiting for the idle deadline kept every closed pair alive.
            self.armed = False
            self.wheel.cancel(self)
        if phase == CONNECTED or phase == CLOSING:
            if self.peer is not None:
                closeNow(self.peer.transport)
        elif phase == CONNECTING:
            self.connector.disconnect()
        self.service.frontendClosed(self, phase)
        # No cycle left (client -> backend -> its connection -> its factory -> client): the
        # pair is freed by reference counting now, not by a later full collection.
        self.peer = None
        self.connector = None

    # -- called by the service -----------------------------------------------------------------

    def close(self) -> None:
        """Refuse or end this client cleanly (FIN, after anything already written)."""
        if self.phase != CLOSED:
            self.phase = CLOSING
            self.transport.loseConnection()

    def arm(self) -> None:
        """Make sure the wheel looks at this connection by its next deadline."""
        deadline = self._deadline()
        if deadline is None:
            return
        if self.armed and self.due <= deadline:
            return
        wheel = self.wheel
        self.armed = True
        self.due = deadline
        wheel.schedule(self, (deadline - wheel.tick) * wheel.resolution)

    def _deadline(self) -> int | None:
        phase = self.phase
        svc = self.service
        if phase == CONNECTED:
            c, s = svc.client_ticks, svc.server_ticks
            if c and s:
                return min(self.lc + c, self.ls + s)
            if c:
                return self.lc + c
            if s:
                return self.ls + s
            return None
        if phase == CONNECTING:
            return self.since + svc.connect_ticks if svc.connect_ticks else None
        if phase == QUEUED:
            return self.since + svc.queue_ticks if svc.queue_ticks else None
        return None

    def wheelExpired(self) -> float | None:
        wheel = self.wheel
        tick = wheel.tick
        if tick < self.due:
            return None  # a stale copy: a later look is already scheduled
        for _ in range(4):
            deadline = self._deadline()
            if deadline is None:
                self.armed = False
                return None
            if deadline > tick:
                self.due = deadline
                return (deadline - tick) * wheel.resolution
            self._expire()
        self.armed = False
        return None

    def _expire(self) -> None:
        phase = self.phase
        if phase == CONNECTING:
            self.timed_out = True
            self.connector.disconnect()
        elif phase == QUEUED:
            self.service.queueTimedOut(self)
        elif phase == CONNECTED:
            self.service.idleTimedOut(self)
            self.phase = CLOSING
            self.transport.loseConnection()
            if self.peer is not None:
                self.peer.transport.loseConnection()

    def backendConnected(self, backend: Backend) -> None:
        self.phase = CONNECTED
        self.peer = backend
        self.ls = self.lc = self.wheel.now()
        host = self.host
        host.total += 1
        t = self.transport
        bt = backend.transport
        if host.proxy_protocol:
            bt.write(proxyHeader(host.proxy_protocol, t.getPeer(), t.getHost()))
        if isPlain(t) and isPlain(bt):
            # Each side's protocol produces for the other side's transport (see pauseProducing):
            # a full buffer pauses the reader, and a closing side does not loseConnection the other.
            bt.registerProducer(self, True)
            t.registerProducer(backend, True)
            t.bufferSize = bt.bufferSize = READ_SIZE
        else:
            bt.registerProducer(t, True)
            t.registerProducer(bt, True)
        if self.pending is not None:
            host.bytes_in += len(self.pending)
            fastWrite(bt, self.pending)
            self.pending = None
        t.resumeProducing()
        self.arm()

    # producer for the backend transport: pause/resume reading from the client
    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass  # our connectionLost handlers close the pair

    def __repr__(self) -> str:
        return f"<Frontend phase={self.phase} host={getattr(self.host, 'name', None)}>"


@implementer(IHalfCloseableProtocol)
class Backend(Protocol):
    """The connection to the chosen backend host."""

    def __init__(self, front: Frontend, host: Any):
        self.front = front
        self.host = host

    def connectionMade(self):
        front = self.front
        if front.phase != CONNECTING or front.host is not self.host:
            self.transport.loseConnection()
            return
        front.backendConnected(self)

    def dataReceived(self, data):
        front = self.front
        front.ls = front.wheel.tick
        self.host.bytes_out += len(data)
        fastWrite(front.transport, data)

    def readConnectionLost(self):
        """The backend finished sending: shut down the client's receiving side after the data."""
        front = self.front
        if front.peer is not self or front.phase != CONNECTED:
            self.transport.loseConnection()
            return
        front.eof |= 2
        if front.eof == 3:
            front.finish()
        else:
            _shutdownWrite(front.transport)

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        front = self.front
        current = front.peer is self
        if current and (front.phase == CONNECTED or front.phase == CLOSING):
            front.phase = CLOSING
            closeNow(front.transport)
        front.service.backendClosed(front, self.host)
        self.front = None  # no cycle with the client (see Frontend.connectionLost)

    # producer for the client transport: pause/resume reading from the backend
    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class BackendFactory(ClientFactory):
    """One connect attempt: builds the L{Backend} or reports the failure to the service."""

    noisy = False

    def __init__(self, front: Frontend, host: Any):
        self.front = front
        self.host = host

    def buildProtocol(self, addr):
        return Backend(self.front, self.host)

    def clientConnectionFailed(self, connector, reason):
        self.front.service.connectFailed(self.front, self.host, reason)

    def clientConnectionLost(self, connector, reason):
        pass


class FrontendFactory(Factory):
    """The factory a listening port (from an endpoint, or adopted from an fd) accepts with."""

    noisy = False
    #: a Frontend does not read the address it is built for (L{fastpath.acceptBatch} passes none)
    addressFree = True

    def __init__(self, service: Any, wheel: Any):
        self.service = service
        self.wheel = wheel

    def buildProtocol(self, addr):
        return Frontend(self.service, self.wheel)

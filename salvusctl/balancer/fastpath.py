"""
The lean per-connection path of the balancer: accept, pick a backend, splice bytes.

Why a separate module: a plain ``twisted.protocols.portforward`` proxy spends
about 400 us of CPU on every new connection (an endpoint, Deferreds, a
``DelayedCall`` for the connect timeout, logging factories) and doubles the
epoll work of every message (``transport.write`` only buffers and registers for
writability; the bytes leave on the next reactor turn).  Here:

- one plain factory per listener builds the client-side protocol; the
  client-side protocol is itself the connect factory for its backend leg, so a
  new connection allocates two protocols and two transports and nothing
  else; the backend socket is connected by a lean transport of our own
  (no Connector, Deferred or ``callLater(0)``, see L{_BackendTransport});
- the connect and idle timeouts live in one shared :class:`TimeoutWheel` per
  reactor, a single ``callLater`` for all connections instead of one each;
- bytes are sent straight to the peer socket when its write buffer is empty,
  falling back to the transport's buffered ``write`` (and its producer
  back-pressure) only for the part the kernel did not take;
- reads are larger than Twisted's 64 KiB default for bulk transfers.

The backend choice and all bookkeeping stay outside, behind :class:`IPicker`
and :class:`ITarget`, so the scheduling model can evolve without touching this
path.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python import failure
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "IPicker",
    "ITarget",
    "TimeoutWheel",
    "ProxyFactory",
    "StaticTarget",
    "RoundRobinPicker",
]

_log = Logger()

_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class ITarget(Interface):
    """One backend as the fast path sees it: where to connect and whom to tell."""

    address = Attribute("The backend's IP address (str).")
    port = Attribute("The backend's TCP port (int).")

    def opened() -> None:
        """A connection to this backend is established."""

    def closed(bytesIn: int, bytesOut: int) -> None:
        """A proxied connection ended; bytes client->backend and backend->client."""

    def failed(reason: str) -> None:
        """A connect attempt failed (refused, unreachable or timed out)."""


class IPicker(Interface):
    """Chooses a backend for a new client connection."""

    def pick(clientHost: str, exclude: tuple) -> ITarget | None:
        """Return a target not in C{exclude}, or None when no host can take it."""


@implementer(ITarget)
class StaticTarget:
    """A fixed backend with plain counters; used by the standalone process and tests."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.active = 0
        self.total = 0
        self.failures = 0
        self.bytesIn = 0
        self.bytesOut = 0

    def opened(self) -> None:
        self.active += 1
        self.total += 1

    def closed(self, bytesIn: int, bytesOut: int) -> None:
        self.active -= 1
        self.bytesIn += bytesIn
        self.bytesOut += bytesOut

    def failed(self, reason: str) -> None:
        self.failures += 1

    def counters(self) -> dict[str, int]:
        """The counters as plain data, for hand-over and dumps."""
        return {
            "total": self.total,
            "failures": self.failures,
            "bytes_in": self.bytesIn,
            "bytes_out": self.bytesOut,
        }


@implementer(IPicker)
class RoundRobinPicker:
    """Round robin over a fixed list; enough for the standalone process and benchmarks."""

    def __init__(self, targets: list[StaticTarget]) -> None:
        if not targets:
            raise ValueError("RoundRobinPicker needs at least one target")
        self.targets = targets
        self._next = 0

    def pick(self, clientHost: str, exclude: tuple) -> ITarget | None:
        n = len(self.targets)
        for _ in range(n):
            target = self.targets[self._next % n]
            self._next += 1
            if target not in exclude:
                return target
        return None


class TimeoutWheel:
    """
    Coarse timers shared by every connection of a reactor.

    A connection registers itself with a delay; every C{resolution} seconds the
    wheel calls C{expire(now)} on the items whose slot has come.  Items do their
    own bookkeeping (an item that was active since being scheduled re-schedules
    itself), so scheduling is a dict lookup and a list append, and nothing is
    ever cancelled: a finished connection simply ignores its expiry.
    """

    def __init__(self, clock: IReactorTime, resolution: float = 0.5) -> None:
        if resolution <= 0:
            raise ValueError("TimeoutWheel resolution must be > 0, got %r" % (resolution,))
        self.clock = clock
        self.resolution = resolution
        self._slots: dict[int, list[Any]] = {}
        self._call = None

    def schedule(self, item: Any, delay: float) -> None:
        """Call C{item.expire(now)} about C{delay} seconds from now (never earlier)."""
        slot = int((self.clock.seconds() + delay) / self.resolution) + 1
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [item]
        else:
            bucket.append(item)
        if self._call is None:
            self._call = self.clock.callLater(self.resolution, self._tick)

    def __len__(self) -> int:
        return sum(len(b) for b in self._slots.values())

    def _tick(self) -> None:
        self._call = None
        now = self.clock.seconds()
        current = int(now / self.resolution)
        due = [s for s in self._slots if s <= current]
        due.sort()
        for slot in due:
            for item in self._slots.pop(slot):
                try:
                    item.expire(now)
                except Exception:
                    _log.failure("timeout handler failed for {item!r}", item=item)
        if self._slots and self._call is None:
            self._call = self.clock.callLater(self.resolution, self._tick)


def _fastWrite(transport: Any, data: bytes) -> None:
    """
    Send C{data} now when the transport has nothing queued, else queue it.

    Twisted's C{write} always queues and waits one reactor turn for
    writability; for a proxy that is an extra epoll modification and loop
    iteration per message in each direction.
    """
    if (
        transport.__class__ in _PLAIN
        and not transport._tempDataLen
        and not transport.dataBuffer
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
    ):
        try:
            sent = transport.socket.send(data)
        except OSError as e:
            if e.errno not in _EAGAIN:
                # Let the transport notice the error on its own write path.
                transport.write(data)
                return
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


_PLAIN: tuple = (tcp.Server, tcp.Client)
_DONE = failure.Failure(main.CONNECTION_DONE)


def _closeNow(reactor: Any, transport: Any) -> None:
    """
    Close a transport that has nothing left to send at once, else gracefully.

    C{loseConnection} registers for writability and closes on the next reactor
    turn even when nothing is buffered: two epoll changes and a loop iteration
    per connection end, for nothing.
    """
    if (
        transport.__class__ in _PLAIN
        and not transport._tempDataLen
        and not transport.dataBuffer
        and transport.connected
        and not transport.disconnected
        and not transport.disconnecting
    ):
        reactor.removeReader(transport)
        reactor.removeWriter(transport)
        transport.connectionLost(_DONE)
    else:
        transport.loseConnection()


class _BackendProtocol(Protocol):
    """The backend leg: hands everything to its client-side partner."""

    def __init__(self, front: ClientProtocol) -> None:
        self.front = front

    def connectionMade(self) -> None:
        self.front.backendConnected(self)

    def dataReceived(self, data: bytes) -> None:
        front = self.front
        front.bytesOut += len(data)
        front.active = True
        _fastWrite(front.transport, data)

    def connectionLost(self, reason: Any = None) -> None:
        self.front.backendLost()

    # the producer for the client transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _BackendTransport(tcp.Connection):
    """
    The backend socket, connected without a Connector, Deferred or DelayedCall.

    C{connect()} on a non-blocking socket answers EINPROGRESS; on a local or
    fast network the handshake has often completed by the time a second
    C{connect()} is made, which then answers 0 (connected) or the error at
    once, sparing the epoll round trip.  Otherwise we wait for writability as
    usual.  Failures and the connect timeout go to the client leg, which
    retries elsewhere.
    """

    _shouldShutdown = False
    logstr = "balancer-backend"
    connected = 0

    def __init__(self, reactor: Any, front: ClientProtocol, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        tcp.Connection.__init__(self, socket.socket(family, socket.SOCK_STREAM), None, reactor)
        self.front = front
        self.realAddress = (address, port)

    def start(self) -> None:
        skt = self.socket
        err = skt.connect_ex(self.realAddress)
        if err in _INPROGRESS:
            err = skt.connect_ex(self.realAddress)
        if err == 0 or err == errno.EISCONN:
            self._connected()
        elif err in _INPROGRESS:
            self.startWriting()
        else:
            self._failed(os.strerror(err))

    def doWrite(self) -> Any:
        if self.connected:
            return tcp.Connection.doWrite(self)
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.stopWriting()
        if err:
            self._failed(os.strerror(err))
        else:
            self._connected()
        return None

    def _connected(self) -> None:
        self.connected = 1
        self.protocol = proto = _BackendProtocol(self.front)
        self.startReading()
        proto.makeConnection(self)

    def _failed(self, reason: str) -> None:
        self.socket.close()
        self.disconnected = True
        self.front.backendFailed(reason)

    def stopConnecting(self, reason: str) -> None:
        """Give up a connect still in progress (timeout, or the client left)."""
        if self.connected or self.disconnected:
            return
        self.stopWriting()
        self._failed(reason)

    def getPeer(self) -> Any:
        return _address(self.socket.family, self.realAddress)

    def getHost(self) -> Any:
        return _address(self.socket.family, self.socket.getsockname())


def _address(family: int, addr: tuple) -> Any:
    if family == socket.AF_INET6:
        return IPv6Address("TCP", *addr[:2])
    return IPv4Address("TCP", *addr)


_INPROGRESS = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)
_PLAIN = _PLAIN + (_BackendTransport,)


class ClientProtocol(Protocol):
    """
    The client leg of one proxied connection, and the factory of its backend leg.

    Reading from the client is paused until the backend connects; then each
    transport becomes the other's streaming producer, so a slow side throttles
    the fast one through TCP instead of growing a buffer here.
    """

    backend: _BackendProtocol | None = None
    connector: Any = None
    target: ITarget | None = None
    done = False
    connecting = False
    active = False
    bytesIn = 0
    bytesOut = 0
    tried: tuple = ()
    pending: list[bytes] | None = None
    pendingSize = 0

    def __init__(self, factory: ProxyFactory) -> None:
        self.factory = factory

    # -- the client leg

    def connectionMade(self) -> None:
        # close() alone sends the FIN; shutdown() first is one more syscall.
        self.transport._shouldShutdown = False
        factory = self.factory
        factory.open += 1
        factory.connections.add(self)
        self._connectNext()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        self.active = True
        backend = self.backend
        if backend is not None:
            _fastWrite(backend.transport, data)
            return
        # Bytes that arrive before the backend is connected (an HTTP request
        # right after the handshake) wait here; reading pauses only if they
        # pile up, which saves two epoll changes on every new connection.
        pending = self.pending
        if pending is None:
            self.pending = pending = []
        pending.append(data)
        self.pendingSize += len(data)
        if self.pendingSize >= self.factory.readSize:
            self.transport.stopReading()

    def connectionLost(self, reason: Any = None) -> None:
        factory = self.factory
        factory.open -= 1
        factory.connections.discard(self)
        self.done = True
        backend = self.backend
        if backend is not None:
            _closeNow(factory.reactor, backend.transport)
        elif self.connector is not None:
            self.connector.stopConnecting("client left")
        self._finish()

    # -- the backend leg

    def _connectNext(self) -> None:
        factory = self.factory
        target = factory.picker.pick(self.transport.client[0], self.tried)
        if target is None:
            self.transport.loseConnection()
            return
        self.target = target
        self.tried = self.tried + (target,)
        self.connecting = True
        self.connector = conn = _BackendTransport(factory.reactor, self, target.address, target.port)
        conn.start()
        if self.connecting and conn is self.connector:
            # Still in progress after the optimistic second connect().
            factory.wheel.schedule(self, factory.connectTimeout)

    def backendFailed(self, reason: str) -> None:
        """The connect attempt failed: retry on another host, or close the client."""
        self.connector = None
        self.connecting = False
        target = self.target
        self.target = None
        if self.done:
            return
        if target is not None:
            target.failed(reason)
        if len(self.tried) <= self.factory.retries:
            self.factory.retried += 1
            self._connectNext()
        else:
            self.transport.loseConnection()

    def backendConnected(self, backend: _BackendProtocol) -> None:
        self.connecting = False
        self.connector = None
        if self.done:
            backend.transport.loseConnection()
            return
        self.backend = backend
        self.target.opened()
        front = self.transport
        back = backend.transport
        size = self.factory.readSize
        if size:
            front.bufferSize = size
            back.bufferSize = size
        # Each leg's protocol is the producer for the other leg's transport:
        # a full buffer there pauses reading here.  (Registering the transports
        # themselves would make a closing leg call loseConnection on the other,
        # the slow way, before we close it at once.)
        front.registerProducer(backend, True)
        back.registerProducer(self, True)
        pending = self.pending
        if pending is not None:
            self.pending = None
            _fastWrite(back, b"".join(pending))
            if self.pendingSize >= self.factory.readSize:
                front.startReading()
        if self.factory.idleTimeout:
            self.factory.wheel.schedule(self, self.factory.idleTimeout)

    def backendLost(self) -> None:
        self.backend = None
        if not self.done:
            _closeNow(self.factory.reactor, self.transport)
        self._finish()

    def _finish(self) -> None:
        target = self.target
        if target is not None and self.backend is None and self.done and not self.connecting:
            self.target = None
            target.closed(self.bytesIn, self.bytesOut)

    # -- the producer for the backend transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    # -- timeouts from the wheel

    def expire(self, now: float) -> None:
        if self.done:
            return
        if self.connecting:
            connector = self.connector
            if connector is not None:
                connector.stopConnecting("connect timeout")
            return
        if self.backend is None:
            return
        if self.active:
            self.active = False
            self.factory.wheel.schedule(self, self.factory.idleTimeout)
            return
        self.factory.timedOut += 1
        self.transport.abortConnection()
        self.backend.transport.abortConnection()


class ProxyFactory(ServerFactory):
    """
    Builds the client leg for each accepted connection of one balanced service.

    @ivar open: connections currently open on the client side.
    @ivar retried: connect attempts made again on another backend.
    @ivar timedOut: connections closed by the idle timeout.
    """

    noisy = False

    def __init__(
        self,
        reactor: IReactorTCP,
        picker: IPicker,
        wheel: TimeoutWheel | None = None,
        connectTimeout: float = 5.0,
        idleTimeout: float = 0.0,
        retries: int = 2,
        readSize: int = 256 * 1024,
    ) -> None:
        if connectTimeout <= 0:
            raise ValueError("connectTimeout must be > 0, got %r" % (connectTimeout,))
        if idleTimeout < 0:
            raise ValueError("idleTimeout must be >= 0 (0 disables), got %r" % (idleTimeout,))
        if retries < 0:
            raise ValueError("retries must be >= 0, got %r" % (retries,))
        self.reactor = reactor
        self.picker = picker
        self.wheel = wheel if wheel is not None else TimeoutWheel(reactor)
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.retries = retries
        self.readSize = readSize
        self.open = 0
        self.retried = 0
        self.timedOut = 0
        self.connections: set[ClientProtocol] = set()

    def closeAll(self, abort: bool = False) -> None:
        """Close every open connection: gracefully (flush, then FIN) or by abort."""
        for conn in list(self.connections):
            if abort:
                conn.transport.abortConnection()
            else:
                conn.transport.loseConnection()

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        return ClientProtocol(self)

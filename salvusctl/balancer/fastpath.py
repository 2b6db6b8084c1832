"""
Cheaper primitives for the per-connection path of L{salvusctl.balancer.proxy}.

Profiling the proxy (py-spy, wrk through one process, see
docs/balancer-upgrade.md "Speed") showed three costs that Twisted's general
machinery adds to every connection or message, none of which a TCP proxy
needs:

- C{transport.write} never sends: it queues, registers for writability and
  sends on the next reactor turn, so each message costs two extra epoll
  changes and a loop iteration.  L{fastWrite} sends at once when nothing is
  queued and queues only what the kernel did not take (producer back-pressure
  works as before).
- C{transport.loseConnection} does the same dance at the end of every
  connection, even with nothing to flush.  L{closeNow} closes at once when
  nothing is queued.
- C{reactor.connectTCP} builds a Connector and a Client, defers the connect to
  the next turn with C{callLater(0)}, goes through a Deferred for an address
  that is already numeric, and on completion calls C{connect()} again,
  C{getpeername()} and four epoll changes.  L{connectTCP} connects at once and,
  when the handshake is already done (loopback, a LAN), a second C{connect()}
  says so without an epoll round trip.

- Accepting goes through Twisted's C{Port.doRead}: a log-buffering context, a
  generator, a Python-level C{socket} wrapper (two enum conversions for its
  family and type), an address object and a C{Server} that formats its log
  prefix and C{repr} strings.  L{acceptBatch} takes the same batch of clients
  with C{_accept()}, and L{LeanServer} makes those strings only if asked.
  Sockets here are the C{_socket.socket} type the standard wrapper derives
  from: the transports use only its C methods.
- C{closeNow} on a lean transport does what C{connectionLost} does, once:
  Twisted's removes the descriptor from the reactor three times over.

Each helper falls back to the stock behaviour for anything it does not know
(TLS transports, reactors that are not Twisted's POSIX ones such as the
memory reactors of unit tests), so the proxy's logic is the same either way.
"""

from __future__ import annotations

import _socket
import errno
import functools
import os
import socket
from typing import Any

from twisted.internet import abstract, error, main, tcp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import ILoggingContext
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import failure

from salvusctl import _twistedcompat

__all__ = [
    "READ_SIZE",
    "fastWrite",
    "closeNow",
    "shutdownWriteNow",
    "connectTCP",
    "isPlain",
    "LeanConnection",
    "LeanServer",
    "acceptBatch",
]

#: recv() size (and write-buffer pause threshold) of a proxied pair.  Twisted reads 64 KiB;
#: 256 KiB took about a third less CPU per 100 MB through the proxy here, 1 MiB no less.
READ_SIZE = 256 * 1024

_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_INPROGRESS = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)
_DONE = failure.Failure(main.CONNECTION_DONE)
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


class LeanConnection(tcp.Connection):
    """
    A backend TCP connection made without a Connector, Deferred or DelayedCall.

    It is also its own L{IConnector}-like handle: C{disconnect()} aborts a
    connect in progress (the factory hears C{clientConnectionFailed}, as with
    Twisted's connector) or closes an established connection.
    """

    _shouldShutdown = False  # close() alone sends the FIN
    logstr = "balancer-backend"
    connected = 0

    def __init__(self, reactor: Any, factory: Any, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # tcp.Connection.__init__, with a socket made non-blocking by socket() (no ioctl after)
        abstract.FileDescriptor.__init__(self, reactor)
        skt = _socket.socket(family, _STREAM_NONBLOCK)
        # a small message forwarded is sent now, not held for the previous one's ACK (Nagle)
        skt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = skt
        self.fileno = skt.fileno
        self.protocol = None
        self.factory = factory
        self.realAddress = (host, port)
        self.family = family  # a plain int: socket.family builds an enum on every read

    def start(self) -> None:
        skt = self.socket
        err = skt.connect_ex(self.realAddress)
        if err in _INPROGRESS:
            # On loopback or a fast LAN the handshake is often complete already.
            err = skt.connect_ex(self.realAddress)
        if err == 0 or err == errno.EISCONN:
            self._connected()
        elif err in _INPROGRESS:
            self.startWriting()
        else:
            # Report on the next turn, as Twisted's connector does: the caller
            # has not finished its own bookkeeping for this attempt yet.
            self._close()
            self.reactor.callLater(0, self._report, error.getConnectError((err, os.strerror(err))))

    def doWrite(self) -> Any:
        if self.connected:
            return tcp.Connection.doWrite(self)
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.stopWriting()
        if err:
            self._close()
            self._report(error.getConnectError((err, os.strerror(err))))
        else:
            self._connected()
        return None

    def _connected(self) -> None:
        proto = self.factory.buildProtocol(self.getPeer())
        self.connected = 1
        if proto is None:
            self.protocol = main_protocol = _Discard()
            main_protocol.makeConnection(self)
            self.loseConnection()
            return
        self.protocol = proto
        self.startReading()
        proto.makeConnection(self)

    def connectionLost(self, reason: Any) -> None:
        """
        The reactor closed this descriptor.  Before the connect completed that is a failed
        connect, not a lost connection: there is no protocol yet.

        On a real network a refused connect arrives as EPOLLERR/EPOLLHUP while the socket
        waits for writability, and the reactor takes its disconnect path instead of calling
        L{doWrite}.  Twisted's own C{BaseClient} turns that into C{clientConnectionFailed}
        (C{failIfNotConnected}); so must this, or the client waits forever for a backend
        that already said no.
        """
        if self.connected:
            tcp.Connection.connectionLost(self, reason)
            return
        if self.disconnected:
            return  # already reported
        try:
            err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            err = 0
        self.stopReading()
        self.stopWriting()
        self._close()
        if err:
            why: Exception = error.getConnectError((err, os.strerror(err)))
        else:
            why = error.ConnectError(string=reason.getErrorMessage())
        self._report(why)

    def _close(self) -> None:
        self.disconnected = True
        self.socket.close()

    def _report(self, reason: Exception) -> None:
        self.factory.clientConnectionFailed(self, failure.Failure(reason))

    def disconnect(self) -> None:
        """Abort the connect in progress, or close the connection."""
        if self.connected:
            self.loseConnection()
        elif not self.disconnected:
            self.stopWriting()
            self._close()
            self._report(error.UserError(string="connection was disconnected"))

    def stopConnecting(self) -> None:
        self.disconnect()

    def getDestination(self) -> Any:
        return _address(self.family, self.realAddress)

    def getPeer(self) -> Any:
        return _address(self.family, self.realAddress)

    def getHost(self) -> Any:
        return _address(self.family, self.socket.getsockname())


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        pass


class LeanServer(tcp.Server):
    """
    An accepted client transport: C{tcp.Server} without the two strings it
    formats for every connection (its log prefix and C{repr}), made on demand.
    """

    def __init__(self, sock: Any, protocol: Any, client: tuple, server: Any, sessionno: int,
                 reactor: Any) -> None:
        if len(client) != 2:
            tcp.Server.__init__(self, sock, protocol, client, server, sessionno, reactor)  # IPv6
            return
        tcp.Connection.__init__(self, sock, protocol, reactor)
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        reactor.addReader(self)
        self.connected = 1

    def _prefix(self) -> str:
        protocol = getattr(self, "protocol", None)
        if ILoggingContext.providedBy(protocol):
            return protocol.logPrefix()
        return protocol.__class__.__name__ if protocol is not None else "-"

    @property
    def logstr(self) -> str:  # type: ignore[override]
        return f"{self._prefix()},{self.sessionno},{self.hostname}"

    @logstr.setter
    def logstr(self, value: str) -> None:
        pass  # always derived

    @property
    def repstr(self) -> str:  # type: ignore[override]
        protocol = getattr(self, "protocol", None)
        try:
            port = self.server.getHost().port
        except Exception:
            port = None
        return f"<{protocol.__class__.__name__} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        pass


def acceptBatch(port: Any, limit: int) -> int | None:
    """
    Accept up to C{limit} clients on a listening C{tcp.Port} and start them, as
    C{Port.doRead} does; return how many, or None when an accept failed with
    anything but "no more clients" (the caller then runs the stock loop, which
    knows what to do about each such error: EMFILE, ECONNABORTED...).

    A factory whose C{addressFree} is true is given no address object to build
    its protocol (it would not read it).
    """
    listener = port.socket
    accept = listener._accept  # the standard library's: (fd, address), no wrapper made
    family, kind = port.addressFamily, port.socketType
    factory = port.factory
    build = factory.buildProtocol
    addressFree = getattr(factory, "addressFree", False)
    transport = port.transport
    reactor = port.reactor
    accepted = 0
    while accepted < limit:
        try:
            fd, addr = accept()
        except BlockingIOError:
            return accepted
        except InterruptedError:
            continue
        except OSError:
            return None
        accepted += 1
        skt = _socket.socket(family, kind, 0, fd)
        if len(addr) == 4:
            # IPv6: the scope ID in the host, as Twisted does
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0],) + tuple(addr[1:])
        protocol = build(None if addressFree else _address(family, addr))
        if protocol is None:
            skt.close()
            continue
        s = port.sessionno
        port.sessionno = s + 1
        protocol.makeConnection(transport(skt, protocol, addr, port, s, reactor))
    return accepted


def _address(family: int, addr: tuple) -> Any:
    if family == socket.AF_INET6:
        return IPv6Address("TCP", *addr[:2])
    return IPv4Address("TCP", *addr)


_PLAIN = (tcp.Server, tcp.Client, LeanConnection, LeanServer)
_LEAN = (LeanConnection, LeanServer)


def isPlain(transport: Any) -> bool:
    """A plain TCP transport of the POSIX reactors (not TLS, not a test double)."""
    return transport.__class__ in _PLAIN


@functools.lru_cache(maxsize=4096)
def _numeric(host: str) -> bool:
    return isIPAddress(host) or isIPv6Address(host)


def connectTCP(reactor: Any, host: str, port: int, factory: Any) -> Any:
    """
    Connect to C{host:port} (a numeric address) for C{factory}; return a handle
    with C{disconnect()}.  Timeouts are the caller's (the timeout wheel).

    Success may be reported before this returns; failure never is.
    """
    if not isinstance(reactor, PosixReactorBase) or not _numeric(host):
        # A name would make connect() resolve it, blocking; Twisted resolves it first.
        return reactor.connectTCP(host, port, factory, timeout=None)
    conn = LeanConnection(reactor, factory, host, port)
    conn.start()
    return conn


def fastWrite(transport: Any, data: bytes) -> None:
    """Send C{data} now when the transport has nothing queued; queue the rest."""
    if transport.__class__ in _PLAIN and _twistedcompat.canSendNow(transport):
        try:
            sent = transport.socket.send(data)
        except OSError as e:
            if e.errno not in _EAGAIN:
                # The transport notices the error on its own write path.
                transport.write(data)
                return
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def closeNow(transport: Any) -> None:
    """Close at once when nothing is queued (a FIN right now), else flush first."""
    if (
        transport.__class__ in _PLAIN
        and not _twistedcompat.hasQueuedWrites(transport)
        and transport.connected
        and not transport.disconnected
        and not transport.disconnecting
    ):
        reactor = transport.reactor
        if transport.__class__ in _LEAN and isinstance(reactor, EPollReactor):
            _leanClose(transport, reactor)
            return
        _twistedcompat.closeWithoutShutdown(transport)  # close() alone sends the FIN
        reactor.removeReader(transport)
        reactor.removeWriter(transport)
        transport.connectionLost(_DONE)
    else:
        transport.loseConnection()


def _leanClose(transport: Any, reactor: EPollReactor) -> None:
    """C{tcp.Connection.connectionLost(CONNECTION_DONE)} without its repeated removals."""
    skt = transport.socket
    _twistedcompat.forgetDescriptor(reactor, skt.fileno())
    transport.disconnected = 1
    transport.connected = 0
    producer = transport.producer
    if producer is not None:
        transport.producer = None
        producer.stopProducing()
    skt.close()  # close() alone sends the FIN
    protocol = transport.protocol
    del transport.protocol
    del transport.socket
    del transport.fileno
    protocol.connectionLost(_DONE)


def shutdownWriteNow(transport: Any) -> None:
    """
    Half-close (FIN, keep reading) at once when nothing is queued, else after the flush.

    C{loseWriteConnection} always waits for a writability event first, even
    with an empty buffer.  Here the shutdown happens now and the protocol hears
    C{writeConnectionLost} as it would from Twisted.
    """
    if transport.__class__ in _PLAIN and _twistedcompat.canSendNow(transport):
        _twistedcompat.halfCloseNow(transport)
    else:
        transport.loseWriteConnection()

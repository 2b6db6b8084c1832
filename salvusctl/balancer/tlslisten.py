"""TLS listeners of the balancer: what C{ssl:} endpoints need beyond Twisted's defaults.

Three things, each seen failing with Twisted 26.10 and pyOpenSSL 26 (docs/balancer.md, TLS):

* **ALPN.** An L4 balancer terminating TLS does not choose an application protocol for its
  backends, so it ignores ALPN, as HAProxy does on a C{bind} without C{alpn}: the handshake goes on
  and no protocol is selected.  Twisted installs an ALPN callback on every server context even
  when no protocol is acceptable, and that callback answers "no overlap" with an empty protocol
  name, which OpenSSL turns into a fatal C{internal_error} alert: every client that offers ALPN
  (curl, browsers) was refused.  L{ListenerContext} replaces that callback.
* **Half-close.** Twisted's TLS protocol is not half-closeable: a client's C{close_notify} (or TCP
  FIN) after its request closed the whole connection before the answer came back.
  L{TLSServerProtocol} reports either as C{readConnectionLost} to a half-closeable protocol and
  keeps sending until that protocol closes.
* **Clean close.** Twisted's TLS protocol forwards unknown attributes to the TCP transport, so the
  proxy's C{loseWriteConnection} half-closed the TCP socket under TLS; the client's
  C{close_notify} then closed the socket in the middle of Twisted's shutdown handling and raised
  C{AttributeError} (thousands of tracebacks under C{Connection: close} load).
  L{TLSServerProtocol.loseWriteConnection} sends C{close_notify} instead and keeps reading; a full
  close sends C{close_notify} and closes, without waiting for a peer that may never answer.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from OpenSSL.SSL import WantReadError, ZeroReturnError
from twisted.internet.interfaces import IHalfCloseableProtocol, IOpenSSLContextFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from salvusctl._twistedcompat import TLSMemoryBIOProtocol  # its private hooks: PRIVATE_HOOKS
from salvusctl.balancer.fastpath import fastWrite

__all__ = ["ListenerContext", "TLSServerProtocol", "TLSServerFactory", "noALPN"]


def noALPN(connection: Any, offered: list[bytes]) -> Any:
    """ALPN select callback: accept the handshake without selecting a protocol."""
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLContextFactory)
class ListenerContext:
    """An old-style context factory (C{getContext}) around another, with ALPN ignored.

    The wrapped factory builds (and usually caches) the C{SSL.Context}; this one fixes its ALPN
    callback once and hands out the same context afterwards.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._context: SSL.Context | None = None

    def getContext(self) -> SSL.Context:
        context = self.inner.getContext()
        if context is not self._context:
            context.set_alpn_select_callback(noALPN)
            self._context = context
        return context


@implementer(IHalfCloseableProtocol)
class TLSServerProtocol(TLSMemoryBIOProtocol):
    """The server side of a TLS connection that half-closes like a TCP one.

    @ivar _peerEOF: the client has finished sending (C{close_notify} or FIN).
    @ivar _halfClosing: we sent C{close_notify} and still read the client.
    """

    _peerEOF = False
    _halfClosing = False

    def _wrappedHalfCloses(self) -> bool:
        return IHalfCloseableProtocol.providedBy(self.wrappedProtocol)

    def _flushSendBIO(self) -> None:
        # Twisted's version, with the balancer's fastWrite: the TLS records go out now instead of
        # on the next reactor turn (two epoll changes fewer per answer), and nothing is sent once
        # the connection is gone.
        if self._tlsConnection is None:
            return
        try:
            data = self._tlsConnection.bio_read(2**15)
        except WantReadError:
            return
        fastWrite(self.transport, data)

    def _flushReceiveBIO(self) -> None:
        while not self._lostTLSConnection:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                if self.disconnecting or not self._wrappedHalfCloses():
                    # both sides are done (or the protocol cannot half-close): Twisted's path
                    self._shutdownTLS()
                    self._tlsShutdownFinished(None)
                    break
                # the client's close_notify with our side still open: a half-close
                if not self._peerEOF:
                    self._peerEOF = True
                    self.wrappedProtocol.readConnectionLost()
                break
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    self.wrappedProtocol.dataReceived(data)
        self._flushSendBIO()

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()
        if self.transport is not None and (self._peerEOF or not self._halfClosing):
            # Sent close_notify; a full close does not wait for the peer's (it may never come).
            self.transport.loseConnection()

    # -- IHalfCloseableProtocol, toward the TCP transport ---------------------------------------

    def readConnectionLost(self) -> None:
        """The TCP stream ended: a half-close if the protocol above takes one, else the end."""
        if self._peerEOF or self._lostTLSConnection:
            return
        if self._handshakeDone and self._wrappedHalfCloses() and not self.disconnecting:
            self._peerEOF = True
            self.wrappedProtocol.readConnectionLost()
            if self._halfClosing and self.transport is not None:
                self.transport.loseConnection()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    # -- the transport the protocol above sees ----------------------------------------------------

    def loseWriteConnection(self) -> None:
        """Send C{close_notify} after what is written; keep reading the client."""
        if self.disconnecting or not self.connected:
            return
        self._halfClosing = True
        self.loseConnection()

    def loseConnection(self) -> None:
        if self._halfClosing and self.disconnecting:
            # half-closed already, now closed for good (idle timeout, the peer ended)
            self._halfClosing = False
            if self.transport is not None:
                self.transport.loseConnection()
            return
        if self._producer is not None and self.connected:
            self.unregisterProducer()  # nothing more to produce; it would hold close_notify back
        super().loseConnection()


class TLSServerFactory(TLSMemoryBIOFactory):
    """C{TLSMemoryBIOFactory} (server side) building L{TLSServerProtocol}s."""

    protocol = TLSServerProtocol
    noisy = False

    def __init__(self, contextFactory: Any, wrappedFactory: Any, clock: Any = None) -> None:
        super().__init__(ListenerContext(contextFactory), False, wrappedFactory, clock)

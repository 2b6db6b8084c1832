"""Slow clients (slowloris): a deadline for each request head and a cap on connections per address.

Twisted's C{HTTPChannel} only times out a connection that sends nothing at all for its idle
timeout (twelve hours by default), and every byte resets it: a client that opens a connection,
finishes the TLS handshake and sends one header byte every few seconds holds a socket and a
channel forever, and a few thousand such clients exhaust the process's file descriptors.

Two bounds, both per listener's site:

  - L{GuardedChannel}: the whole request head (request line and headers, after the TLS handshake
    for C{ssl:}) must arrive within C{headTimeout} seconds of the connection opening or of the
    previous response finishing; otherwise the client gets C{408 Request Timeout} and the
    connection is closed (aborted if it does not go away).  The clock is the site's reactor, so a
    C{Clock} drives it in tests.  Once the head is in, the body and the response run under
    Twisted's own timeouts and the request size bound.
  - L{GuardedSite}: at most C{maxPerAddress} open connections from one IP address; a connection
    beyond it is aborted at once, before its TLS handshake.  The unix socket (owner-only, no
    address) has no cap.

A flood from one address therefore holds at most C{maxPerAddress} sockets, each for at most
C{headTimeout} seconds, and other addresses are served as usual.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

__all__ = ["GuardedChannel", "GuardedSite", "HEAD_TIMEOUT", "MAX_PER_ADDRESS"]

log = Logger()

HEAD_TIMEOUT = 10.0
MAX_PER_ADDRESS = 64

_TIMEOUT_BODY = b"the request head took too long to arrive\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class GuardedChannel(HTTPChannel):
    """An C{HTTPChannel} whose request heads must arrive within C{headTimeout} seconds."""

    headTimeout: float = HEAD_TIMEOUT
    peerKey: str | None = None
    _headCall: Any = None
    _headStarted = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._startHeadClock()

    def dataReceived(self, data: bytes) -> None:
        if self._headCall is not None:
            self._headStarted = True
        super().dataReceived(data)

    def _startHeadClock(self) -> None:
        self._stopHeadClock()
        self._headStarted = False
        if self.headTimeout:
            self._headCall = self.callLater(self.headTimeout, self._headTimedOut)

    def _stopHeadClock(self) -> None:
        if self._headCall is not None and self._headCall.active():
            self._headCall.cancel()
        self._headCall = None

    def allHeadersReceived(self) -> None:
        self._stopHeadClock()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # Before the parent's: it may parse a buffered next request at once, whose complete head
        # stops this clock again.
        if self.persistent and request is self.requests[0] and len(self.requests) == 1:
            self._startHeadClock()
        super().requestDone(request)

    def _headTimedOut(self) -> None:
        self._headCall = None
        site = getattr(self, "site", None)
        if site is not None and hasattr(site, "headTimeouts"):
            site.headTimeouts += 1
        if self._headStarted:
            # Part of a head arrived: say why.  An idle connection (nothing sent since it opened
            # or since the last response) is closed silently, as a keep-alive timeout: a client
            # sending its next request at that moment would read a 408 as that request's answer.
            self.transport.write(_TIMEOUT_RESPONSE)
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self._stopHeadClock()
        super().connectionLost(reason)
        site = getattr(self, "site", None)
        if site is not None and hasattr(site, "channelClosed"):
            site.channelClosed(self)


class _Refused(Protocol):
    """A connection over the per-address cap: closed at once, nothing read or written."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()


def peerKey(addr: Any) -> str | None:
    """The IP address a connection comes from; None for the unix socket (no cap there)."""
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return addr.host
    return None


class GuardedSite(Site):
    """A C{Site} of L{GuardedChannel}s with at most C{maxPerAddress} connections per IP address.

    @ivar open: open connections per address (only addresses with one or more).
    @ivar refused: connections aborted because their address was at the cap.
    @ivar headTimeouts: connections closed because their request head was late.
    """

    protocol = GuardedChannel

    def __init__(self, resource: Any, *, headTimeout: float = HEAD_TIMEOUT,
                 maxPerAddress: int = MAX_PER_ADDRESS, **kw: Any):
        super().__init__(resource, **kw)
        self.headTimeout = headTimeout
        self.maxPerAddress = maxPerAddress
        self.open: dict[str, int] = {}
        self.refused = 0
        self.headTimeouts = 0
        self._warned: set[str] = set()

    def buildProtocol(self, addr: Any) -> Any:
        key = peerKey(addr)
        if key is not None and self.maxPerAddress and self.open.get(key, 0) >= self.maxPerAddress:
            self.refused += 1
            if key not in self._warned:  # once per address while it stays at the cap
                self._warned.add(key)
                log.warn("admin: {address} has {n} connections open, the cap: refusing more",
                         address=key, n=self.maxPerAddress)
            return _Refused()
        channel = super().buildProtocol(addr)
        channel.headTimeout = self.headTimeout
        channel.peerKey = key
        if key is not None:
            self.open[key] = self.open.get(key, 0) + 1
        return channel

    def channelClosed(self, channel: GuardedChannel) -> None:
        key, channel.peerKey = channel.peerKey, None
        if key is None or key not in self.open:
            return
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]
            self._warned.discard(key)

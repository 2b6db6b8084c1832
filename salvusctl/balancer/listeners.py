"""The listening sockets of a balanced service: bound by the balancer itself, so they can be handed over.

A host's balancer hands its listening sockets to a successor host (docs/balancer-upgrade.md) the
way the standalone process does, which needs two things of every socket it may pass on:

* the balancer holds the socket object itself (a Twisted port made from an endpoint string
  keeps its socket private), and
* the port is an *adopted* one: Twisted does not C{shutdown()} an adopted listening socket when
  it stops listening; for a socket it bound itself it would, and C{shutdown()} acts on the shared
  socket — it would stop the successor too.

So C{tcp:}, C{tcp6:} and C{ssl:} listeners are parsed by Twisted's own endpoint parser (port,
interface, backlog, and for C{ssl:} the key and certificate), bound with L{bindTCP} — or taken
from a predecessor — and adopted with C{reactor.adoptStreamPort}; an C{ssl:} socket is served
through the balancer's TLS factory (L{salvusctl.balancer.tlslisten}).  Any other endpoint kind
(C{unix:} …), and every listener on a reactor that is not a POSIX one (the memory reactors of
unit tests), listens through its endpoint as before and is not handed over.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.posixbase import PosixReactorBase

from salvusctl._twistedcompat import serverEndpointAddress, serverEndpointContextFactory
from salvusctl.balancer.fdbudget import adoptGuarded
from salvusctl.balancer.handover import bindTCP
from salvusctl.balancer.tlslisten import TLSServerFactory

__all__ = ["Listener", "listenerName", "listen"]


@dataclass
class Listener:
    """One listening socket of a service.

    @ivar name: the hand-over name: the service's name, then C{name#1}, C{name#2} ….
    @ivar sock: the socket the balancer bound or inherited (None for endpoints it does not own).
    @ivar port: the reactor's listening port on it.
    """

    name: str
    description: str
    sock: socket.socket | None
    port: Any

    def close(self) -> defer.Deferred:
        """Stop accepting here; the socket stays open wherever else it is held."""
        d = defer.maybeDeferred(self.port.stopListening)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return d


def listenerName(service: str, index: int) -> str:
    return service if index == 0 else f"{service}#{index}"


def listen(reactor: Any, name: str, description: str, factory: Any,
           inherited: socket.socket | None = None) -> defer.Deferred:
    """Listen on C{description} with C{factory}; fires with a L{Listener}.

    C{inherited} is a socket taken from a predecessor for this listener's name: it is adopted
    as it is (its address is the one the predecessor bound).
    """
    endpoint = serverFromString(reactor, description)
    wrap = None
    if not isinstance(reactor, PosixReactorBase):
        # a memory reactor of unit tests (or a non-POSIX one): listen as Twisted does, no hand-over
        if inherited is not None:
            inherited.close()
        d = endpoint.listen(factory)
        return d.addCallback(lambda port: Listener(name, description, None, port))
    if isinstance(endpoint, SSL4ServerEndpoint):
        context = serverEndpointContextFactory(endpoint)

        def wrap(f):
            return TLSServerFactory(context, f)
    elif not isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        if inherited is not None:
            inherited.close()
        d = endpoint.listen(factory)
        return d.addCallback(lambda port: Listener(name, description, None, port))
    sock = inherited
    address = serverEndpointAddress(endpoint)
    backlog = address.backlog
    if sock is None:
        interface = address.interface or ("::" if isinstance(endpoint, TCP6ServerEndpoint) else "0.0.0.0")
        try:
            sock = bindTCP(interface, address.port, address.backlog)
        except OSError as e:
            return defer.fail(CannotListenError(interface, address.port, e))  # as Twisted's listen
    try:
        # a port that caps each accept batch at the descriptor budget (L{salvusctl.balancer.fdbudget})
        port = adoptGuarded(reactor, sock.fileno(), sock.family, wrap(factory) if wrap else factory)
    except Exception:
        sock.close()
        return defer.fail()
    port.backlog = backlog  # what listen() was given (an adopted port does not know it)
    return defer.succeed(Listener(name, description, sock, port))

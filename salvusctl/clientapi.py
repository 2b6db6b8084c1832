"""For applications run by Salvus: register the clients connected to this instance and receive the
messages the cluster sends them (docs/cluster.md, "Messages to connected clients").

The supervisor names the socket in C{$SALVUS_CLIENTS_SOCKET}.  Two helpers over its JSON lines:

Plain sockets (blocking; threads or a select loop)::

    from salvusctl.clientapi import ClientsSocket
    hub = ClientsSocket()                # $SALVUS_CLIENTS_SOCKET
    serial = hub.connect("tab-41")
    client, body, message_id = hub.receive(timeout=30)
    hub.disconnect("tab-41")

Twisted::

    from salvusctl.clientapi import clientsService
    service = clientsService(reactor, lambda client, body, id: ws[client].send(body))
    service.setServiceParent(application)
    service.hub.connect("tab-41")        # a Deferred of the serial

Both wait for the socket: the supervisor may start an instance before its host listens (the host
listens once the shared store answered).  The blocking helper retries its connect for
C{connect_timeout} seconds (10 by default) and then raises L{HubError}; the Twisted helper
reconnects with backoff (C{ClientService}, first retry after 50 ms) and registers again the
clients it held when the host restarts.  This module needs only the standard library unless the Twisted
helper is used.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["ClientsSocket", "ClientsProtocol", "clientsService", "HubError", "ENV", "socketAddress"]

ENV = "SALVUS_CLIENTS_SOCKET"


class HubError(Exception):
    """The hub refused a request (its reason is the text)."""


def socketAddress(address: str | None = None) -> str:
    """The address to connect to: C{@name} (abstract) becomes C{\\0name}; a path stays."""
    address = address or os.environ.get(ENV)
    if not address:
        raise HubError(f"${ENV} is not set: this process was not started by a Salvus host with Cluster(...)")
    return "\0" + address[1:] if address.startswith("@") else address


#: Errors of a connect to a socket nobody listens on yet (abstract: refused; a path: missing).
_NOT_YET = (ConnectionRefusedError, FileNotFoundError)


def connectUnix(address: str, timeout: float, connect_timeout: float,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> socket.socket:
    """A connected Unix socket to C{address}, retried while nobody listens there yet (5 ms, then
    doubling to 200 ms) for at most C{connect_timeout} seconds, because an instance can start
    before its host's hub listens.  Other errors (permission) are raised at once.

    @raise HubError: nobody listened within C{connect_timeout} seconds."""
    deadline = clock() + connect_timeout
    delay = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except _NOT_YET as e:
            sock.close()
            left = deadline - clock()
            if left <= 0:
                shown = "@" + address[1:] if address.startswith("\0") else address
                raise HubError(f"nobody listens on the clients socket {shown} after {connect_timeout}s"
                               f" ({e.strerror or e}): is this host's Cluster(...) up?") from e
            sleep(min(delay, left))
            delay = min(delay * 2, 0.2)
        except BaseException:
            sock.close()
            raise


class ClientsSocket:
    """A blocking connection to the hub.  Messages that arrive while waiting for a reply are kept
    for L{receive}, in order.

    @param timeout: how long a request waits for the hub's answer.
    @param connect_timeout: how long to wait for the hub to listen (see L{connectUnix})."""

    def __init__(self, address: str | None = None, timeout: float = 10.0, connect_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.sock = connectUnix(socketAddress(address), timeout, connect_timeout, clock, sleep)
        self.timeout = timeout
        self._buffer = b""
        self._messages: deque = deque()
        self._ref = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _line(self, timeout: float | None) -> dict[str, Any] | None:
        while b"\n" not in self._buffer:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("the hub closed the clients socket")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _request(self, op: str, client: str) -> dict[str, Any]:
        self._ref += 1
        ref = self._ref
        self.sock.sendall(json.dumps({"op": op, "client": client, "ref": ref}).encode() + b"\n")
        while True:
            reply = self._line(self.timeout)
            if reply is None:
                raise TimeoutError(f"no answer from the hub to {op} {client!r} in {self.timeout}s")
            if reply.get("op") == "message":
                self._messages.append(reply)
            elif reply.get("ref") == ref or reply.get("ref") is None:
                if reply.get("op") == "error":
                    raise HubError(reply.get("error", "refused"))
                return reply

    def connect(self, client: str) -> int:
        """Register C{client} as connected to this instance; returns the connection's serial."""
        return int(self._request("connect", client)["serial"])

    def disconnect(self, client: str) -> None:
        self._request("disconnect", client)

    def receive(self, timeout: float | None = None) -> tuple[str, Any, str] | None:
        """The next message as C{(client, body, id)}, or None after C{timeout} seconds."""
        while not self._messages:
            line = self._line(timeout)
            if line is None:
                return None
            if line.get("op") == "message":
                self._messages.append(line)
        m = self._messages.popleft()
        return m["client"], m.get("body"), m["id"]


def _twisted():
    from twisted.internet.defer import Deferred, fail
    from twisted.protocols.basic import LineReceiver

    class _ClientsProtocol(LineReceiver):
        """The hub's JSON lines for a Twisted application: C{connect}/C{disconnect} return
        Deferreds; each message goes to C{onMessage(client, body, id)}."""

        delimiter = b"\n"
        MAX_LENGTH = 256 * 1024

        def __init__(self, onMessage):
            self.onMessage = onMessage
            self.pending: dict[int, tuple[Any, str]] = {}
            self.ref = 0

        def _request(self, op: str, client: str):
            if self.transport is None:
                return fail(HubError("not connected to the hub"))
            self.ref += 1
            d = Deferred()
            self.pending[self.ref] = (d, op)
            self.transport.write(json.dumps({"op": op, "client": client, "ref": self.ref}).encode() + b"\n")
            return d

        def connect(self, client: str):
            return self._request("connect", client).addCallback(lambda r: int(r["serial"]))

        def disconnect(self, client: str):
            return self._request("disconnect", client).addCallback(lambda r: None)

        def lineReceived(self, line: bytes) -> None:
            data = json.loads(line)
            if data.get("op") == "message":
                self.onMessage(data["client"], data.get("body"), data["id"])
                return
            waiting = self.pending.pop(data.get("ref"), None)
            if waiting is None:
                return
            if data.get("op") == "error":
                waiting[0].errback(HubError(data.get("error", "refused")))
            else:
                waiting[0].callback(data)

        def connectionLost(self, reason=None) -> None:
            pending, self.pending = self.pending, {}
            for d, op in pending.values():
                d.errback(ConnectionError(f"the clients socket closed during {op}"))

    return _ClientsProtocol


def ClientsProtocol(onMessage):  # noqa: N802 - a protocol class made on first use
    """A Twisted protocol for the hub (imports Twisted only when used)."""
    return _twisted()(onMessage)


def clientsService(reactor: Any, onMessage: Any, address: str | None = None) -> Any:
    """A C{ClientService} connected to the hub, with C{.hub}: C{connect(client)} and
    C{disconnect(client)} Deferreds that wait for the connection; registered clients are
    registered again after a reconnect (a restarted host forgot them)."""
    from twisted.application.internet import ClientService, backoffPolicy
    from twisted.internet.endpoints import UNIXClientEndpoint
    from twisted.internet.protocol import Factory

    held: set[str] = set()
    service = None

    def build():
        proto = ClientsProtocol(onMessage)
        made = proto.connectionMade

        def connectionMade():
            made()
            for client in sorted(held):
                proto.connect(client).addErrback(lambda f: None)

        proto.connectionMade = connectionMade
        return proto

    class Hub:
        def connect(self, client: str):
            def registered(serial):
                held.add(client)
                return serial

            return service.whenConnected().addCallback(lambda p: p.connect(client)).addCallback(registered)

        def disconnect(self, client: str):
            held.discard(client)
            return service.whenConnected().addCallback(lambda p: p.disconnect(client))

    endpoint = UNIXClientEndpoint(reactor, socketAddress(address))
    # A first retry soon: the instance usually started just before its host listens.
    service = ClientService(endpoint, Factory.forProtocol(build), clock=reactor,
                            retryPolicy=backoffPolicy(initialDelay=0.05, maxDelay=5.0))
    service.hub = Hub()
    return service

"""
Hand listening sockets from a running balancer process to its successor.

The mechanism is file-descriptor passing over a Unix socket (C{SCM_RIGHTS},
through L{socket.send_fds} / L{socket.recv_fds}): the old process sends the
very listening sockets it accepts on; the new one adopts them with
C{reactor.adoptStreamPort}.  Both processes then hold the same kernel socket
and its accept queue, so there is no instant at which the port is closed: a
SYN that arrives while the old process stops accepting waits in the shared
queue and is accepted by the new one.  See docs/balancer-upgrade.md for why
this and not SO_REUSEPORT.

The exchange, each message a 4-byte big-endian length and a JSON object::

    new -> old   {"op": "take"}            (or "share" for a worker process)
    old -> new   {"op": "sockets", "listeners": [{"name", "family"}...],
                  "state": {...}}          + one fd per listener (SCM_RIGHTS)
    new -> old   {"op": "adopted"}         (new is listening on every fd)
    old -> new   {"op": "released"}        (old has stopped accepting)

Until C{adopted} arrives the old process keeps serving; if the new process
dies or hangs up before that, nothing changes.  After it, the old process stops
accepting and drains (L{Drainer}).

The new side is blocking on purpose: it runs once, at start-up, before the
reactor (like binding a privileged port), and must have the sockets before the
service starts.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import Interface

__all__ = [
    "HandoverError",
    "IHandoverSource",
    "HandoverServerFactory",
    "Takeover",
    "takeOver",
    "bindTCP",
    "Drainer",
    "encodeMessage",
    "serveHandover",
    "MAX_MESSAGE",
    "MAX_LISTENERS",
]

_log = Logger()

MAX_MESSAGE = 16 * 1024 * 1024
MAX_LISTENERS = 64
_HEADER = struct.Struct("!I")


class HandoverError(Exception):
    """The hand-over could not be completed; the old process keeps serving."""


def encodeMessage(message: dict[str, Any]) -> bytes:
    """Frame one message: 4-byte big-endian length, then compact JSON."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_MESSAGE:
        raise HandoverError("hand-over message of %d bytes exceeds %d" % (len(body), MAX_MESSAGE))
    return _HEADER.pack(len(body)) + body


def _decodeBody(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HandoverError("malformed hand-over message: %s" % (e,))
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise HandoverError("hand-over message without an 'op': %r" % (message,))
    return message


def bindTCP(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """
    A non-blocking listening TCP socket, owned by the caller.

    The balancer binds its own sockets and adopts them into the reactor, so
    every port it runs is an adopted one: Twisted does not C{shutdown()} an
    adopted listening socket when it stops listening, which would also stop
    the successor that shares it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class IHandoverSource(Interface):
    """What a running balancer offers to its successor."""

    def handoverListeners() -> list:
        """The (name, listening socket) pairs to pass, in a stable order."""

    def handoverState(kind: str) -> Any:
        """Host states, weights and counters as JSON-able data (or a Deferred of it),
        for a C{kind} "take" or "share" request."""

    def handedOver(kind: str) -> None:
        """The successor adopted the sockets (C{kind} "take"): stop accepting.
        For C{kind} "share" (a worker) nothing has to stop."""

    def handoverDone(kind: str) -> None:
        """The conversation that adopted the sockets has closed: drain and exit now.
        (Called after "released" is on the wire, so stopping cannot cut it off.)"""


class _HandoverProtocol(Protocol):
    """The old side of one hand-over conversation."""

    def __init__(self, factory: HandoverServerFactory) -> None:
        self.factory = factory
        self.buffer = b""
        self.kind: str | None = None
        self.sent = False
        self.adopted = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if size > MAX_MESSAGE:
                self._refuse("message too large")
                return
            if len(self.buffer) < _HEADER.size + size:
                return
            body = self.buffer[_HEADER.size : _HEADER.size + size]
            self.buffer = self.buffer[_HEADER.size + size :]
            try:
                message = _decodeBody(body)
            except HandoverError as e:
                self._refuse(str(e))
                return
            self.messageReceived(message)

    def _sendSockets(self, state: dict[str, Any]) -> None:
        if not self.transport.connected:
            return
        pairs = self.factory.source.handoverListeners()
        listeners = [{"name": name, "family": int(sock.family)} for name, sock in pairs]
        payload = encodeMessage({"op": "sockets", "listeners": listeners, "state": state})
        fds = [sock.fileno() for _, sock in pairs]
        try:
            # One sendmsg: the fds travel with the first bytes of the message.  The
            # socket stays non-blocking (a peer that stops reading must not freeze
            # the balancer); what the kernel does not take goes through the transport.
            sent = socket.send_fds(self.transport.socket, [payload], fds)
        except OSError as e:
            self._refuse("cannot pass the sockets: %s" % (e,))
            return
        if sent < len(payload):
            self.transport.write(payload[sent:])

    def connectionLost(self, reason: Any = None) -> None:
        if self.adopted:
            self.factory.source.handoverDone(self.kind)

    def _refuse(self, why: str) -> None:
        _log.warn("hand-over refused: {why}", why=why)
        self.transport.write(encodeMessage({"op": "error", "reason": why}))
        self.transport.loseConnection()

    def messageReceived(self, message: dict[str, Any]) -> None:
        op = message["op"]
        source = self.factory.source
        if op in ("take", "share") and not self.sent:
            if op == "take" and self.factory.takenOver:
                self._refuse("already handed over")
                return
            self.kind = op
            self.sent = True  # one answer per conversation, even while the state is gathered
            d = defer.maybeDeferred(source.handoverState, op)
            d.addCallback(self._sendSockets)
            d.addErrback(lambda f: self._refuse("cannot gather the state: %s" % (f.getErrorMessage(),)))
        elif op == "adopted" and self.sent:

            if self.kind == "take":
                self.factory.takenOver = True
            _log.info("listening sockets adopted by a {kind} peer", kind=self.kind)
            self.adopted = True
            source.handedOver(self.kind)
            self.transport.write(encodeMessage({"op": "released"}))
            self.transport.loseConnection()
        else:
            self._refuse("unexpected %r" % (op,))


class HandoverServerFactory(Factory):
    """Serves hand-over requests on a Unix socket for an L{IHandoverSource}."""

    noisy = False

    def __init__(self, source: IHandoverSource) -> None:
        self.source = source
        self.takenOver = False

    def buildProtocol(self, addr: Any) -> _HandoverProtocol:
        return _HandoverProtocol(self)


def serveHandover(reactor: Any, path: str, source: IHandoverSource, backlog: int = 50) -> Any:
    """Listen for hand-over requests on the Unix socket C{path}, answered by C{source}.

    A socket file left behind by a process that died without cleaning up would make the
    listen fail, and no successor could ever take over: it is removed first.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # (also when a predecessor's closing port removed it a moment ago)
    return reactor.listenUNIX(path, HandoverServerFactory(source), backlog=backlog)


class ProcessSockets:
    """The two Unix sockets of a balancer process, single or the master of workers: the
    hand-over control socket (C{args.control}) and the C{--stats} socket (C{args.stats}), which
    answers through the process's own C{statsAnswer}.  Both set C{controlPort} / C{statsPort}."""

    reactor: Any
    args: Any
    controlPort: Any
    statsPort: Any

    def serveControl(self) -> None:
        """Answer hand-over requests on the control path."""
        path = self.args.control
        if path:
            self.controlPort = serveHandover(self.reactor, path, self, backlog=8)

    def serveStats(self) -> None:
        """Answer C{stats} and C{snapshot} on the C{--stats} socket (L{salvusctl.balancer.stats})."""
        path = getattr(self.args, "stats", None)
        if path and self.statsPort is None:
            from salvusctl.balancer.stats import serveStats

            self.statsPort = serveStats(self.reactor, path, self.statsAnswer)

    def statsAnswer(self, command: str) -> Any:
        raise NotImplementedError


def _recvExactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise HandoverError("old process hung up during the hand-over")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recvMessage(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_recvExactly(sock, _HEADER.size))
    if size > MAX_MESSAGE:
        raise HandoverError("hand-over message of %d bytes exceeds %d" % (size, MAX_MESSAGE))
    return _decodeBody(_recvExactly(sock, size))


@dataclass
class Takeover:
    """
    The new side of a hand-over, between receiving the sockets and confirming.

    Adopt every socket in C{listeners} into the reactor, then call
    L{confirm}: only then does the old process stop accepting.
    """

    connection: socket.socket
    listeners: list[tuple[str, socket.socket]]
    state: dict[str, Any]
    confirmed: bool = field(default=False)

    def confirm(self) -> None:
        """Tell the old process we accept now; wait until it has stopped."""
        try:
            self.connection.sendall(encodeMessage({"op": "adopted"}))
            reply = _recvMessage(self.connection)
        except (OSError, TimeoutError) as e:
            raise HandoverError("no confirmation from the old process: %s" % (e,))
        finally:
            self.connection.close()
        if reply["op"] != "released":
            raise HandoverError("old process answered %r" % (reply,))
        self.confirmed = True

    def abandon(self) -> None:
        """Give up before confirming: the old process keeps serving."""
        self.connection.close()
        for _, sock in self.listeners:
            sock.close()


def takeOver(path: str, kind: str = "take", timeout: float = 10.0) -> Takeover | None:
    """
    Ask the balancer listening on the Unix socket C{path} for its sockets.

    @return: a L{Takeover}, or None when no process answers at C{path} (a
        cold start: bind fresh sockets).
    @raise HandoverError: a process answered but the exchange failed.
    """
    if kind not in ("take", "share"):
        raise ValueError("kind must be 'take' or 'share', got %r" % (kind,))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    except OSError:
        conn.close()
        raise
    try:
        conn.sendall(encodeMessage({"op": kind}))
        header = b""
        fds: list[int] = []
        # The fds come with the first bytes; recv_fds until the header is in.
        while len(header) < _HEADER.size:
            data, newFds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_LISTENERS)
            fds.extend(newFds)
            if not data:
                raise HandoverError("old process hung up before sending sockets")
            header += data
        (size,) = _HEADER.unpack_from(header)
        if size > MAX_MESSAGE:
            raise HandoverError("hand-over message of %d bytes exceeds %d" % (size, MAX_MESSAGE))
        body = header[_HEADER.size :]
        if len(body) < size:
            body += _recvExactly(conn, size - len(body))
        message = _decodeBody(body)
        if message["op"] == "error":
            raise HandoverError("old process refused: %s" % (message.get("reason"),))
        if message["op"] != "sockets":
            raise HandoverError("expected 'sockets', got %r" % (message["op"],))
        specs = message.get("listeners", [])
        if len(specs) != len(fds):
            raise HandoverError("%d listeners described but %d fds received" % (len(specs), len(fds)))
        listeners = []
        for spec, fd in zip(specs, fds, strict=True):
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            os.set_inheritable(fd, False)
            listeners.append((str(spec["name"]), sock))
        fds = []
        return Takeover(conn, listeners, dict(message.get("state") or {}))
    except BaseException:
        for fd in fds:
            os.close(fd)
        conn.close()
        raise


class Drainer:
    """
    Let open connections finish, within bounds, then call C{done}.

    After C{drainTimeout} seconds, connections still open are asked to close
    gracefully (their buffered bytes are flushed); after C{hardStop} seconds
    the rest are aborted.  C{count()} returns the connections still open;
    C{close(abort)} closes them all.
    """

    def __init__(
        self,
        clock: IReactorTime,
        count: Callable[[], int],
        close: Callable[[bool], None],
        done: Callable[[], None],
        drainTimeout: float = 30.0,
        hardStop: float = 60.0,
        poll: float = 0.1,
    ) -> None:
        if drainTimeout < 0 or hardStop < drainTimeout:
            raise ValueError(
                "need 0 <= drainTimeout <= hardStop, got %r and %r" % (drainTimeout, hardStop)
            )
        self.clock = clock
        self.count = count
        self.close = close
        self.done = done
        self.drainTimeout = drainTimeout
        self.hardStop = hardStop
        self.poll = poll
        self.started: float | None = None
        self.finished = False
        self.stage = "idle"

    def start(self) -> None:
        """Begin draining now."""
        if self.started is not None:
            return
        self.started = self.clock.seconds()
        self.stage = "draining"
        self._check()

    def _check(self) -> None:
        if self.finished:
            return
        elapsed = self.clock.seconds() - self.started
        if self.count() == 0:
            self._finish()
            return
        if elapsed >= self.hardStop:
            _log.warn("hard-stop: aborting {n} connections", n=self.count())
            self.stage = "aborted"
            self.close(True)
            self._finish()
            return
        if elapsed >= self.drainTimeout and self.stage == "draining":
            _log.info("drain timeout: closing {n} connections", n=self.count())
            self.stage = "closing"
            self.close(False)
        self.clock.callLater(self.poll, self._check)

    def _finish(self) -> None:
        self.finished = True
        self.done()

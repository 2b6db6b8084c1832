"""The clients hub of one host: the local socket its instances register clients on, and delivery
of messages to a client wherever in the cluster it is connected.

B{Local API.} The supervisor puts C{SALVUS_CLIENTS_SOCKET} (an abstract Unix socket, C{@name}) in
each instance's environment.  An instance connects and speaks JSON lines (L{salvusctl.clientapi}
is the helper):

    -> {"op": "connect", "client": "tab-41", "ref": 1}
    <- {"op": "connected", "client": "tab-41", "serial": 7, "ref": 1}
    -> {"op": "disconnect", "client": "tab-41", "ref": 2}
    <- {"op": "disconnected", "client": "tab-41", "ref": 2}
    <- {"op": "message", "client": "tab-41", "id": "9f…", "body": {...}}
    <- {"op": "error", "ref": 3, "error": "…"}           (a bad request; the connection stays)

The kernel tells which process is at the other end (C{SO_PEERCRED}); the supervisor maps it to its
instance, so an instance cannot register clients in another's name.  When the socket closes —
the instance stopped or died — its clients are marked gone.

B{Delivery.} L{ClientHub.deliver} looks the client up in the registry: not connected is refused at
once with the reason; held here, it is written to the instance's socket; held by another host, it
goes over the direct link to that host when one is up (L{salvusctl.cluster.links}), else through
the cluster's mailbox (kind C{client.message}).  Each message is addressed to one connection (the
client's serial when it was looked up) and carries a unique id: the receiving hub writes it only
to that connection, and only once — a link that failed after the receiver had it, then the
mailbox fallback with the same id, still gives the client one copy.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from salvusctl.cluster.clients import ClientNotConnected, checkClientId
from salvusctl.cluster.domain import DOWN, LEFT, BadMessage, encodeBody

__all__ = ["ClientHub", "LocalConnection", "MESSAGE_KIND", "ENV"]

log = Logger()

#: The mailbox kind of a message for a client held by another host.
MESSAGE_KIND = "client.message"
#: The environment variable that names the socket in an instance's environment.
ENV = "SALVUS_CLIENTS_SOCKET"
#: Message ids remembered per connection to refuse a second copy.
SEEN = 4096
_UCRED = struct.Struct("3i")


def peerPid(transport: Any) -> int:
    """The pid at the other end of a Unix socket (0 when the transport has none: tests)."""
    try:
        handle = transport.getHandle()
        raw = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return _UCRED.unpack(raw)[0]
    except (AttributeError, OSError, struct.error):
        return 0


class LocalConnection(LineReceiver):
    """One instance's connection to the hub; holds the clients it registered (id -> serial)."""

    delimiter = b"\n"
    MAX_LENGTH = 256 * 1024

    def __init__(self, hub: ClientHub):
        self.hub = hub
        self.instance = ""
        self.clients: dict[str, int] = {}
        self.seen: dict[tuple[str, int], OrderedDict] = {}

    def connectionMade(self) -> None:
        pid = peerPid(self.transport)
        instance = self.hub.identify(pid)
        if instance is None:
            log.warn("clients: refused a connection from pid {pid}: not an instance of this host", pid=pid)
            self.send({"op": "error", "error": f"pid {pid} is not an instance of this host"})
            self.transport.loseConnection()
            return
        self.instance = instance
        self.hub.connections.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.hub.connections.discard(self)
        if self.instance:
            self.hub._instanceGone(self)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.send({"op": "error", "error": f"a request line is at most {self.MAX_LENGTH} bytes"})
        self.transport.loseConnection()

    def send(self, data: dict[str, Any]) -> None:
        self.transport.write(json.dumps(data, separators=(",", ":")).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        if not line.strip() or not self.instance:
            return
        ref = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            ref = request.get("ref")
            op = request.get("op")
            if op not in ("connect", "disconnect"):
                raise ValueError(f"unknown op {op!r} (known: connect, disconnect)")
            client = checkClientId(request.get("client"))
        except ValueError as e:
            self.send({"op": "error", "ref": ref, "error": str(e)})
            return
        d = self.hub._connect(self, client) if op == "connect" else self.hub._disconnect(self, client)

        def answered(serial):
            reply = {"op": op + "ed", "client": client, "ref": ref}
            if op == "connect":
                reply["serial"] = serial
            self.send(reply)

        def failed(failure):
            log.warn("clients: {op} {client} from {instance} failed: {why}", op=op, client=client,
                     instance=self.instance, why=failure.getErrorMessage())
            self.send({"op": "error", "ref": ref, "error": failure.getErrorMessage()})

        d.addCallbacks(answered, failed)

    def write(self, client: str, serial: int, uid: str, body: Any) -> bool:
        """Hand one message to the instance; False when this connection already had it."""
        seen = self.seen.setdefault((client, serial), OrderedDict())
        if uid in seen:
            return False
        seen[uid] = True
        while len(seen) > SEEN:
            seen.popitem(last=False)
        self.send({"op": "message", "client": client, "id": uid, "body": body})
        return True


class ClientHub:
    """This host's clients: the local socket, the registry's rows of this host, and delivery.

    @param registry: a L{salvusctl.cluster.clients.ClientRegistry}.
    @param socket_name: the abstract socket's name (without the leading C{@}).
    @param mailbox_send: C{send(host, kind, body)} of the cluster's mailbox (the fallback path).
    @param identify: C{identify(pid)} -> the instance name of a connecting process, or None to
        refuse it (default: every process is accepted as C{pid<N>}: a host without supervisor).
    @param links: the direct links (L{salvusctl.cluster.links.Links}) or None: mailbox only.
    """

    def __init__(self, reactor: Any, registry: Any, host: str, socket_name: str,
                 mailbox_send: Callable[..., Deferred], identify: Callable[[int], str | None] | None = None,
                 links: Any = None):
        self.reactor = reactor
        self.registry = registry
        self.host = host
        self.socket_name = socket_name
        self.mailbox_send = mailbox_send
        self.identify = identify or (lambda pid: f"pid{pid}")
        self.links = links
        self.connections: set[LocalConnection] = set()
        #: client id -> (connection, serial) of the clients held on this host.
        self.local: dict[str, tuple[LocalConnection, int]] = {}
        self.port: Any = None
        #: Messages by the path they took (for info and the bench).
        self.counts = {"local": 0, "link": 0, "mailbox": 0, "refused": 0, "received": 0, "duplicate": 0}

    @property
    def address(self) -> str:
        """The value of C{SALVUS_CLIENTS_SOCKET}."""
        return "@" + self.socket_name

    # -- lifecycle -------------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        """Mark what a previous run of this host left as gone, then listen."""
        yield self.registry.dropHost(self.host, self.reactor.seconds(), f"its host {self.host} restarted")
        if self.port is None:
            factory = Factory.forProtocol(lambda: LocalConnection(self))
            self.port = self.reactor.listenUNIX("\0" + self.socket_name, factory)
        if self.links is not None:
            yield self.links.start()

    @inlineCallbacks
    def stop(self):
        """Close the socket and every instance's connection; the clients of this host go."""
        if self.links is not None:
            yield self.links.stop()
        port, self.port = self.port, None
        if port is not None:
            yield port.stopListening()
        for connection in list(self.connections):
            connection.instance = ""  # the host's row update below covers them all
            connection.transport.loseConnection()
        self.connections.clear()
        self.local.clear()
        yield self.registry.dropHost(self.host, self.reactor.seconds(), f"its host {self.host} left")

    def hostChanged(self, name: str, old: str | None, new: str, peer: Any) -> None:
        """A membership observer: a peer down or left takes its clients with it."""
        if name == self.host or new not in (DOWN, LEFT):
            return
        d = self.registry.dropHost(name, self.reactor.seconds(), f"its host {name} is {new}")
        d.addErrback(lambda f: log.warn("clients: could not drop the clients of {name}: {why}", name=name,
                                        why=f.getErrorMessage()))

    # -- the local API ---------------------------------------------------------------------------

    def _connect(self, connection: LocalConnection, client: str) -> Deferred:
        d = self.registry.connect(client, self.host, connection.instance, self.reactor.seconds())

        def registered(serial):
            if connection not in self.connections:
                # The instance went while its connect was being written: take it back.
                why = f"its instance {connection.instance}@{self.host} closed the clients socket"
                self.registry.disconnect(client, serial, self.reactor.seconds(), why)
                return serial
            held = self.local.get(client)
            if held is not None and held[0] is not connection:
                held[0].clients.pop(client, None)
            connection.clients[client] = serial
            self.local[client] = (connection, serial)
            return serial

        return d.addCallback(registered)

    def _disconnect(self, connection: LocalConnection, client: str) -> Deferred:
        serial = connection.clients.pop(client, None)
        if serial is None:
            return fail(ValueError(f"client {client!r} is not connected on {connection.instance}"))
        if self.local.get(client, (None, 0))[0] is connection:
            del self.local[client]
        for key in [k for k in connection.seen if k[0] == client]:
            del connection.seen[key]
        why = f"disconnected from {connection.instance}@{self.host}"
        return self.registry.disconnect(client, serial, self.reactor.seconds(), why)

    def _instanceGone(self, connection: LocalConnection) -> None:
        for client in connection.clients:
            if self.local.get(client, (None, 0))[0] is connection:
                del self.local[client]
        connection.clients.clear()
        why = f"its instance {connection.instance}@{self.host} closed the clients socket"
        d = self.registry.dropInstance(self.host, connection.instance, self.reactor.seconds(), why)
        d.addErrback(lambda f: log.warn("clients: could not drop the clients of {i}: {why}",
                                        i=connection.instance, why=f.getErrorMessage()))

    def reassert(self) -> Deferred:
        """At each heartbeat: when the registry holds fewer of this host's clients than it has
        (the others took it for down during a pause), mark the missing ones connected again."""
        d = self.registry.countConnected(self.host)

        def check(count):
            if count >= len(self.local):
                return None
            held = [(client, conn.instance, serial) for client, (conn, serial) in self.local.items()]
            log.info("clients: the registry had {count} of this host's {n} clients; restoring them",
                     count=count, n=len(held))
            return self.registry.restore(self.host, held, self.reactor.seconds())

        return d.addCallback(check)

    # -- delivery --------------------------------------------------------------------------------

    def deliver(self, client: str, body: Any) -> Deferred:
        """Send C{body} to C{client} wherever it is connected.

        Fires with C{{"client", "host", "instance", "serial", "id", "path"}} — C{path} is C{local},
        C{link} (the receiving host wrote it to the instance) or C{mailbox} (queued for the
        receiving host).  Fails with L{ClientNotConnected} (the reason in its text) when no
        instance holds the client, and with C{ValueError}/L{BadMessage} for bad input.
        """
        try:
            checkClientId(client)
            encodeBody(body)
        except (ValueError, BadMessage):
            return fail()
        uid = secrets.token_hex(12)
        d = self.registry.lookup(client)
        d.addCallback(self._route, client, uid, body)
        return d

    def _route(self, entry: Any, client: str, uid: str, body: Any) -> Deferred:
        if entry is None:
            self.counts["refused"] += 1
            return fail(ClientNotConnected(f"client {client!r} is not connected: it never connected"))
        if entry.state != "connected":
            self.counts["refused"] += 1
            return fail(ClientNotConnected(entry.refusal()))
        result = {"client": client, "host": entry.host, "instance": entry.instance,
                  "serial": entry.serial, "id": uid}
        if entry.host == self.host:
            self.receive(client, entry.serial, uid, body)
            self.counts["local"] += 1
            return succeed(dict(result, path="local"))
        envelope = {"client": client, "serial": entry.serial, "id": uid, "body": body}
        if self.links is not None and self.links.isUp(entry.host):
            d = self.links.deliver(entry.host, envelope)

            def sent(_):
                self.counts["link"] += 1
                return dict(result, path="link")

            def fallback(failure):
                if failure.check(ClientNotConnected):
                    self.counts["refused"] += 1
                    return failure
                log.info("clients: the link to {host} failed ({why}); message {uid} goes by the mailbox",
                         host=entry.host, why=failure.getErrorMessage(), uid=uid)
                return self._byMailbox(entry.host, envelope, result)

            return d.addCallbacks(sent, fallback)
        return self._byMailbox(entry.host, envelope, result)

    def _byMailbox(self, host: str, envelope: dict, result: dict) -> Deferred:
        d = maybeDeferred(self.mailbox_send, host, MESSAGE_KIND, envelope)

        def queued(message_id):
            self.counts["mailbox"] += 1
            return dict(result, path="mailbox", message=message_id)

        return d.addCallback(queued)

    def receive(self, client: str, serial: int, uid: str, body: Any) -> dict[str, Any]:
        """Write a message to the local connection that holds C{client} with C{serial}.

        Returns C{{"delivered": True}} or C{{"delivered": False, "duplicate": True}}
        when that connection had it already; raises L{ClientNotConnected} when the client is not
        held here with that serial (it disconnected or moved since the sender looked it up).
        """
        held = self.local.get(client)
        if held is None:
            raise ClientNotConnected(f"client {client!r} is not connected on {self.host}")
        connection, current = held
        if int(serial) != current:
            raise ClientNotConnected(
                f"client {client!r} moved: connection {serial} is gone, {current} is at"
                f" {connection.instance}@{self.host}"
            )
        if not connection.write(client, current, uid, body):
            self.counts["duplicate"] += 1
            return {"delivered": False, "duplicate": True, "instance": connection.instance}
        self.counts["received"] += 1
        return {"delivered": True, "instance": connection.instance}

    def handleMailbox(self, message: Any) -> dict[str, Any]:
        """The mailbox handler of C{client.message}: its outcome is the message's delivery state
        (C{acked}, or C{failed} with the refusal)."""
        body = message.body
        if not isinstance(body, dict) or not {"client", "serial", "id"} <= set(body):
            raise ValueError(f"a {MESSAGE_KIND} body has client, serial, id and body: {body!r}")
        return self.receive(body["client"], int(body["serial"]), str(body["id"]), body.get("body"))

    def info(self) -> dict[str, Any]:
        return {"socket": self.address, "clients": len(self.local),
                "instances": len(self.connections), **self.counts}

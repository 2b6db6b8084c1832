"""Direct links between hosts for messages to clients: Twisted AMP over TLS.

Each host, at start, makes a random token and a fresh self-signed certificate (EC P-256, in
memory only), listens on C{ssl:} at its cluster address and writes C{(address, port, token,
certificate)} in C{cluster_links}.  The database is the trust anchor, as it is for everything
else in the cluster:

  - the connecting host checks the server against the certificate the server's row names (pinned:
    no other key is accepted);
  - the server checks the connecting host by its first command, C{Hello(host, token)}, against
    that host's row: a peer that cannot read the database cannot speak on a link.

A link to a host is made the first time a message is for it (that message goes by the mailbox),
kept up with C{ClientService}'s backoff, and closed after C{idle} seconds without a message.
L{Links.isUp} says whether a message can go now; the hub falls back to the mailbox when it
cannot, and when a link fails under a message (the same message id: the receiver writes it once).
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, SSL4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.policies import TimeoutMixin

from salvusctl.cluster.clients import ClientNotConnected

__all__ = ["Links", "LinkTable", "Hello", "Deliver", "BadToken"]

log = Logger()

#: An AMP value is at most 65 535 bytes: larger bodies go by the mailbox.
MAX_LINK_BODY = 60_000
#: The name every link certificate is made for; the certificate itself is pinned.
LINK_NAME = "salvus-link"



class BadToken(Exception):
    """A peer's Hello named a host whose token in the database is another (or no such row)."""


class NotAuthenticated(Exception):
    """A command before a successful Hello."""


class Hello(amp.Command):
    arguments = [(b"host", amp.Unicode()), (b"token", amp.Unicode())]
    response: list = []
    errors = {BadToken: b"BAD_TOKEN"}


class Deliver(amp.Command):
    arguments = [(b"client", amp.Unicode()), (b"serial", amp.Integer()), (b"id", amp.Unicode()),
                 (b"body", amp.Unicode())]
    response = [(b"delivered", amp.Boolean()), (b"instance", amp.Unicode())]
    errors = {ClientNotConnected: b"NOT_CONNECTED", NotAuthenticated: b"NOT_AUTHENTICATED"}


class LinkTable:
    """C{cluster_links} on the shared store."""

    def __init__(self, store: Any):
        self.store = store  # the table is made by salvusctl.cluster.clients' migrations

    def publish(self, host: str, address: str, port: int, token: str, certificate: str,
                now: float) -> Deferred:
        return self.store.runOperation(
            "INSERT INTO cluster_links (host, address, port, token, certificate, updated)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET address = excluded.address,"
            " port = excluded.port, token = excluded.token, certificate = excluded.certificate,"
            " updated = excluded.updated",
            (host, address, int(port), token, certificate, now),
        )

    def withdraw(self, host: str) -> Deferred:
        return self.store.runOperation("DELETE FROM cluster_links WHERE host = ?", (host,))

    def get(self, host: str) -> Deferred:
        """C{(address, port, token, certificate)} of C{host}, or None."""
        d = self.store.runQuery(
            "SELECT address, port, token, certificate FROM cluster_links WHERE host = ?", (host,))
        return d.addCallback(lambda rows: tuple(rows[0]) if rows else None)


class _ServerProtocol(amp.AMP, TimeoutMixin):
    """The receiving end: Hello first, then Deliver to this host's hub."""

    def __init__(self, links: Links):
        super().__init__()
        self.links = links
        self.peer: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self.links.idle * 2)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        super().dataReceived(data)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.setTimeout(None)
        super().connectionLost(reason)

    @Hello.responder
    def hello(self, host: str, token: str):
        d = self.links.table.get(host)

        def check(row):
            if row is None or not secrets.compare_digest(str(row[2]), token):
                log.warn("links: refused a link claiming to be {host}: wrong token", host=host)
                raise BadToken(f"no such token for {host}")
            self.peer = host
            return {}

        return d.addCallback(check)

    @Deliver.responder
    def deliver(self, client: str, serial: int, id: str, body: str):
        if self.peer is None:
            raise NotAuthenticated("Hello first")
        result = self.links.hub.receive(client, serial, id, json.loads(body))
        return {"delivered": bool(result["delivered"]), "instance": result["instance"]}


class _Link:
    """The link to one peer: its ClientService, its protocol once authenticated, its idle timer."""

    def __init__(self, service: ClientService):
        self.service = service
        self.proto: amp.AMP | None = None
        self.idleCall: Any = None


class Links:
    """This host's direct links: the TLS listener and one client link per peer in use.

    @param table: a L{LinkTable}.
    @param hub: the L{ClientHub} that receives what peers send.
    @param idle: seconds without a message before a link is closed.
    @param timeout: seconds a Deliver may take before the message goes by the mailbox.
    @param retry: C{ClientService}'s retry policy (default: backoff from 0.1 s to 10 s).
    """

    def __init__(self, reactor: Any, table: LinkTable, host: str, address: str, port: int = 0,
                 idle: float = 60.0, timeout: float = 5.0, retry: Callable[[int], float] | None = None):
        self.reactor = reactor
        self.table = table
        self.host = host
        self.address = address
        self.port = port
        self.idle = float(idle)
        self.timeout = float(timeout)
        self.retry = retry or backoffPolicy(initialDelay=0.1, maxDelay=10.0)
        self.hub: Any = None
        self.token = secrets.token_urlsafe(32)
        self.links: dict[str, _Link] = {}
        self.listening: Any = None
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        from salvusctl.admin.certs import makeSelfSigned

        now = datetime.datetime.fromtimestamp(self.reactor.seconds(), tz=datetime.UTC)
        key_pem, cert_pem = makeSelfSigned(LINK_NAME, now)
        self.certificate = cert_pem.decode()
        options = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        endpoint = SSL4ServerEndpoint(self.reactor, self.port, options, interface=self.address)
        self.listening = yield endpoint.listen(Factory.forProtocol(lambda: _ServerProtocol(self)))
        port = self.listening.getHost().port
        self.running = True
        yield self.table.publish(self.host, self.address, port, self.token, self.certificate,
                                 self.reactor.seconds())
        log.info("links: {host} takes direct links on {address}:{port} (TLS)", host=self.host,
                 address=self.address, port=port)

    @inlineCallbacks
    def stop(self):
        self.running = False
        for host in list(self.links):
            yield self.close(host)
        if self.listening is not None:
            listening, self.listening = self.listening, None
            yield listening.stopListening()
        yield self.table.withdraw(self.host)

    # -- links -----------------------------------------------------------------------------------

    def isUp(self, host: str) -> bool:
        """True when a message to C{host} can go over its link now (else: connect for later)."""
        link = self.links.get(host)
        if link is not None and link.proto is not None:
            return True
        if link is None and self.running:
            self.want(host)
        return False

    def want(self, host: str) -> None:
        """Start linking to C{host} (its row read now; a host without one has no link)."""
        if host in self.links or not self.running:
            return
        self.links[host] = None  # type: ignore[assignment]  # reading its row

        def found(row):
            if row is None or not self.running:
                self.links.pop(host, None)
                return
            address, port, _token, certificate = row
            trust = ssl.Certificate.loadPEM(certificate.encode())
            options = ssl.optionsForClientTLS(LINK_NAME, trustRoot=trust)
            endpoint = SSL4ClientEndpoint(self.reactor, address, int(port), options, timeout=self.timeout)
            # Hello is sent once connected, not as ClientService's prepareConnection: a stop
            # during a pending prepareConnection leaves its state machine without a transition.
            service = ClientService(endpoint, Factory.forProtocol(amp.AMP), retryPolicy=self.retry,
                                    clock=self.reactor)
            self.links[host] = link = _Link(service)
            service.startService()
            self._touch(host, link)
            self._await(host, link)

        def failed(f):
            self.links.pop(host, None)
            log.warn("links: no row for {host}: {why}", host=host, why=f.getErrorMessage())

        self.table.get(host).addCallbacks(found, failed)

    def _await(self, host: str, link: _Link) -> None:
        """Wait for the link's next connection (ClientService retries with backoff), say Hello."""
        if self.links.get(host) is not link:
            return
        d = link.service.whenConnected(failAfterFailures=None)
        d.addCallback(lambda proto: self._hello(host, link, proto))
        d.addErrback(lambda f: None)  # the link was closed

    def _hello(self, host: str, link: _Link, proto: amp.AMP) -> Deferred:
        lost = proto.connectionLost

        def connectionLost(reason):
            lost(reason)
            if link.proto is proto:
                link.proto = None
                log.info("links: the link to {host} is down; messages go by the mailbox", host=host)
            self.reactor.callLater(0, self._await, host, link)

        proto.connectionLost = connectionLost
        d = proto.callRemote(Hello, host=self.host, token=self.token)

        def up(_):
            if self.links.get(host) is not link:
                proto.transport.loseConnection()
                return
            link.proto = proto
            log.info("links: {me} -> {host} up", me=self.host, host=host)

        def refused(f):
            log.warn("links: {host} refused this host's Hello: {why}", host=host, why=f.getErrorMessage())
            proto.transport.loseConnection()

        return d.addCallbacks(up, refused)

    def _touch(self, host: str, link: _Link) -> None:
        if link.idleCall is not None and link.idleCall.active():
            link.idleCall.reset(self.idle)
        else:
            link.idleCall = self.reactor.callLater(self.idle, self._idle, host)

    def _idle(self, host: str) -> None:
        log.info("links: the link to {host} is idle for {idle:g}s; closed", host=host, idle=self.idle)
        self.close(host)

    def close(self, host: str) -> Deferred:
        link = self.links.pop(host, None)
        if not isinstance(link, _Link):
            from twisted.internet.defer import succeed

            return succeed(None)
        if link.idleCall is not None and link.idleCall.active():
            link.idleCall.cancel()
        link.proto = None
        return link.service.stopService()

    def deliver(self, host: str, envelope: dict[str, Any]) -> Deferred:
        """Send one message over the link to C{host}; fails with L{ClientNotConnected} when the
        receiver refuses it, with another error when the link failed (then: the mailbox)."""
        link = self.links.get(host)
        if link is None or link.proto is None:
            return fail(ConnectionError(f"no link to {host}"))
        self._touch(host, link)
        body = json.dumps(envelope.get("body"), separators=(",", ":"))
        if len(body.encode()) > MAX_LINK_BODY:
            return fail(ValueError(f"a body of {len(body)} characters is too large for a link (AMP)"))
        d = link.proto.callRemote(Deliver, client=envelope["client"], serial=int(envelope["serial"]),
                                  id=envelope["id"], body=body)
        d.addTimeout(self.timeout, self.reactor)
        return d

    def info(self) -> dict[str, Any]:
        up = sorted(h for h, link in self.links.items() if link is not None and link.proto is not None)
        return {"port": self.listening.getHost().port if self.listening is not None else None, "up": up}

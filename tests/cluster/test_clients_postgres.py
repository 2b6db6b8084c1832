"""Messages to connected clients on a real PostgreSQL: three hosts in one process (each its own
store, clients socket, TLS link listener, all on 127.0.0.1), apps on the real clients sockets
through the Twisted helper.  The direct link and the mailbox fallback, a moved client, a lost link
and a host that goes."""

from __future__ import annotations

import secrets

from twisted.internet import reactor, ssl
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.protocols import amp
from twisted.trial.unittest import TestCase

from salvusctl.clientapi import clientsService
from salvusctl.cluster.clients import ClientNotConnected
from salvusctl.cluster.links import LINK_NAME, BadToken, Deliver, Hello, NotAuthenticated
from salvusctl.cluster.service import ClusterService
from salvusctl.store.postgres import PostgresStore
from salvusctl.store.url import parseStoreURL
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase, waitUntil
from tests.store.test_postgres_outage import FAST

HEARTBEAT = 0.2
MISSED = 2


class ClientsOnPostgresTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 90

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.tag = secrets.token_hex(4)

    def member(self, name: str, **links) -> ClusterService:
        store = PostgresStore(reactor, parseStoreURL(self.db.url), pool_size=2, reconnect_delays=FAST,
                              close_timeout=5)
        service = ClusterService(reactor, store, name, address="127.0.0.1", store_ready=store.start,
                                 heartbeat=HEARTBEAT, missed=MISSED,
                                 clients_socket=f"salvus-clients-pg-{self.tag}-{name}", links=links or None)

        @inlineCallbacks
        def stop():
            if service.running:
                yield service.stopService()
            yield store.close()

        self.addCleanup(stop)
        service.startService()
        return service

    @inlineCallbacks
    def hosts(self, *names, **links):
        members = [self.member(n, **links) for n in names]
        yield gatherResults([m.joined for m in members])
        yield gatherResults([m.membership.refresh() for m in members])
        return members

    def app(self, member):
        """An app connected to C{member}'s clients socket; its messages as (client, body) in a list."""
        got: list = []
        service = clientsService(reactor, lambda client, body, uid: got.append((client, body)),
                                 address=member.clients.address)
        service.startService()
        self.addCleanup(service.stopService)
        return service.hub, got

    @inlineCallbacks
    def test_theFirstMessageGoesByTheMailboxThenTheLink(self):
        """No link is up at first: the message goes by the mailbox and the link is made; the
        next ones go over it.  Each arrives once."""
        a, b, c = yield self.hosts("a", "b", "c")
        hub, got = self.app(b)
        yield hub.connect("tab-1")
        first = yield a.deliver("tab-1", {"n": 0})
        self.assertEqual(first["path"], "mailbox")
        ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
        self.assertTrue(ok)
        paths = []
        for n in range(1, 21):
            r = yield a.deliver("tab-1", {"n": n})
            paths.append(r["path"])
        self.assertEqual(set(paths), {"link"})
        ok = yield waitUntil(reactor, lambda: len(got) == 21)
        self.assertTrue(ok, got)
        self.assertEqual(sorted(body["n"] for _, body in got), list(range(21)))
        fromC = yield c.deliver("tab-1", "from c")
        self.assertEqual(fromC["host"], "b")

    @inlineCallbacks
    def test_refusedWithTheReasonAndAMovedClient(self):
        """Not connected: refused at once.  A client that reconnects at another host's instance
        gets the later messages there; one addressed to its old connection is refused over the
        link with the reason."""
        a, b, c = yield self.hosts("a", "b", "c")
        failure = yield self.assertFailure(a.deliver("ghost", 1), ClientNotConnected)
        self.assertIn("never connected", str(failure))
        hubB, gotB = self.app(b)
        hubC, gotC = self.app(c)
        yield hubB.connect("tab-2")
        yield a.deliver("tab-2", "at b")
        ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
        self.assertTrue(ok)
        serial = yield hubC.connect("tab-2")
        self.assertEqual(serial, 2)
        r = yield a.deliver("tab-2", "at c")
        self.assertEqual(r["host"], "c")
        yield hubB.disconnect("tab-2")  # the old connection closes at b, late
        row = self.db.query("SELECT host, serial, state FROM cluster_clients WHERE client = 'tab-2'")
        self.assertEqual(row, [("c", 2, "connected")])
        old = {"client": "tab-2", "serial": 1, "id": "stale", "body": "late"}
        error = yield self.assertFailure(a.clients.links.deliver("b", old), ClientNotConnected)
        self.assertIn("not connected on b", str(error))
        ok = yield waitUntil(reactor, lambda: gotC == [("tab-2", "at c")])
        self.assertTrue(ok, gotC)
        self.assertEqual(gotB, [("tab-2", "at b")])

    @inlineCallbacks
    def test_aLostLinkLosesNothing(self):
        """Sixty messages; twice the link is cut (its TCP connection aborted) with a message on it:
        every message arrives, once — that one and the next by the mailbox until the link is back."""
        a, b = yield self.hosts("a", "b")
        hub, got = self.app(b)
        yield hub.connect("tab-3")
        yield a.deliver("tab-3", -1)
        ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
        self.assertTrue(ok)
        paths = []
        for n in range(60):
            if n in (20, 40):
                ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
                self.assertTrue(ok)
                proto = a.clients.links.links["b"].proto
                sending = proto.callRemote

                def cutWhileSending(*args, proto=proto, sending=sending, **kw):
                    d = sending(*args, **kw)
                    proto.transport.abortConnection()
                    return d

                proto.callRemote = cutWhileSending
            r = yield a.deliver("tab-3", n)
            paths.append(r["path"])
        self.assertEqual(paths[20], "mailbox")
        self.assertEqual(paths[40], "mailbox")
        ok = yield waitUntil(reactor, lambda: len(got) >= 61, timeout=30)
        self.assertTrue(ok, len(got))
        bodies = [body for _, body in got]
        self.assertEqual(sorted(bodies), list(range(-1, 60)))
        self.assertIn("mailbox", paths)
        self.assertIn("link", paths)

    @inlineCallbacks
    def test_anIdleLinkIsClosedAndMadeAgain(self):
        a, b = yield self.hosts("a", "b", idle=0.5)
        hub, got = self.app(b)
        yield hub.connect("tab-4")
        yield a.deliver("tab-4", 0)
        ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
        self.assertTrue(ok)
        ok = yield waitUntil(reactor, lambda: "b" not in a.clients.links.links)
        self.assertTrue(ok, "the idle link was not closed")
        r = yield a.deliver("tab-4", 1)
        self.assertEqual(r["path"], "mailbox")
        ok = yield waitUntil(reactor, lambda: a.clients.links.isUp("b"))
        self.assertTrue(ok)

    @inlineCallbacks
    def test_aLinkNeedsTheTokenFromTheDatabase(self):
        """A peer that cannot name a host's token is refused; a Deliver before Hello too."""
        (b,) = yield self.hosts("b")
        address, port, token, cert = yield b.clients.links.table.get("b")
        options = ssl.optionsForClientTLS(LINK_NAME, trustRoot=ssl.Certificate.loadPEM(cert.encode()))
        proto = yield connectProtocol(SSL4ClientEndpoint(reactor, address, port, options), amp.AMP())
        self.addCleanup(proto.transport.loseConnection)
        yield self.assertFailure(proto.callRemote(Deliver, client="x", serial=1, id="i", body="1"),
                                 NotAuthenticated)
        yield self.assertFailure(proto.callRemote(Hello, host="b", token="guess"), BadToken)
        yield proto.callRemote(Hello, host="b", token=token)

    @inlineCallbacks
    def test_theClientsOfAHostThatGoesAreGone(self):
        """A host that stops beating is down after missed x heartbeat; its clients go with it."""
        a, b = yield self.hosts("a", "b")
        hub, got = self.app(b)
        yield hub.connect("tab-5")
        b._loop.stop()  # b freezes
        started = reactor.seconds()

        def gone():
            return a.membership.peers["b"].state == "down"

        ok = yield waitUntil(reactor, gone)
        self.assertTrue(ok)
        ok = yield waitUntil(reactor, lambda: self.db.query(
            "SELECT state FROM cluster_clients WHERE client = 'tab-5'") == [("gone",)])
        self.assertTrue(ok)
        self.assertLess(reactor.seconds() - started, HEARTBEAT * MISSED + 3)
        error = yield self.assertFailure(a.deliver("tab-5", 1), ClientNotConnected)
        self.assertIn("its host b is down", str(error))

"""Messages to connected clients on a Clock and a MemoryStore: the registry, the local API's JSON
lines (in memory, L{StringTransport}), delivery on one host and through the mailbox, and the
guarantees — refused with a reason, a moved client, once per connection, a host that goes."""

from __future__ import annotations

import json

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.cluster.clienthub import MESSAGE_KIND, LocalConnection
from salvusctl.cluster.clients import ClientNotConnected, checkClientId
from tests.cluster.helpers import MemoryCluster


class App:
    """One instance's end of the clients socket, in memory."""

    def __init__(self, hub, instance):
        self.hub = hub
        hub.identify = lambda pid: instance
        self.proto = LocalConnection(hub)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.ref = 0

    def request(self, op, client):
        self.ref += 1
        self.proto.dataReceived(json.dumps({"op": op, "client": client, "ref": self.ref}).encode() + b"\n")
        return self.lines()[-1]

    def lines(self):
        return [json.loads(x) for x in self.transport.value().splitlines()]

    def messages(self):
        return [(m["client"], m["body"]) for m in self.lines() if m["op"] == "message"]

    def close(self):
        self.proto.connectionLost(None)


class ClientsTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster(MemoryReactorClock())
        self.a = self.cluster.member("a", clients_socket="salvus-clients-test-a")
        self.b = self.cluster.member("b", clients_socket="salvus-clients-test-b")

    def tearDown(self):
        self.cluster.stopAll(self)

    def deliver(self, member, client, body):
        return self.successResultOf(member.deliver(client, body))

    def refusal(self, member, client, body=None):
        return str(self.failureResultOf(member.deliver(client, body), ClientNotConnected).value)

    def test_socketInTheListenerAndTheEnvironment(self):
        """The hub listens on its abstract socket once started (the address an instance gets)."""
        self.assertEqual(self.a.clients.address, "@salvus-clients-test-a")
        ports = [p[0] for p in self.cluster.clock.unixServers]
        self.assertIn("\0salvus-clients-test-a", ports)

    def test_connectRegistersAndALocalMessageArrives(self):
        """An instance's connect is a row of the shared registry; a message sent on the same host
        is written to its socket."""
        app = App(self.a.clients, "web:0")
        self.assertEqual(app.request("connect", "tab-1"), {"op": "connected", "client": "tab-1", "serial": 1,
                                                           "ref": 1})
        rows = self.cluster.rows("SELECT client, host, instance, serial, state FROM cluster_clients")
        self.assertEqual(rows, [("tab-1", "a", "web:0", 1, "connected")])
        result = self.deliver(self.a, "tab-1", {"text": "hi"})
        self.assertEqual((result["path"], result["host"], result["instance"]), ("local", "a", "web:0"))
        self.assertEqual(app.messages(), [("tab-1", {"text": "hi"})])

    def test_otherHostDeliversThroughTheMailbox(self):
        """A client held by b gets a message sent from a: queued in the mailbox, handled by b."""
        app = App(self.b.clients, "web:1")
        app.request("connect", "tab-2")
        result = self.deliver(self.a, "tab-2", [1, 2, 3])
        self.assertEqual((result["path"], result["host"]), ("mailbox", "b"))
        self.assertEqual(app.messages(), [("tab-2", [1, 2, 3])])
        state = self.cluster.rows("SELECT d.state FROM cluster_deliveries d JOIN cluster_messages m"
                                  " ON m.id = d.message_id WHERE m.kind = ?", (MESSAGE_KIND,))
        self.assertEqual(state, [("acked",)])

    def test_notConnectedIsRefusedWithTheReason(self):
        """Never connected, disconnected, or whose instance went: each refusal says which."""
        self.assertIn("it never connected", self.refusal(self.a, "nobody"))
        app = App(self.b.clients, "web:1")
        app.request("connect", "tab-3")
        self.assertEqual(app.request("disconnect", "tab-3")["op"], "disconnected")
        self.assertIn("disconnected from web:1@b", self.refusal(self.a, "tab-3"))
        app.request("connect", "tab-3")
        app.close()
        self.assertIn("its instance web:1@b closed the clients socket", self.refusal(self.a, "tab-3"))
        self.assertEqual(app.messages(), [])

    def test_aMovedClientGetsLaterMessagesAtItsNewInstance(self):
        """A client that reconnects elsewhere has a new serial; later messages go there, one
        addressed to its old connection is refused, and the old instance's late disconnect does
        not take the new connection away."""
        old = App(self.b.clients, "web:1")
        old.request("connect", "tab-4")
        self.deliver(self.a, "tab-4", "first")
        new = App(self.a.clients, "web:0")
        self.assertEqual(new.request("connect", "tab-4")["serial"], 2)
        result = self.deliver(self.b, "tab-4", "second")
        self.assertEqual((result["host"], result["instance"], result["serial"]), ("a", "web:0", 2))
        with self.assertRaises(ClientNotConnected) as e:
            self.a.clients.receive("tab-4", 1, "late", "for the old connection")
        self.assertIn("moved", str(e.exception))
        old.request("disconnect", "tab-4")
        self.deliver(self.b, "tab-4", "third")
        self.assertEqual(old.messages(), [("tab-4", "first")])
        self.assertEqual(new.messages(), [("tab-4", "second"), ("tab-4", "third")])

    def test_nothingTwiceToOneConnection(self):
        """The same message id handed over twice (a link then the mailbox) is written once."""
        app = App(self.b.clients, "web:1")
        serial = app.request("connect", "tab-5")["serial"]
        first = self.b.clients.receive("tab-5", serial, "m1", "x")
        second = self.b.clients.receive("tab-5", serial, "m1", "x")
        self.assertEqual((first["delivered"], second["delivered"]), (True, False))
        self.assertEqual(app.messages(), [("tab-5", "x")])

    def test_aHostThatGoesTakesItsClients(self):
        """A host down for the cluster (missed x heartbeat) has its clients marked gone; a host
        that starts again drops what its previous run left."""
        app = App(self.b.clients, "web:1")
        app.request("connect", "tab-6")
        self.b._loop.stop()  # b freezes
        self.cluster.advance(21)
        self.assertIn("its host b is down", self.refusal(self.a, "tab-6"))

    def test_aHostBackFromAPauseRestoresItsClients(self):
        """A host the others took for down while it still held its clients (a long pause) marks
        them connected again at its next heartbeat — but not one that connected elsewhere since."""
        app = App(self.b.clients, "web:1")
        app.request("connect", "tab-8")
        app.request("connect", "tab-9")
        self.b._loop.stop()
        self.cluster.advance(21)
        self.assertIn("its host b is down", self.refusal(self.a, "tab-8"))
        elsewhere = App(self.a.clients, "web:0")
        elsewhere.request("connect", "tab-9")
        self.b.clients.local.pop("tab-9")  # the old connection has not heard of its close yet
        self.b.clients.local["tab-9"] = (app.proto, 1)
        self.b._loop.start(5.0, now=True)
        self.cluster.advance(5)
        self.assertEqual(self.deliver(self.a, "tab-8", "back")["host"], "b")
        self.assertEqual(self.deliver(self.b, "tab-9", "moved")["host"], "a")
        self.assertEqual(app.messages(), [("tab-8", "back")])

    def test_goneClientsAreForgottenAfterTheRetention(self):
        member = self.cluster.member("c", clients_socket="salvus-clients-test-c", retention=100,
                                     prune_interval=10)
        app = App(member.clients, "web:2")
        app.request("connect", "tab-10")
        app.request("disconnect", "tab-10")
        self.cluster.advance(50)
        self.assertEqual(len(self.cluster.rows("SELECT * FROM cluster_clients WHERE client = 'tab-10'")), 1)
        self.cluster.advance(70)
        self.assertEqual(self.cluster.rows("SELECT * FROM cluster_clients WHERE client = 'tab-10'"), [])

    def test_aCleanStopTakesItsClients(self):
        app = App(self.b.clients, "web:1")
        app.request("connect", "tab-7")
        d = self.b.stopService()
        self.cluster.advance(5)
        self.successResultOf(d)
        self.assertIn("its host b left", self.refusal(self.a, "tab-7"))

    def test_badRequestsAreAnsweredAndTheConnectionStays(self):
        app = App(self.a.clients, "web:0")
        app.proto.dataReceived(b"not json\n")
        app.proto.dataReceived(b'{"op": "shout", "client": "x", "ref": 9}\n')
        app.proto.dataReceived(b'{"op": "connect", "client": "", "ref": 10}\n')
        app.proto.dataReceived(b'{"op": "disconnect", "client": "never", "ref": 11}\n')
        errors = [m for m in app.lines() if m["op"] == "error"]
        self.assertEqual(len(errors), 4, errors)
        self.assertIn("unknown op 'shout'", errors[1]["error"])
        self.assertEqual(errors[1]["ref"], 9)
        self.assertIn("not connected on web:0", errors[3]["error"])
        self.assertEqual(app.request("connect", "ok")["op"], "connected")

    def test_aProcessThatIsNoInstanceIsRefused(self):
        hub = self.a.clients
        hub.identify = lambda pid: None
        transport = StringTransport()
        LocalConnection(hub).makeConnection(transport)
        self.assertIn("not an instance", transport.value().decode())
        self.assertTrue(transport.disconnecting)

    def test_badDeliveriesStoreNothing(self):
        self.failureResultOf(self.a.deliver("", "x"), ValueError)
        self.failureResultOf(self.a.deliver("c", object()))
        with self.assertRaises(ValueError):
            checkClientId("x" * 201)
        self.assertEqual(self.cluster.rows("SELECT COUNT(*) FROM cluster_messages"), [(0,)])


class SupervisorHookTests(SynchronousTestCase):
    def test_instancesFindTheSocketInTheirEnvironment(self):
        """The cluster's build names the socket after the supervisor's token; every instance
        spawned from then on has it in C{SALVUS_CLIENTS_SOCKET}, and a pid is told to be an
        instance through the supervisor (a stranger's pid is refused)."""
        from twisted.internet.task import Clock

        from salvusctl.cluster.build import _clientsSocket
        from salvusctl.supervisor.deploy import Deploy
        from salvusctl.supervisor.service import SupervisorService
        from salvusctl.supervisor.testing import FakeOS
        from tests.supervisor import scratch

        clock = Clock()
        fake = FakeOS(clock)
        svc = SupervisorService(clock, [Deploy("web", command=["/bin/true"])], runDir=scratch(self),
                                os=fake, reapInterval=0)
        name, identify = _clientsSocket("h1", svc)
        self.assertEqual(name, f"salvus-clients-{svc.token}")
        started = svc.startInstance("web:0")
        started.addErrback(lambda f: None)  # stopped below before it was ready
        self.assertEqual(fake.latest().env["SALVUS_CLIENTS_SOCKET"], "@" + name)
        self.assertEqual(identify(svc.instanceInfo("web:0")["pid"]), "web:0")
        self.assertIsNone(identify(999_999))
        d = svc.stopService()
        clock.advance(30)
        self.successResultOf(d)


class LinkTimerTests(SynchronousTestCase):
    def test_aLinkIsMadeOnDemandAndClosedWhenIdle(self):
        """The first look for a peer's link starts connecting to the address its row gives; the
        link is closed after C{idle} seconds without a message, and made again on demand."""
        from salvusctl.cluster.links import Links, LinkTable

        cluster = MemoryCluster(MemoryReactorClock())
        clock = cluster.clock
        peer = Links(clock, LinkTable(cluster.store), "b", "127.0.0.2")
        self.successResultOf(peer.start())
        links = Links(clock, LinkTable(cluster.store), "a", "127.0.0.1", idle=60)
        self.successResultOf(links.start())
        self.assertFalse(links.isUp("b"))
        self.assertEqual([c[0] for c in clock.sslClients], ["127.0.0.2"])
        self.assertIn("b", links.links)
        clock.advance(59)
        self.assertIn("b", links.links)
        clock.advance(2)
        self.assertNotIn("b", links.links)
        self.assertFalse(links.isUp("b"))
        self.assertIn("b", links.links)
        self.assertFalse(links.isUp("nobody"))
        self.assertNotIn("nobody", links.links)  # no row: no link, the mailbox only
        self.successResultOf(links.stop())
        self.assertEqual(cluster.rows("SELECT host FROM cluster_links"), [("b",)])

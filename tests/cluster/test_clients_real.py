"""The clients socket for real: the app helpers (Twisted and plain socket) over real abstract Unix
sockets, two cluster members on one real SQLite store, and C{salvusctl cluster deliver} through a
real admin."""

from __future__ import annotations

import secrets

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from salvusctl.cli import ExitCode
from salvusctl.clientapi import ClientsSocket, HubError, clientsService
from salvusctl.cluster.clients import ClientRegistry
from tests.cluster.realadmin import RealClusterAdmin
from tests.helpers import waitFor


class ClientsOverRealSocketsTests(RealClusterAdmin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        tag = secrets.token_hex(4)
        yield self.startCluster(("front", "w1"), registries=(ClientRegistry,),
                                options=lambda name: {"clients_socket": f"salvus-clients-test-{tag}-{name}"})
        yield self.startAdmin("front")

    @defer.inlineCallbacks
    def test_twistedHelperGetsWhatTheCLIDelivers(self):
        """An app on w1 registers a client with the Twisted helper; C{salvusctl cluster deliver}
        on the front host reaches it (through the mailbox), and C{cluster clients} lists it."""
        got = []
        service = clientsService(reactor, lambda client, body, uid: got.append((client, body)),
                                 address=self.members["w1"].clients.address)
        service.startService()
        self.addCleanup(service.stopService)
        serial = yield service.hub.connect("tab-9")
        self.assertEqual(serial, 1)
        code, out, err = yield self.cli("cluster", "deliver", "tab-9", '{"n": 1}')
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIn("to pid", out)
        self.assertIn("@w1 (connection 1) by mailbox", out)
        yield waitFor(lambda: got)
        self.assertEqual(got, [("tab-9", {"n": 1})])
        code, out, err = yield self.cli("cluster", "clients")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIn("tab-9", out.splitlines()[1])

    @defer.inlineCallbacks
    def test_cliRefusesAClientNotConnected(self):
        code, out, err = yield self.cli("cluster", "deliver", "ghost", '"hello"')
        self.assertEqual(code, ExitCode.FAILED)
        self.assertIn("client 'ghost' is not connected: it never connected", err)
        code, out, err = yield self.cli("cluster", "deliver", "ghost", "{not json")
        self.assertEqual(code, ExitCode.USAGE)

    @defer.inlineCallbacks
    def test_plainSocketHelper(self):
        """The blocking helper (here in a thread, as a plain app would be): connect, receive a
        message sent from the other host, disconnect; then it is refused with the reason."""
        address = self.members["w1"].clients.address
        hub = yield threads.deferToThread(ClientsSocket, address)
        self.addCleanup(hub.close)
        serial = yield threads.deferToThread(hub.connect, "plain-1")
        self.assertEqual(serial, 1)
        waiting = threads.deferToThread(hub.receive, 20)
        sent = yield self.members["front"].deliver("plain-1", ["x"])
        self.assertEqual(sent["path"], "mailbox")
        message = yield waiting
        self.assertEqual(message[:2], ("plain-1", ["x"]))
        yield threads.deferToThread(hub.disconnect, "plain-1")
        with self.assertRaises(HubError):
            yield threads.deferToThread(hub.disconnect, "plain-1")
        from salvusctl.cluster.clients import ClientNotConnected

        error = yield self.assertFailure(self.members["front"].deliver("plain-1", 1), ClientNotConnected)
        self.assertIn("disconnected from pid", str(error))

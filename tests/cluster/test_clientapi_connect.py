"""An instance can start before its host's clients socket listens (the host listens once the
shared store answered): the helpers wait for it, for a bounded time, instead of failing."""

from __future__ import annotations

import os
import secrets
import sys

from twisted.internet import defer, reactor
from twisted.internet.defer import succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.clientapi import ClientsSocket, HubError, clientsService
from salvusctl.cluster.clienthub import ClientHub
from salvusctl.cluster.clients import ClientRegistry
from salvusctl.store.sqlite import SQLiteStore
from tests.admin.helpers import tempDir
from tests.helpers import waitFor

#: Says "waiting" at its first retry: its first connect found nobody listening.
APP = """
import sys, time
from salvusctl.clientapi import ClientsSocket
said = []
def sleep(seconds):
    if not said:
        said.append(1)
        print("waiting", flush=True)
    time.sleep(seconds)
hub = ClientsSocket(connect_timeout=float(sys.argv[1]), sleep=sleep)
print("serial", hub.connect("early-1"), flush=True)
"""


class Child(ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class EarlyInstanceTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        tmp = tempDir(self)
        os.makedirs(tmp, exist_ok=True)
        self.store = SQLiteStore(reactor, os.path.join(tmp, "salvus.db"))
        registry = ClientRegistry(self.store)
        yield self.store.start()
        self.addCleanup(self.store.close)
        self.name = f"salvus-clients-early-{secrets.token_hex(4)}"
        self.hub = ClientHub(reactor, registry, "h1", self.name, mailbox_send=lambda *a: succeed(None))
        self.addCleanup(self.hub.stop)

    def spawn(self, connect_timeout: float) -> Child:
        child = Child()
        env = dict(os.environ, SALVUS_CLIENTS_SOCKET="@" + self.name, PYTHONPATH=os.getcwd())
        argv = [sys.executable, "-c", APP, str(connect_timeout)]
        reactor.spawnProcess(child, sys.executable, argv, env=env)
        return child

    @defer.inlineCallbacks
    def test_blockingHelperWaitsForTheHub(self):
        """The child connects first and finds nobody; the hub listens after that; the child's
        C{connect} then gets its serial and it exits 0."""
        child = self.spawn(20)
        yield waitFor(lambda: b"waiting" in child.out or child.ended.called)
        self.assertIn(b"waiting", child.out, child.err)
        yield self.hub.start()
        code = yield child.ended
        self.assertEqual(code, 0, child.err)
        self.assertIn(b"serial 1", child.out)  # the hub's answer to its connect("early-1")

    @defer.inlineCallbacks
    def test_blockingHelperGivesUpWithTheReason(self):
        """Nobody ever listens: after its C{connect_timeout} the child fails with a clear error."""
        child = self.spawn(0.2)
        code = yield child.ended
        self.assertEqual(code, 1)
        self.assertIn(b"HubError: nobody listens on the clients socket @" + self.name.encode(), child.err)
        self.assertIn(b"after 0.2s", child.err)
        self.assertNotIn(b"serial", child.out)

    @defer.inlineCallbacks
    def test_twistedHelperWaitsForTheHub(self):
        """The Twisted helper started before the hub listens: C{hub.connect} waits and then
        registers."""
        service = clientsService(reactor, lambda *a: None, address="@" + self.name)
        service.startService()
        self.addCleanup(service.stopService)
        registered = service.hub.connect("early-2")
        self.assertNoResult(registered)
        yield self.hub.start()
        serial = yield registered
        self.assertEqual(serial, 1)
        self.assertIn("early-2", self.hub.local)


class ConnectDeadlineTests(SynchronousTestCase):
    """The retry's timing, on a fake clock: short sleeps that double, capped, within the deadline."""

    def test_backoffAndDeadline(self):
        now = [0.0]
        slept = []

        def sleep(seconds):
            slept.append(seconds)
            now[0] += seconds

        address = f"salvus-clients-none-{secrets.token_hex(4)}"
        with self.assertRaises(HubError) as caught:
            ClientsSocket("@" + address, connect_timeout=1.0, clock=lambda: now[0], sleep=sleep)
        self.assertEqual(slept[:7], [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.2])
        self.assertAlmostEqual(sum(slept), 1.0)
        self.assertIn(f"nobody listens on the clients socket @{address} after 1.0s", str(caught.exception))

    def test_missingPathIsWaitedForToo(self):
        now = [0.0]

        def sleep(seconds):
            now[0] += seconds

        with self.assertRaises(HubError) as caught:
            ClientsSocket("/nonexistent/salvus-clients", connect_timeout=0.5, clock=lambda: now[0],
                          sleep=sleep)
        self.assertIn("/nonexistent/salvus-clients after 0.5s", str(caught.exception))

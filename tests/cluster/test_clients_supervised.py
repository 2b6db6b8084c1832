"""The clients socket with a real supervisor and a real instance: the app finds the socket in its
environment, the kernel's peer credentials tell the hub which instance it is, and when the
instance stops its clients are gone."""

from __future__ import annotations

import os
import secrets
import sys

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from salvusctl.cluster.build import _clientsSocket
from salvusctl.cluster.clients import ClientNotConnected, ClientRegistry
from salvusctl.cluster.service import ClusterService
from salvusctl.cluster.tables import ClusterTables
from salvusctl.store.sqlite import SQLiteStore
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import tempDir
from tests.helpers import waitFor
from tests.supervisor import scratch

APP = """
import json, sys
from salvusctl.clientapi import ClientsSocket
hub = ClientsSocket()
print("serial", hub.connect("real-1"), flush=True)
while True:
    message = hub.receive(timeout=60)
    if message is None:
        break
    print("got", json.dumps(message[1]), flush=True)
"""


class SupervisedAppTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_anInstanceRegistersAndReceives(self):
        tmp = tempDir(self)
        os.makedirs(tmp, exist_ok=True)
        store = SQLiteStore(reactor, os.path.join(tmp, "salvus.db"))
        ClusterTables(store)
        ClientRegistry(store)
        yield store.start()
        self.addCleanup(store.close)
        svc = SupervisorService(reactor, [Deploy("app", command=[sys.executable, "-c", APP], startsecs=0.1,
                                                 stopwaitsecs=2)],
                                runDir=scratch(self), reapInterval=0.2)
        socket_name, identify = _clientsSocket("h1", svc)
        socket_name += "-" + secrets.token_hex(3)
        svc.clientsSocket = "@" + socket_name
        cluster = ClusterService(reactor, store, "h1", heartbeat=0.5,
                                 tables=ClusterTables(store, migrate=False),
                                 clients_socket=socket_name, identify=identify)
        cluster.startService()
        self.addCleanup(cluster.stopService)
        yield cluster.joined
        svc.startService()
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        yield svc.startInstance("app:0")
        yield waitFor(lambda: any("serial 1" in line for line in svc.tailLog("app:0", 10)))
        rows = yield cluster.connectedClients()
        self.assertEqual([(r["client"], r["instance"]) for r in rows], [("real-1", "app:0")])
        sent = yield cluster.deliver("real-1", {"hello": "app"})
        self.assertEqual((sent["path"], sent["instance"]), ("local", "app:0"))
        yield waitFor(lambda: any('got {"hello": "app"}' in line for line in svc.tailLog("app:0", 10)))
        yield svc.stopInstance("app:0")
        yield waitFor(lambda: not cluster.clients.local)
        error = yield self.assertFailure(cluster.deliver("real-1", 1), ClientNotConnected)
        self.assertIn("its instance app:0@h1 closed the clients socket", str(error))

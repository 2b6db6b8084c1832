"""The operator's path end to end: C{salvusctl backup/restore} functions over real XML-RPC."""

from __future__ import annotations

import io
import os
import xmlrpc.client as xmlrpclib

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web import server
from twisted.web import xmlrpc as twisted_xmlrpc

from salvusctl.backup.cli import backupMain, restoreMain
from salvusctl.backup.declare import Backup
from salvusctl.backup.rpc import BackupXMLRPC
from salvusctl.backup.service import BackupService

from .fakes import FakeSupervisor
from .helpers import makeStore, tempPath, writeFile


class CLIOverXMLRPCTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_runListVerifyRestore(self):
        """backup run, list, verify and restore --dry-run / restore through a real XML-RPC socket
        (the client blocks, so it runs in a thread as the real salvusctl process would)."""
        base = tempPath(self)
        src = os.path.join(base, "data")
        writeFile(os.path.join(src, "a.txt"), b"alpha")
        store = makeStore(self, reactor)
        yield store.start()
        decl = Backup("e2e", os.path.join(base, "b"), paths={"data": src}, deploys=["app"])
        decl.validate(None)
        supervisor = FakeSupervisor(running=["app"])
        service = BackupService(reactor, store, [decl], host_name="alpha",
                                work_dir=os.path.join(base, "work"), supervisor=supervisor)
        service.startService()
        self.addCleanup(service.stopService)
        root = twisted_xmlrpc.XMLRPC(allowNone=True)
        root.putSubHandler("backup", BackupXMLRPC(service))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/"

        def cli(main, argv):
            out = io.StringIO()

            def call(method, *args):
                return getattr(xmlrpclib.ServerProxy(url, allow_none=True), method)(*args)

            code = main(argv, call, out)
            return code, out.getvalue()

        code, text = yield deferToThread(cli, backupMain, ["run"])
        self.assertEqual(code, 0, text)
        run_id = text.split(":")[0]
        code, text = yield deferToThread(cli, backupMain, ["list"])
        self.assertIn(run_id, text)
        self.assertIn("ok", text)
        code, text = yield deferToThread(cli, backupMain, ["status"])
        self.assertIn("last: " + run_id + " ok", text)
        code, text = yield deferToThread(cli, backupMain, ["verify", run_id])
        self.assertEqual(code, 0, text)
        code, text = yield deferToThread(cli, backupMain, ["log", run_id])
        self.assertIn("rsync -a", text)
        writeFile(os.path.join(src, "a.txt"), b"changed")
        code, text = yield deferToThread(cli, restoreMain, ["--dry-run"])
        self.assertEqual(code, 0, text)
        self.assertIn("stop deploy app", text)
        self.assertEqual(supervisor.calls, [])
        code, text = yield deferToThread(cli, restoreMain, [run_id])
        self.assertEqual(code, 0, text)
        self.assertIn(f"restore {run_id}: OK", text)
        self.assertEqual(supervisor.calls, [("stop", "app"), ("start", "app")])
        with open(os.path.join(src, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"alpha")
        code, text = yield deferToThread(cli, backupMain, ["verify", "nosuch-20200101T000000Z"])
        self.assertEqual(code, 2)
        self.assertIn("belongs to no backup set", text)

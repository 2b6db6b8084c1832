"""C{salvusctl cluster …} against a real admin over a real socket, with two cluster members on a
real SQLite store (one store object shared in one process, so they see each other)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from salvusctl.cli import ExitCode
from tests.admin.helpers import VIEW
from tests.cluster.realadmin import RealClusterAdmin
from tests.helpers import waitFor


class ClusterCLITests(RealClusterAdmin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.got = []
        yield self.startCluster(("clihost", "w1"),
                                handlers={"note": lambda m: self.got.append(m.body) or "noted"})
        yield self.members["clihost"].membership.refresh()
        yield self.startAdmin("clihost")

    @defer.inlineCallbacks
    def test_hosts(self):
        code, out, err = yield self.cli("cluster", "hosts", user=VIEW)
        self.assertEqual(code, ExitCode.OK, err)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("NAME"))
        self.assertTrue(lines[1].startswith("clihost  up"), out)
        self.assertTrue(lines[2].startswith("w1       up"), out)

    @defer.inlineCallbacks
    def test_hostsSaysWhenTheViewIsStale(self):
        """With the store unable to answer, `cluster hosts` shows the last view, says on stderr
        that it is stale and how old, and exits 3 instead of 0."""
        yield self.members["w1"].stopService()
        yield self.members["clihost"]._loop.stop()
        yield self.store.close()
        code, out, err = yield self.cli("cluster", "hosts", user=VIEW)
        self.assertEqual(code, ExitCode.NOT_RUNNING, out + err)
        self.assertIn("clihost", out)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("salvusctl: stale view: the store did not answer ("), err)
        self.assertIn("s old", err)

    @defer.inlineCallbacks
    def test_hostsExitsThreeWhenOneIsDown(self):
        self.members["w1"]._loop.stop()
        yield self.members["clihost"].membership.refresh()
        self.members["clihost"].membership.peers.clear()
        yield self.store.runOperation("UPDATE cluster_hosts SET last_seen = 0 WHERE name = 'w1'")
        code, out, err = yield self.cli("cluster", "hosts")
        self.assertEqual(code, ExitCode.NOT_RUNNING, out + err)
        self.assertIn("w1       down", out)

    @defer.inlineCallbacks
    def test_sendAndMessages(self):
        code, out, err = yield self.cli("cluster", "send", "w1", "note", '{"text": "hi"}')
        self.assertEqual((code, out, err), (ExitCode.OK, "", ""))
        yield waitFor(lambda: self.got)  # handled by w1 once its store thread has read it
        self.assertEqual(self.got, [{"text": "hi"}])
        yield waitFor(lambda: self.members["w1"].mailbox._polling is None)
        code, out, err = yield self.cli("cluster", "messages", "--kind", "note")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIn('{"text":"hi"}', out)
        self.assertIn("w1: acked", out)

    @defer.inlineCallbacks
    def test_sendErrors(self):
        code, out, err = yield self.cli("cluster", "send", "w1", "note", "{not json")
        self.assertEqual(code, ExitCode.USAGE)
        self.assertIn("salvusctl: the message body must be JSON", err)
        code, out, err = yield self.cli("cluster", "send", "nobody", "note")
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        self.assertIn("no host 'nobody' in the cluster", err)
        code, out, err = yield self.cli("cluster", "send", "w1", "note", user=VIEW)
        self.assertEqual(code, ExitCode.AUTH)
        self.assertEqual(self.got, [])

    @defer.inlineCallbacks
    def test_ping(self):
        code, out, err = yield self.cli("cluster", "ping", "w1")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertRegex(out, r"^pong from w1 in [0-9.]+ ms\n$")
        code, out, err = yield self.cli("cluster", "ping")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(sorted(line.split()[2] for line in out.splitlines()), ["clihost", "w1"])

    @defer.inlineCallbacks
    def test_pingWithoutPong(self):
        self.members["w1"].mailbox.running = False
        code, out, err = yield self.cli("cluster", "ping", "w1", "--wait", "0.3")
        self.assertEqual(code, ExitCode.FAILED)
        self.assertIn("no pong from w1 within 0.3s", err)

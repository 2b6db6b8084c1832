"""Messages between members on a Clock and a MemoryStore: order, once per receiver, survival of a
receiver that is down, clear failures that never stop the loop, retention, ping/pong and deploy
verbs."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.cluster.domain import BadMessage
from salvusctl.cluster.handlers import NoPong
from salvusctl.testing import FakeSupervisor
from tests.cluster.helpers import MemoryCluster


class MessagingTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.a = self.cluster.member("a")
        self.b = self.cluster.member("b")
        self.seen: dict[str, list] = {"a": [], "b": []}
        for name, member in (("a", self.a), ("b", self.b)):
            member.addHandler("note", lambda m, name=name: self.seen[name].append((m.sender, m.body)) or "ok")

    def tearDown(self):
        self.cluster.stopAll(self)

    def deliveries(self, host=None):
        sql = "SELECT m.kind, d.host, d.state, d.result FROM cluster_deliveries d JOIN cluster_messages m" \
              " ON m.id = d.message_id"
        if host:
            sql += f" WHERE d.host = '{host}'"
        return self.cluster.rows(sql + " ORDER BY m.id, d.host")

    def test_deliveredInOrderOncePerReceiver(self):
        """Messages arrive in the order their sender sent them, each handled once, however often
        the receiver looks at its mailbox."""
        for i in range(5):
            self.successResultOf(self.a.send("b", "note", {"n": i}))
        self.assertEqual(self.seen["b"], [("a", {"n": i}) for i in range(5)])
        self.cluster.advance(30)
        self.successResultOf(self.b.mailbox.poll())
        self.assertEqual(len(self.seen["b"]), 5)
        self.assertEqual(self.seen["a"], [])
        self.assertEqual({row[2] for row in self.deliveries("b")}, {"acked"})

    def test_broadcastReachesEveryMemberOnce(self):
        c = self.cluster.member("c")
        c.addHandler("note", lambda m: self.seen.setdefault("c", []).append(m.body))
        self.successResultOf(self.a.send("*", "note", "all"))
        self.cluster.advance(10)
        self.assertEqual(self.seen["a"], [("a", "all")])
        self.assertEqual(self.seen["b"], [("a", "all")])
        self.assertEqual(self.seen["c"], ["all"])

    def test_broadcastBeforeJoiningIsNotForTheNewcomer(self):
        """A host that joins later does not receive the cluster's old broadcasts."""
        self.successResultOf(self.a.send("*", "note", "old"))
        late = self.cluster.member("late")
        got = []
        late.addHandler("note", lambda m: got.append(m.body))
        self.cluster.advance(10)
        self.successResultOf(self.a.send("*", "note", "new"))
        self.assertEqual(got, ["new"])

    def test_deliveredWhenTheReceiverComesBack(self):
        """Messages to a host that is down wait in the store and are handled, in order, when it
        starts again — broadcasts included."""
        self.successResultOf(self.b.stopService())
        self.successResultOf(self.a.send("b", "note", 1))
        self.successResultOf(self.a.send("*", "note", 2))
        self.successResultOf(self.a.send("b", "note", 3))
        self.assertEqual(self.seen["b"], [])
        again = self.cluster.member("b", start=False)
        got = []
        again.addHandler("note", lambda m: got.append(m.body))
        again.startService()
        self.assertEqual(got, [1, 2, 3])

    def test_unknownKindFailsClearlyAndTheNextIsHandled(self):
        self.successResultOf(self.a.send("b", "nosuch", {}))
        self.successResultOf(self.a.send("b", "note", "after"))
        rows = self.deliveries("b")
        self.assertEqual(rows[0][:3], ("nosuch", "b", "failed"))
        self.assertIn("no handler for kind 'nosuch' on b (known:", rows[0][3])
        self.assertEqual(self.seen["b"], [("a", "after")])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_badJSONFailsClearly(self):
        """A row whose body is not JSON (written by something else) is marked failed with the
        reason; the loop goes on."""
        self.successResultOf(self.cluster.store.runOperation(
            "INSERT INTO cluster_messages (uid, sender, recipient, kind, body, created) VALUES"
            " ('x1', 'a', 'b', 'note', '{broken', 0)"))
        self.successResultOf(self.a.send("b", "note", "fine"))
        rows = self.deliveries("b")
        self.assertEqual(rows[0][2], "failed")
        self.assertIn("not valid JSON", rows[0][3])
        self.assertEqual(self.seen["b"], [("a", "fine")])

    def test_handlerErrorsAndTimeouts(self):
        """A handler that raises, or never answers, fails its message and not the mailbox."""
        self.b.addHandler("boom", lambda m: 1 / 0)
        self.b.addHandler("hang", lambda m: Deferred())
        self.b.mailbox.handler_timeout = 30
        self.successResultOf(self.a.send("b", "boom", None))
        self.successResultOf(self.a.send("b", "hang", None))
        self.successResultOf(self.a.send("b", "note", "later"))
        self.assertEqual(self.seen["b"], [])
        self.cluster.advance(31)
        rows = self.deliveries("b")
        self.assertEqual([r[2] for r in rows], ["failed", "failed", "acked"])
        self.assertIn("ZeroDivisionError", rows[0][3])
        self.assertIn("timed out after 30s", rows[1][3])
        self.assertEqual(self.seen["b"], [("a", "later")])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_badSendsStoreNothing(self):
        self.failureResultOf(self.a.send("b", "Bad Kind", {}), BadMessage)
        self.failureResultOf(self.a.send("b", "note", {"x": object()}), BadMessage)
        f = self.failureResultOf(self.a.send("nobody", "note", {}), KeyError)
        self.assertIn("no host 'nobody' in the cluster (hosts: a, b)", str(f.value))
        self.assertEqual(self.cluster.rows("SELECT COUNT(*) FROM cluster_messages"), [(0,)])

    def test_replayedSendInsertsOnce(self):
        """A send replayed after a lost acknowledgement (same uid) stores one message."""
        tables = self.a.tables
        first = self.successResultOf(tables.send("u1", "a", "b", "note", '"x"', 1.0))
        second = self.successResultOf(tables.send("u1", "a", "b", "note", '"x"', 1.0))
        self.assertEqual(first, second)
        self.assertEqual(self.cluster.rows("SELECT COUNT(*) FROM cluster_messages"), [(1,)])

    def test_replayedClaimIsStillOwn(self):
        """A claim replayed by the same run counts as its own; another run's claim does not."""
        self.b.mailbox.running = False  # leave the message unclaimed
        mid = self.successResultOf(self.a.tables.send("u2", "a", "b", "note", '"x"', 1.0))
        self.assertTrue(self.successResultOf(self.b.tables.claim(mid, "b", "run1", 2.0)))
        self.assertTrue(self.successResultOf(self.b.tables.claim(mid, "b", "run1", 2.0)))
        self.assertFalse(self.successResultOf(self.b.tables.claim(mid, "b", "run2", 2.0)))

    def test_pingPong(self):
        rtt = self.successResultOf(self.a.ping("b"))
        self.assertEqual(rtt, 0.0)
        kinds = self.cluster.rows("SELECT kind, sender, recipient FROM cluster_messages ORDER BY id")
        self.assertEqual(kinds, [("ping", "a", "b"), ("pong", "b", "a")])

    def test_pingOfAHostThatIsDown(self):
        self.b.mailbox.running = False
        d = self.a.ping("b", timeout=10)
        self.assertNoResult(d)
        self.cluster.clock.advance(10)
        f = self.failureResultOf(d, NoPong)
        self.assertIn("no pong from b within 10s", str(f.value))
        self.failureResultOf(self.a.ping("ghost"), KeyError)

    def test_pingSelf(self):
        """On a cluster of one, a host can still ping itself through the store."""
        self.assertEqual(self.successResultOf(self.a.ping("a")), 0.0)

    def test_retention(self):
        """Old messages go by age and beyond the newest C{max_messages}, delivered or not."""
        for i in range(5):
            self.successResultOf(self.a.send("b", "note", i))
        self.cluster.advance(100)
        for i in range(5):
            self.successResultOf(self.a.send("b", "note", 10 + i))
        pruned = self.successResultOf(self.a.mailbox.prune(retention=50, keep=3))
        self.assertEqual(pruned, 7)
        bodies = self.cluster.rows("SELECT body FROM cluster_messages ORDER BY id")
        self.assertEqual(bodies, [("12",), ("13",), ("14",)])
        self.assertEqual(self.cluster.rows("SELECT COUNT(*) FROM cluster_deliveries"), [(3,)])

    def test_messagesListing(self):
        self.successResultOf(self.a.send("b", "note", "hi"))
        self.successResultOf(self.a.send("*", "note", "all"))
        listing = self.successResultOf(self.a.messages())
        self.assertEqual([m["kind"] for m in listing], ["note", "note"])
        self.assertEqual(listing[0]["recipient"], "*")
        self.assertEqual(sorted(d["host"] for d in listing[0]["deliveries"]), ["a", "b"])
        self.assertEqual(listing[1]["deliveries"][0]["state"], "acked")
        self.assertEqual(len(self.successResultOf(self.a.messages(limit=1))), 1)


class DeployVerbTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.supervisor = FakeSupervisor({"web": 2}, clock=self.cluster.clock)
        self.restarts = []
        original = self.supervisor.restartDeploy

        def restartDeploy(name, batch=1):
            self.restarts.append((name, batch))
            return original(name, batch)

        self.supervisor.restartDeploy = restartDeploy
        self.front = self.cluster.member("front")
        self.worker = self.cluster.member("worker", supervisor=self.supervisor, publish=[])

    def tearDown(self):
        self.cluster.stopAll(self)

    def result(self):
        return self.cluster.rows("SELECT d.state, d.result FROM cluster_deliveries d"
                                 " WHERE d.host = 'worker' ORDER BY d.message_id DESC LIMIT 1")[0]

    def test_restartDeployOnAnotherHost(self):
        self.successResultOf(self.front.send("worker", "deploy.restart", {"deploy": "web", "batch": 1}))
        self.assertEqual(self.restarts, [("web", 1)])
        self.assertEqual(self.result(), ("acked", '{"restart": "web"}'))

    def test_stopAndStart(self):
        self.successResultOf(self.front.send("worker", "deploy.stop", {"deploy": "web"}))
        self.assertEqual({i["state"] for i in self.supervisor.instanceInfos()}, {"STOPPED"})
        self.successResultOf(self.front.send("worker", "deploy.start", {"deploy": "web"}))
        self.assertEqual({i["state"] for i in self.supervisor.instanceInfos()}, {"RUNNING"})

    def test_badVerbBodies(self):
        self.successResultOf(self.front.send("worker", "deploy.restart", {"name": "web"}))
        state, why = self.result()
        self.assertEqual(state, "failed")
        self.assertIn('needs a body {"deploy": NAME}', why)
        self.successResultOf(self.front.send("worker", "deploy.restart", {"deploy": "web", "batch": 0}))
        self.assertIn("batch must be an integer >= 1", self.result()[1])

    def test_verbOnAHostWithoutSupervisor(self):
        self.successResultOf(self.worker.send("front", "deploy.restart", {"deploy": "web"}))
        row = self.cluster.rows("SELECT state, result FROM cluster_deliveries WHERE host = 'front'")[0]
        self.assertEqual(row[0], "failed")
        self.assertIn("front runs no supervisor", row[1])
        self.flushLoggedErrors(LookupError)

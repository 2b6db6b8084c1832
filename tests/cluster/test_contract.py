"""One contract suite for L{ICluster}, run against real L{ClusterService} members (a MemoryStore
shared by two, on a Clock) and against L{salvusctl.cluster.testing.FakeCluster}.

The admin's C{salvus.cluster.*} verbs, its C{/cluster} page and the CLI read these answers: the
fake must give the real keys, refuse what the real member refuses, and mark deliveries as the
real mailbox does.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.cluster.domain import BadMessage
from salvusctl.cluster.tables import MESSAGE_COLUMNS
from salvusctl.cluster.testing import FakeCluster
from salvusctl.interfaces import ICluster
from tests.cluster.helpers import MemoryCluster

DELIVERY_KEYS = {"host", "state", "delivered", "done", "result"}


class ClusterContract:
    """The behaviour both must share; a subclass makes C{self.alpha} and C{self.beta}, two
    members of one cluster."""

    def setUp(self):
        self.alpha, self.beta = self.make()
        self.seen: list[tuple[str, Any]] = []

        def note(message):
            self.seen.append((message.sender, message.body))
            return {"noted": message.body}

        def broken(message):
            raise ValueError("cannot take it")

        for member in (self.alpha, self.beta):
            member.addHandler("note", note)
            member.addHandler("broken", broken)

    def make(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def test_providesTheInterface(self):
        verifyObject(ICluster, self.alpha)

    def test_hostsAreEveryMemberUp(self):
        hosts = self.successResultOf(self.alpha.hosts())
        self.assertEqual([h["name"] for h in hosts], ["alpha", "beta"])
        self.assertEqual({h["state"] for h in hosts}, {"up"})
        self.assertEqual(set(hosts[0]), realHostKeys())
        self.assertEqual([h["name"] for h in self.alpha.lastView()], ["alpha", "beta"])

    def test_infoNamesTheMemberAndItsHandlers(self):
        info = self.alpha.info()
        self.assertEqual(set(info), realInfoKeys())
        self.assertEqual(info["name"], "alpha")
        self.assertTrue({"note", "broken", "ping", "pong", "deploy.restart"} <= set(info["handlers"]))
        self.assertEqual(info["handlers"], sorted(info["handlers"]))

    def test_refusals(self):
        """An unknown host is a KeyError; a bad kind or a body that is not JSON a BadMessage."""
        self.failureResultOf(self.alpha.send("nosuch", "note", {}), KeyError)
        self.failureResultOf(self.alpha.ping("nosuch"), KeyError)
        self.failureResultOf(self.alpha.send("beta", "Bad Kind", {}), BadMessage)
        self.failureResultOf(self.alpha.send("beta", "note", {"x": object()}), BadMessage)
        self.assertEqual(self.successResultOf(self.alpha.messages()), [])

    def test_aMessageIsHandledByItsReceiverAndAcked(self):
        first = self.successResultOf(self.alpha.send("beta", "note", {"n": 1}))
        second = self.successResultOf(self.alpha.send("beta", "note", {"n": 2}))
        self.assertGreater(second, first)
        self.assertEqual(self.seen, [("alpha", {"n": 1}), ("alpha", {"n": 2})])
        messages = self.successResultOf(self.alpha.messages())
        self.assertEqual([m["id"] for m in messages], [second, first])
        message = messages[0]
        self.assertEqual(set(message), set(MESSAGE_COLUMNS) | {"deliveries"})
        self.assertEqual((message["sender"], message["recipient"], message["kind"], message["reply_to"]),
                         ("alpha", "beta", "note", ""))
        self.assertEqual(json.loads(message["body"]), {"n": 2})
        [delivery] = message["deliveries"]
        self.assertEqual(set(delivery), DELIVERY_KEYS)
        self.assertEqual((delivery["host"], delivery["state"]), ("beta", "acked"))
        self.assertEqual(json.loads(delivery["result"]), {"noted": {"n": 2}})
        self.assertEqual(self.beta.info()["acked"], 2)

    def test_failuresAreMarkedWithTheReason(self):
        self.successResultOf(self.alpha.send("beta", "broken", None))
        self.successResultOf(self.alpha.send("beta", "unheard.of", None))
        unknown, broken = self.successResultOf(self.alpha.messages())
        self.assertEqual(broken["deliveries"][0]["state"], "failed")
        self.assertIn("cannot take it", broken["deliveries"][0]["result"])
        self.assertEqual(unknown["deliveries"][0]["state"], "failed")
        self.assertIn("no handler for kind 'unheard.of' on beta", unknown["deliveries"][0]["result"])
        self.assertEqual(self.beta.info()["failed"], 2)

    def test_broadcastReachesEveryMemberOnce(self):
        self.successResultOf(self.alpha.send("*", "note", "all"))
        self.assertEqual(self.seen, [("alpha", "all"), ("alpha", "all")])
        [message] = self.successResultOf(self.beta.messages())
        self.assertEqual([d["host"] for d in message["deliveries"]], ["alpha", "beta"])
        self.assertEqual({d["state"] for d in message["deliveries"]}, {"acked"})

    def test_messagesByHostKindAndLimit(self):
        self.successResultOf(self.alpha.send("beta", "note", 1))
        self.successResultOf(self.beta.send("beta", "note", 2))
        self.successResultOf(self.alpha.send("alpha", "broken", 3))
        self.assertEqual([m["body"] for m in self.successResultOf(self.alpha.messages(kind="note"))],
                         ["2", "1"])
        self.assertEqual([m["body"] for m in self.successResultOf(self.alpha.messages(host="alpha"))],
                         ["3", "1"])
        self.assertEqual([m["body"] for m in self.successResultOf(self.alpha.messages(limit=1))], ["3"])

    def test_noClientsSocket(self):
        from salvusctl.cluster.clients import NoClientsSocket

        self.failureResultOf(self.alpha.deliver("tab-1", {}), NoClientsSocket)
        self.assertEqual(self.successResultOf(self.alpha.connectedClients()), [])


def _realMembers(testcase: SynchronousTestCase) -> tuple[Any, Any]:
    cluster = MemoryCluster()
    testcase.addCleanup(cluster.stopAll, testcase)
    return cluster.member("alpha"), cluster.member("beta")


_KEYS: dict[str, set[str]] = {}


def _realKeys() -> dict[str, set[str]]:
    """The real member's host and info keys, read once from a real member."""
    if not _KEYS:
        cluster = MemoryCluster()
        member = cluster.member("probe")
        _KEYS["hosts"] = set(member.lastView()[0])
        _KEYS["info"] = set(member.info())
        box: list = []
        member.stopService().addBoth(box.append)
        cluster.advance(10)
    return _KEYS


def realHostKeys() -> set[str]:
    return _realKeys()["hosts"]


def realInfoKeys() -> set[str]:
    return _realKeys()["info"]


class RealClusterContractTests(ClusterContract, SynchronousTestCase):
    def make(self):
        return _realMembers(self)


class FakeClusterContractTests(ClusterContract, SynchronousTestCase):
    def make(self):
        alpha = FakeCluster("alpha")
        return alpha, alpha.join("beta")

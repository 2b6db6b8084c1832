"""The cluster's rules as plain functions: no clock, no store."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.cluster.domain import (
    DOWN,
    LEFT,
    UP,
    BadMessage,
    Peer,
    checkKind,
    decodeBody,
    encodeBody,
    memberName,
    peerState,
    poolMembers,
)


class PeerStateTests(SynchronousTestCase):
    def test_upWithinMissedBeats(self):
        """A host is up until it has missed C{missed} of its own heartbeats, not one more."""
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 115.0), UP)
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 115.01), DOWN)

    def test_eachHostJudgedByItsOwnInterval(self):
        """A slow-beating host is not marked down by a fast one's standards."""
        self.assertEqual(peerState("up", 100.0, 30.0, 3, 180.0), UP)
        self.assertEqual(peerState("up", 100.0, 1.0, 3, 180.0), DOWN)

    def test_noHostIsDownForTheDatabasesOwnOutage(self):
        """After the reader could begin watching again (the server restarted, or its own outage
        ended), each host has its C{missed} intervals from then to be heard from: an outage of
        the database alone marks nobody down.  Once that is over, a silent host is down."""
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 140.0, watching_since=130.0), UP)
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 145.0, watching_since=130.0), UP)
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 145.01, watching_since=130.0), DOWN)
        self.assertEqual(peerState("up", 100.0, 5.0, 3, 140.0, watching_since=90.0), DOWN)

    def test_leftStaysLeft(self):
        """A clean stop is not reported as a crash however long ago it was."""
        self.assertEqual(peerState("left", 100.0, 5.0, 3, 10_000.0), LEFT)
        self.assertEqual(peerState("left", 100.0, 5.0, 3, 100.0), LEFT)

    def test_peerFromRow(self):
        peer = Peer.fromRow(("w1", "10.0.0.2", "https://10.0.0.2:8443", 50.0, 100.0, 5.0, 3, "0.1.0", "up"),
                            now=130.0)
        self.assertEqual(peer.state, DOWN)
        data = peer.asData()
        self.assertEqual(data["age"], 30.0)
        self.assertEqual(data["admin_url"], "https://10.0.0.2:8443")


class MessageShapeTests(SynchronousTestCase):
    def test_kinds(self):
        self.assertEqual(checkKind("deploy.restart"), "deploy.restart")
        for bad in ("", "Ping", "1x", "a b", None, "x" * 64):
            with self.assertRaises(BadMessage):
                checkKind(bad)

    def test_bodyRoundTrip(self):
        body = {"deploy": "web", "batch": 2, "tags": ["a", "b"]}
        self.assertEqual(decodeBody(encodeBody(body)), body)

    def test_bodyNotJSON(self):
        """A body that is not JSON data is refused with the reason, before anything is stored."""
        with self.assertRaises(BadMessage) as e:
            encodeBody({"when": object()})
        self.assertIn("not JSON data", str(e.exception))
        with self.assertRaises(BadMessage):
            encodeBody(float("nan"))

    def test_bodyTooLarge(self):
        with self.assertRaises(BadMessage) as e:
            encodeBody("x" * 70_000)
        self.assertIn("at most", str(e.exception))

    def test_badStoredJSON(self):
        with self.assertRaises(BadMessage) as e:
            decodeBody("{not json")
        self.assertIn("not valid JSON", str(e.exception))


class PoolMembersTests(SynchronousTestCase):
    ROWS = [
        ("w1", "worker:0", "worker", "10.0.0.2", 8001, "ready"),
        ("w1", "worker:1", "worker", "10.0.0.2", 8002, "drain"),
        ("w2", "worker:0", "worker", "10.0.0.3", 8001, "ready"),
        ("w3", "worker:0", "worker", "10.0.0.4", 8001, "ready"),
        ("w1", "cache:0", "cache", "10.0.0.2", 11211, "ready"),
    ]

    def test_onlyTheDeployOnHostsThatAreUp(self):
        """Instances of a down or departed host take no traffic: its rows may be stale."""
        members = poolMembers(self.ROWS, {"w1": UP, "w2": DOWN, "w3": LEFT}, "worker")
        self.assertEqual(members, {
            "worker:0@w1": ("10.0.0.2", 8001, "ready"),
            "worker:1@w1": ("10.0.0.2", 8002, "drain"),
        })

    def test_unknownHostIsNotUp(self):
        self.assertEqual(poolMembers(self.ROWS, {}, "worker"), {})

    def test_memberNameHasNoSlash(self):
        """C{salvusctl balancer drain SERVICE/GROUP/HOST} splits on '/'."""
        self.assertNotIn("/", memberName("w1", "worker:0"))

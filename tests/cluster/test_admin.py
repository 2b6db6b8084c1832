"""The cluster in the admin: C{salvus.cluster.*} over XML-RPC and the C{/cluster} page, driven in
memory (StubTreq) over real cluster members on a MemoryStore."""

from __future__ import annotations

import os
import xmlrpc.client as xmlrpclib

from twisted.internet.defer import fail
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.faults import Faults
from salvusctl.cluster.handlers import NoPong
from tests.admin.helpers import OP, VIEW, Harness, tempDir
from tests.cluster.helpers import MemoryCluster


class ClusterAdminTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = MemoryCluster()
        self.cluster.clock.advance(1_700_000_000)
        self.a = self.cluster.member("testhost")
        self.b = self.cluster.member("w1")
        self.got = []
        self.b.addHandler("note", lambda m: self.got.append(m.body) or "noted")
        tmp = tempDir(self)
        os.makedirs(tmp, exist_ok=True)
        self.h = Harness(tmp, services={"cluster": self.a}, clock=self.cluster.clock)
        self.cluster.advance(5)

    def tearDown(self):
        self.cluster.stopAll(self)

    def call(self, method, *params, user=OP):
        return self.h.rpc(self, method, *params, user=user)

    def assertFault(self, result, code, words=""):
        self.assertIsInstance(result, xmlrpclib.Fault, result)
        self.assertEqual(result.faultCode, code, result.faultString)
        self.assertIn(words, result.faultString)

    def test_hosts(self):
        hosts = self.call("salvus.cluster.hosts", user=VIEW)
        self.assertEqual([(h["name"], h["state"]) for h in hosts], [("testhost", "up"), ("w1", "up")])
        self.assertEqual(hosts[1]["address"], "10.9.0.2")

    def test_info(self):
        info = self.call("salvus.cluster.info", user=VIEW)
        self.assertEqual(info["name"], "testhost")
        self.assertFalse(info["shared"])
        self.assertIn("deploy.restart", info["handlers"])

    def test_sendIsForOperators(self):
        message_id = self.call("salvus.cluster.send", "w1", "note", {"text": "hello"})
        self.assertIsInstance(message_id, int)
        self.assertEqual(self.got, [{"text": "hello"}])
        self.assertFault(self.call("salvus.cluster.send", "w1", "note", {}, user=VIEW),
                         Faults.PERMISSION_DENIED, "needs the operator role")
        self.assertEqual(len(self.got), 1)

    def test_sendFaults(self):
        self.assertFault(self.call("salvus.cluster.send", "nobody", "note", {}), Faults.BAD_NAME,
                         "no host 'nobody' in the cluster")
        self.assertFault(self.call("salvus.cluster.send", "w1", "Not A Kind", {}), Faults.BAD_ARGUMENTS,
                         "bad message kind")
        self.assertFault(self.call("salvus.cluster.send", "w1", 7, {}), Faults.BAD_ARGUMENTS,
                         "kind must be a string")

    def test_pingAndMessages(self):
        rtt = self.call("salvus.cluster.ping", "w1", 5)
        self.assertEqual(rtt, 0.0)
        messages = self.call("salvus.cluster.messages", "", "", 10, user=VIEW)
        self.assertEqual([m["kind"] for m in messages], ["pong", "ping"])
        self.assertEqual(messages[1]["deliveries"][0]["host"], "w1")
        self.assertEqual(messages[1]["deliveries"][0]["state"], "acked")
        only = self.call("salvus.cluster.messages", "", "ping", 10, user=VIEW)
        self.assertEqual([m["kind"] for m in only], ["ping"])
        self.assertFault(self.call("salvus.cluster.messages", "", "", 0), Faults.BAD_ARGUMENTS, "limit")
        self.assertFault(self.call("salvus.cluster.ping", "w1", 0), Faults.BAD_ARGUMENTS, "timeout")

    def test_noPongIsAOneLineFault(self):
        self.a.ping = lambda host, timeout: fail(NoPong(f"no pong from {host} within {timeout:g}s"))
        self.assertFault(self.call("salvus.cluster.ping", "w1", 1), Faults.FAILED,
                         "no pong from w1 within 1s")

    def test_page(self):
        self.call("salvus.cluster.send", "w1", "note", "x")
        response, body = self.h.request(self, "GET", "/cluster", user=VIEW)
        self.assertEqual(response.code, 200)
        text = body.decode()
        self.assertIn("a cluster of one", text)
        self.assertIn('id="cluster-w1"', text)
        self.assertIn("w1: acked", text)
        self.assertNotIn("/cluster/ping", text)  # viewers get no controls
        _, body = self.h.request(self, "GET", "/cluster")
        self.assertIn('action="/cluster/ping"', body.decode())
        _, body = self.h.request(self, "GET", "/")
        self.assertIn("Cluster hosts up", body.decode())

    def test_pingFromThePage(self):
        _, page = self.h.request(self, "GET", "/cluster")
        token = page.decode().split('name="csrf" value="')[1].split('"')[0]
        response, _ = self.h.request(
            self, "POST", "/cluster/ping", data={"csrf": token, "host": "w1"},
            headers={b"Content-Type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertIn("pong+from+w1", location)


class NoClusterTests(SynchronousTestCase):
    def test_hostWithoutACluster(self):
        """A host that declares no Cluster answers NO_SERVICE and its page says so."""
        tmp = tempDir(self)
        os.makedirs(tmp, exist_ok=True)
        h = Harness(tmp)
        result = h.rpc(self, "salvus.cluster.hosts")
        self.assertIsInstance(result, xmlrpclib.Fault)
        self.assertEqual(result.faultCode, Faults.NO_SERVICE)
        _, body = h.request(self, "GET", "/cluster")
        self.assertIn("This host runs no cluster", body.decode())

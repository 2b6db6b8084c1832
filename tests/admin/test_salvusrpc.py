"""The salvus.* namespace: balancer verbs, monitor queries, alerts, store retention, diff/reconcile."""

from __future__ import annotations

import os
import xmlrpc.client as xmlrpclib

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.extensions import IAlertSource, ILogClearing, IReconcilable
from salvusctl.admin.faults import Faults
from salvusctl.admin.state import AdminState
from salvusctl.interfaces import IBalancerControl, IMonitor, ISupervisor
from salvusctl.store import makeStore
from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor
from tests.admin.helpers import OP, VIEW, Harness, HarnessTestCase, basic, tempDir, writeUsers


class FakesTests(SynchronousTestCase):
    def test_fakesProvideTheInterfaces(self):
        """The public fakes cannot drift from the interfaces they stand in for."""
        supervisor = FakeSupervisor()
        verifyObject(ISupervisor, supervisor)
        self.assertFalse(IReconcilable.providedBy(supervisor), "nor has the real supervisor a configDiff")
        verifyObject(ILogClearing, supervisor)
        verifyObject(IBalancerControl, FakeBalancer())
        self.assertFalse(IReconcilable.providedBy(FakeBalancer()), "the real balancer answers diff() ops")
        verifyObject(IMonitor, FakeMonitor())
        verifyObject(IAlertSource, FakeAlerts())


class SalvusNamespaceTests(HarnessTestCase):
    def test_hostInfoAndWhoami(self):
        info = self.call("salvus.hostInfo")
        self.assertEqual(info["services"], ["alerts", "balancer", "monitor", "supervisor"])
        self.assertEqual(self.call("salvus.whoami", user=VIEW), {"name": "view", "role": "viewer"})

    def test_balancerVerbs(self):
        snapshot = self.call("salvus.balancerSnapshot")
        self.assertEqual(snapshot["services"]["www"]["groups"]["web"]["hosts"][0]["name"], "127.0.0.1:8000")
        self.assertIs(self.call("salvus.balancerAddHost", "www", "web", "10.0.0.5", 80, 2, "big"), True)
        self.assertIs(self.call("salvus.balancerSetState", "www", "web", "big", "drain"), True)
        self.assertIs(self.call("salvus.balancerSetWeight", "www", "web", "big", 7), True)
        self.assertIs(self.call("salvus.balancerSetScheduler", "www", "web", "leastconns"), True)
        group = self.h.balancer.services["www"]["groups"]["web"]
        self.assertEqual((group["hosts"]["big"]["state"], group["hosts"]["big"]["weight"]), ("drain", 7))
        self.assertEqual(group["scheduler"], "leastconns")
        self.assertIs(self.call("salvus.balancerRemoveHost", "www", "web", "big"), True)
        self.assertNotIn("big", group["hosts"])

    def test_balancerStructureVerbs(self):
        """Services and groups come and go; a group can be emptied; a bad host retried now."""
        self.assertIs(self.call("salvus.balancerAddService", "api", ["tcp:8081:interface=127.0.0.1"]), True)
        self.assertIs(self.call("salvus.balancerAddGroup", "api", "blue", "leastconns"), True)
        self.assertIs(self.call("salvus.balancerAddHost", "api", "blue", "10.0.0.1", 80), True)
        self.assertIs(self.call("salvus.balancerAddHost", "api", "blue", "10.0.0.2", 80), True)
        self.assertIs(self.call("salvus.balancerRetryHost", "api", "blue", "10.0.0.1:80"), True)
        self.assertEqual(self.h.balancer.retried, ["api/blue/10.0.0.1:80"])
        self.assertEqual(self.call("salvus.balancerRemoveAllHosts", "api", "blue"), 2)
        self.assertEqual(
            self.call("salvus.balancerRemoveAllHosts", "api", "green").faultCode, Faults.BAD_NAME
        )
        self.assertIs(self.call("salvus.balancerRemoveGroup", "api", "blue"), True)
        self.assertIs(self.call("salvus.balancerRemoveService", "api"), True)
        self.assertNotIn("api", self.h.balancer.services)
        fault = self.call("salvus.balancerAddService", "x", "tcp:1")
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)

    def test_balancerWithoutOptionalVerbs(self):
        """A balancer offering only IBalancerControl answers the extra verbs with a clear fault."""

        class Minimal:
            def __init__(self, inner):
                self.snapshot, self.removeHost = inner.snapshot, inner.removeHost

        h = Harness(self.tmp, services={"balancer": Minimal(FakeBalancer())})
        fault = h.rpc(self, "salvus.balancerRetryHost", "www", "web", "127.0.0.1:8000")
        self.assertEqual(fault.faultCode, Faults.NO_SERVICE)
        self.assertIn("cannot retry a host", fault.faultString)
        self.assertEqual(h.rpc(self, "salvus.balancerRemoveAllHosts", "www", "web"), 2)

    def test_balancerErrors(self):
        self.assertEqual(
            self.call("salvus.balancerSetState", "www", "web", "ghost", "up").faultCode, Faults.BAD_NAME
        )
        fault = self.call("salvus.balancerSetState", "www", "web", "127.0.0.1:8000", "sideways")
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        self.assertIn("use up, drain or down", fault.faultString)
        fault = self.call("salvus.balancerSetScheduler", "www", "web", "magic")
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        fault = self.call("salvus.balancerAddHost", "www", "web", "10.0.0.5", "80")
        self.assertIn("port must be an integer", fault.faultString)
        fault = self.call("salvus.balancerSetWeight", "www", "web", "127.0.0.1:8000", 1, user=VIEW)
        self.assertEqual(fault.faultCode, Faults.PERMISSION_DENIED)

    def test_bigCountersMarshal(self):
        """Byte counters beyond XML-RPC's 32-bit ints travel as doubles instead of failing."""
        self.h.balancer.services["www"]["groups"]["web"]["hosts"]["127.0.0.1:8000"]["bytes_out"] = 2**40
        snapshot = self.call("salvus.balancerSnapshot")
        self.assertEqual(snapshot["services"]["www"]["groups"]["web"]["hosts"][0]["bytes_out"], float(2**40))

    def test_monitor(self):
        now = self.h.clock.seconds()
        self.h.monitor.record("web:0", now - 100, 10.0, 1000)
        self.h.monitor.record("web:1", now - 50, 5.0, 2000)
        self.h.monitor.record("web:0", now - 10, 30.0, 3000)
        self.assertEqual(self.call("salvus.monitorLatest")["web:0"]["cpu_percent"], 30.0)
        history = self.call("salvus.monitorHistory", "web:0", -60)
        self.assertEqual([s["cpu_percent"] for s in history], [30.0])
        history = self.call("salvus.monitorHistory", "web:0", now - 1000, now - 50)
        self.assertEqual([s["cpu_percent"] for s in history], [10.0])
        self.assertEqual(self.call("salvus.monitorLeastLoaded", "web"), "web:1")
        self.assertEqual(self.call("salvus.monitorLeastLoaded", "none"), "")
        self.assertEqual(self.call("salvus.monitorHistory", 5, 0).faultCode, Faults.BAD_ARGUMENTS)

    def test_alerts(self):
        self.h.alerts.fire("disk", "/var", "90% full", 5)
        self.h.alerts.fire("old", "", "", 1, severity="info")
        self.h.alerts.clear("old", "", 2)
        self.assertEqual([a["rule"] for a in self.call("salvus.alerts")], ["disk"])
        self.assertEqual([a["rule"] for a in self.call("salvus.alerts", True)], ["old", "disk"])

    def test_diffAndReconcile(self):
        """A host composed in code (no config file to re-read): what differs is what changed at
        run time in the balancer; the supervisor, like the real one, has no diff of its own."""
        self.assertEqual(self.call("salvus.diff"), {"balancer": {"added": [], "changed": [], "removed": []}})
        self.h.balancer.removeHost("www", "web", "127.0.0.1:8001")
        diff = self.call("salvus.diff")
        self.assertEqual(diff["balancer"]["added"], ["www/web/127.0.0.1:8001"])
        self.assertEqual(self.call("salvus.reconcile", user=VIEW).faultCode, Faults.PERMISSION_DENIED)
        self.call("salvus.reconcile")
        self.assertIn("127.0.0.1:8001", self.h.balancer.services["www"]["groups"]["web"]["hosts"])
        self.assertEqual(self.call("salvus.diff")["balancer"]["added"], [])

    def test_absentServices(self):
        h = Harness(self.tmp, services={})
        for method, params in [
            ("salvus.balancerSnapshot", ()),
            ("salvus.monitorLatest", ()),
            ("salvus.alerts", ()),
            ("salvus.storeInfo", ()),
        ]:
            fault = h.rpc(self, method, *params)
            self.assertEqual(fault.faultCode, Faults.NO_SERVICE, method)
            self.assertIn("this host", fault.faultString)
        self.assertEqual(h.rpc(self, "salvus.diff"), {})


class StoreRetentionTests(TestCase):
    """storeInfo / storePrune against the real SQLite store, over a real socket."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.store = makeStore("sqlite:" + os.path.join(self.tmp, "salvus.db"), reactor)
        yield self.store.start()
        self.addCleanup(self.store.close)
        now = reactor.seconds()
        sid = yield self.store.recordServiceStart("web", None, "127.0.0.1", 8000, None, 1234, None)
        rows = [{"service_id": sid, "timestamp": now - age, "percent_cpu": 1.0} for age in (7200, 5000, 30)]
        yield self.store.writeStatus(rows)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        state = AdminState(services={}, clock=reactor, host_name="h", store=self.store)
        self.service = AdminService(
            reactor, [Admin("tcp:0:interface=127.0.0.1", users=users)], state, self.tmp
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        self.url = f"http://127.0.0.1:{ports[0].getHost().port}/RPC2"

    @defer.inlineCallbacks
    def call(self, method, *params, user=OP):
        body = xmlrpclib.dumps(params, method).encode()
        headers = {**basic(user), b"Content-Type": [b"text/xml"]}
        response = yield treq.post(self.url, data=body, headers=headers, reactor=reactor, persistent=False)
        content = yield response.content()
        try:
            return xmlrpclib.loads(content)[0][0]
        except xmlrpclib.Fault as f:
            return f

    @defer.inlineCallbacks
    def test_infoAndPrune(self):
        info = yield self.call("salvus.storeInfo")
        self.assertEqual(info["dialect"], "sqlite")
        self.assertEqual(info["samples"], 3)
        fault = yield self.call("salvus.storePrune", 3600, user=VIEW)
        self.assertEqual(fault.faultCode, Faults.PERMISSION_DENIED)
        fault = yield self.call("salvus.storePrune", 1)
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        left = yield self.call("salvus.storePrune", 3600)
        self.assertEqual(left, 1)
        info = yield self.call("salvus.storeInfo")
        self.assertEqual(info["samples"], 1)


class RollingRestartTests(HarnessTestCase):
    """salvus.restartDeploy / restartGroup / restartAll over the public fake supervisor."""

    def setUp(self):
        super().setUp()
        self.events = []
        self.h.supervisor.addObserver(lambda name, old, new, info: self.events.append((name, new.name)))

    def pids(self, deploy):
        return {i["name"]: i["pid"] for i in self.h.supervisor.instanceInfos() if i["group"] == deploy}

    def test_restartDeployIsRolling(self):
        """One instance is back RUNNING before the next one stops: the deploy never goes dark."""
        before = self.pids("web")
        self.assertEqual(self.call("salvus.restartDeploy", "web", 1), ["web"])
        after = self.pids("web")
        self.assertTrue(all(after[n] != before[n] for n in before), (before, after))
        self.assertEqual(
            [e for e in self.events if e[1] in ("STOPPED", "RUNNING")],
            [("web:0", "STOPPED"), ("web:0", "RUNNING"), ("web:1", "STOPPED"), ("web:1", "RUNNING")],
        )

    def test_batchDefaultsToOne(self):
        self.assertEqual(self.call("salvus.restartDeploy", "web"), ["web"])
        self.assertEqual(self.events[1], ("web:0", "STOPPED"))
        self.assertEqual(self.events[3], ("web:0", "RUNNING"))

    def test_restartGroupAndAll(self):
        self.assertEqual(self.call("salvus.restartGroup", "worker", 2), ["worker"])
        before = {**self.pids("web"), **self.pids("worker")}
        self.assertEqual(self.call("salvus.restartAll", 1), ["web", "worker"])
        after = {**self.pids("web"), **self.pids("worker")}
        self.assertTrue(all(after[n] != before[n] for n in before))

    def test_unknownNamesAreBadName(self):
        """An unknown deploy or group is BAD_NAME naming it, and nothing is restarted."""
        fault = self.call("salvus.restartDeploy", "ghost", 1)
        self.assertEqual(fault.faultCode, Faults.BAD_NAME)
        self.assertIn("no deploy 'ghost'", fault.faultString)
        fault = self.call("salvus.restartGroup", "ghosts", 1)
        self.assertEqual(fault.faultCode, Faults.BAD_NAME)
        self.assertIn("no group 'ghosts'", fault.faultString)
        self.assertEqual(self.events, [])

    def test_badBatchIsBadArguments(self):
        for batch, words in ((0, "at least 1"), (-2, "at least 1"), ("2", "integer"), (True, "integer"),
                             (1.5, "integer")):
            for method, name in (("salvus.restartDeploy", "web"), ("salvus.restartGroup", "web")):
                fault = self.call(method, name, batch)
                self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS, (method, batch))
                self.assertIn(words, fault.faultString)
        self.assertEqual(self.call("salvus.restartAll", 0).faultCode, Faults.BAD_ARGUMENTS)
        self.assertEqual(self.call("salvus.restartDeploy", 7, 1).faultCode, Faults.BAD_ARGUMENTS)
        self.assertEqual(self.events, [])

    def test_viewersMayNotRestart(self):
        for method, args in (("salvus.restartDeploy", ("web", 1)), ("salvus.restartGroup", ("web", 1)),
                             ("salvus.restartAll", (1,))):
            fault = self.call(method, *args, user=VIEW)
            self.assertEqual(fault.faultCode, Faults.PERMISSION_DENIED)
        self.assertEqual(self.events, [])

    def test_noSupervisor(self):
        h = Harness(self.tmp, services={"balancer": FakeBalancer()})
        fault = h.rpc(self, "salvus.restartDeploy", "web", 1)
        self.assertEqual(fault.faultCode, Faults.NO_SERVICE)

    def test_secondRestartOfTheSameDeployIsRefused(self):
        """Two interleaved rolling restarts could stop every instance at once: the second fails;
        once the first is done, the deploy can be restarted again."""
        supervisor = FakeSupervisor({"web": 2}, clock=self.h.clock, stop_delay=1.0)
        h = Harness(self.tmp, services={"supervisor": supervisor}, clock=self.h.clock)

        def slowRestart():
            d = h.treq.request(
                "POST", "http://localhost/RPC2", headers={**basic(OP), b"Content-Type": [b"text/xml"]},
                data=xmlrpclib.dumps(("web", 1), "salvus.restartDeploy").encode(),
            )
            h.treq.flush()
            self.assertNoResult(d)
            return d

        def finish(d):
            self.h.clock.advance(1)
            self.h.clock.advance(1)
            h.treq.flush()
            response = self.successResultOf(d)
            return xmlrpclib.loads(self.successResultOf(response.content()))[0][0]

        d = slowRestart()
        fault = h.rpc(self, "salvus.restartDeploy", "web", 1)
        self.assertEqual(fault.faultCode, Faults.FAILED)
        self.assertIn("already in progress", fault.faultString)
        self.assertEqual(h.rpc(self, "salvus.restartAll", 1).faultCode, Faults.FAILED)
        self.assertEqual(finish(d), ["web"])
        self.assertEqual(finish(slowRestart()), ["web"])

    def test_aBatchThatDoesNotComeBackStopsTheRestart(self):
        """When a restarted instance fails to start, the rolling restart stops there: the
        instances not yet restarted keep serving, and the fault says why."""
        self.h.supervisor.failNextStart("web:0", "exec: ./server: not found")
        pid = self.h.supervisor.instanceInfo("web:1")["pid"]
        fault = self.call("salvus.restartDeploy", "web", 1)
        self.assertEqual(fault.faultCode, Faults.ABNORMAL_TERMINATION)
        self.assertIn("restart of web stopped: exec: ./server: not found", fault.faultString)
        self.assertEqual(self.h.supervisor.instanceInfo("web:1")["pid"], pid)
        self.assertEqual(self.h.supervisor.instanceInfo("web:1")["state"], "RUNNING")
        self.assertEqual(self.call("salvus.restartDeploy", "web", 1), ["web"])

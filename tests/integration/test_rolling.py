"""A rolling restart through the real admin, supervisor and balancer, under client load.

The claim of the deploys-behind-the-balancer feature: C{salvusctl restart "worker:*"} on a balanced
deploy restarts every instance while clients going through the balancer see no failed request.
Everything here is real: three demo HTTP workers as child processes, the balancer proxying real
TCP on loopback, the admin's XML-RPC on a real socket, and C{salvusctl} run as a child process.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from salvusctl.admin import Admin
from salvusctl.admin.users import UsersFile
from salvusctl.balancer.declare import Group, HealthCheck
from salvusctl.host import Host
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.deploy import Probe
from tests.helpers import REPO, LoadLoops, childEnv, waitFor
from tests.integration.helpers import OPERATOR

LOOPS = 4  # concurrent client loops
MAX_REQUESTS = 2000  # per loop: the load is bounded in count as well as in time
REQUEST_TIMEOUT = 5.0


class _OneGet(protocol.Protocol):
    """One HTTP/1.0 GET: the server closes the connection after the response."""

    def __init__(self, done: defer.Deferred):
        self.done = done
        self.data = b""

    def connectionMade(self):
        self.transport.write(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(self.data)


class _Factory(protocol.ClientFactory):
    def __init__(self, done: defer.Deferred):
        self.done = done

    def buildProtocol(self, addr):
        return _OneGet(self.done)


@defer.inlineCallbacks
def _get(port: int) -> defer.Deferred:
    """Fires with the body of one response, or fails (refused, reset, timeout, not a 200)."""
    done: defer.Deferred = defer.Deferred()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    proto = yield endpoint.connect(_Factory(done)).addTimeout(REQUEST_TIMEOUT, reactor)
    try:
        raw = yield done.addTimeout(REQUEST_TIMEOUT, reactor)
    finally:
        if proto.transport.connected:
            proto.transport.abortConnection()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"bad response {head[:60]!r}")
    return body.decode()


class RollingRestartTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        base = os.path.abspath(self.mktemp())
        var = os.path.join(base, "var")
        os.makedirs(var)
        self.base = base
        users = os.path.join(base, "admin-users")
        UsersFile(users).add(*OPERATOR, role="operator")
        host = Host(name="rolling", store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
        host.add(Deploy(
            "worker",
            command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
            port="auto",
            numprocs=3,
            cwd=REPO,
            env={"PYTHONPATH": REPO},
            startsecs=0.2,
            stopwaitsecs=5,
            probe=Probe(kind="tcp", interval=0.2, timeout=1.0),
        ))
        host.balance(
            "web",
            listen=["tcp:0:interface=127.0.0.1"],
            groups=[Group("workers", deploy="worker", health=HealthCheck(interval=0.5, timeout=1.0))],
        )
        host.add(Admin("tcp:0:interface=127.0.0.1", users=users))
        self.top = host.build(reactor)
        self.services = host.context.services
        self.top.startService()
        self.addCleanup(self.stop)
        yield self.services["supervisor"].ready
        yield self.services["admin"].ready
        admin_port = next(p.getHost().port for p in self.services["admin"].ports
                          if hasattr(p.getHost(), "port"))
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        balanced = self.services["balancer"].balanced["web"]
        yield balanced.listening
        self.port = balanced.ports[0].getHost().port
        yield waitFor(lambda: len(self.upHosts()) == 3, timeout=20)

    @defer.inlineCallbacks
    def stop(self):
        yield self.top.stopService()
        from salvusctl.supervisor import oscalls

        oscalls._prctl(oscalls.PR_SET_CHILD_SUBREAPER, 0)

    def upHosts(self) -> list[str]:
        group = self.services["balancer"].snapshot()["services"]["web"]["groups"]["workers"]
        return [h["name"] for h in group["hosts"] if h["state"] == "up"]

    def pids(self) -> dict[str, int]:
        return {i["name"]: i["pid"] for i in self.services["supervisor"].instanceInfos()}

    def salvusctl(self, *argv: str) -> defer.Deferred:
        from twisted.internet import utils

        env = childEnv(SALVUS_URL=self.admin_url, SALVUS_USER=OPERATOR[0], SALVUS_PASSWORD=OPERATOR[1],
                       HOME=self.base)
        d = utils.getProcessOutputAndValue(sys.executable, ["-m", "salvusctl.cli", *argv], env=env, path=REPO)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    @defer.inlineCallbacks
    def underLoad(self, action) -> defer.Deferred:
        """Run C{action()} while LOOPS client loops GET through the balancer; fires with
        (action's result, bodies, failures)."""
        load = LoadLoops(lambda: _get(self.port), LOOPS, MAX_REQUESTS)
        result = yield load.during(action)
        return result, load.bodies, load.failures

    @defer.inlineCallbacks
    def test_rollingRestartUnderLoadFailsNoRequest(self):
        """salvusctl restart "worker:*" replaces every worker while clients of the balancer see
        zero failed requests: each instance is drained before it stops and back before the next."""
        before = self.pids()
        self.assertEqual(len(set(before.values())), 3)
        (out, err, code), bodies, failures = yield self.underLoad(
            lambda: self.salvusctl("restart", "worker:*")
        )
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(failures, [])
        self.assertGreater(len(bodies), 50)
        after = self.pids()
        self.assertEqual(set(after), set(before))
        for name in before:
            self.assertNotEqual(after[name], before[name], name)
            self.assertEqual(self.services["supervisor"].instanceInfo(name)["state"], "RUNNING")
        # Every worker answered during the run (before and after its restart).
        self.assertEqual({b.split()[2] for b in bodies}, set(before))
        yield waitFor(lambda: len(self.upHosts()) == 3, timeout=20)

    @defer.inlineCallbacks
    def test_noRollingStopsAllAtOnceAndClientsWait(self):
        """The contrast: --no-rolling stops every worker at once, so for a moment the group has
        no host.  The stops were planned (drained), so the balancer holds the clients of that
        gap until a worker is back: they wait instead of failing."""
        balanced = self.services["balancer"].balanced["web"]
        before = self.pids()
        (out, err, code), bodies, failures = yield self.underLoad(
            lambda: self.salvusctl("restart", "--no-rolling", "worker:*")
        )
        self.assertEqual(code, 0, err)
        self.assertGreater(balanced.held, 0)  # the group was empty: all three were down at once
        self.assertEqual(failures, [])
        after = self.pids()
        self.assertTrue(all(after[n] != before[n] for n in before), (before, after))

    def rpc(self, method: str, *args) -> defer.Deferred:
        """One XML-RPC call with the stdlib client, in a thread (the reactor keeps serving)."""
        import xmlrpc.client

        from twisted.internet import threads

        url = f"http://{OPERATOR[0]}:{OPERATOR[1]}@{self.admin_url[len('http://'):]}/RPC2"

        def call():
            with xmlrpc.client.ServerProxy(url) as proxy:
                try:
                    return getattr(proxy.salvus, method)(*args)
                except xmlrpc.client.Fault as f:
                    return f

        return threads.deferToThread(call)

    @defer.inlineCallbacks
    def test_xmlrpcVerbInBatchesOfTwo(self):
        """salvus.restartDeploy(worker, 2) on the real supervisor: two of three at a time, the
        third keeps serving; an unknown deploy or group is a clear fault from the real one too."""
        before = self.pids()
        result, bodies, failures = yield self.underLoad(lambda: self.rpc("restartDeploy", "worker", 2))
        self.assertEqual(result, ["worker"])
        self.assertEqual(failures, [])
        self.assertGreater(len(bodies), 20)
        after = self.pids()
        self.assertTrue(all(after[n] != before[n] for n in before), (before, after))
        fault = yield self.rpc("restartDeploy", "ghost", 1)
        self.assertEqual((fault.faultCode, fault.faultString), (10, "BAD_NAME: no deploy 'ghost'"))
        fault = yield self.rpc("restartGroup", "ghosts", 1)
        self.assertEqual((fault.faultCode, fault.faultString), (10, "BAD_NAME: no group 'ghosts'"))
        self.assertEqual((yield self.rpc("restartGroup", "worker", 1)), ["worker"])

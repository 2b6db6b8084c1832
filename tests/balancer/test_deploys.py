"""Groups whose hosts are a deploy's instances: join on ready, drain before stop, leave on stop.

The unit tests drive a L{DeployPool} with a C{Clock} and a fake supervisor; the end-to-end test runs
a real host (real supervisor, real balancer, SQLite store, three demo-worker processes) and restarts
the deploy under client load: not one request may fail.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer import states
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck
from salvusctl.balancer.deploys import DeployPool
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy, Probe
from salvusctl.supervisor.states import ProcessState
from tests.helpers import REPO, waitFor

S = ProcessState


class FakeSupervisor:
    """The supervisor's observer / before-stop surface, driven by hand."""

    def __init__(self, infos=()):
        self.infos = list(infos)
        self.observers = []
        self.hooks = []

    def addObserver(self, o):
        self.observers.append(o)

    def removeObserver(self, o):
        if o in self.observers:
            self.observers.remove(o)

    def addBeforeStop(self, h):
        self.hooks.append(h)

    def removeBeforeStop(self, h):
        if h in self.hooks:
            self.hooks.remove(h)

    def instanceInfos(self):
        return list(self.infos)

    rolling: list[str]

    def addRolling(self, deploy):
        self.__dict__.setdefault("rolling", []).append(deploy)

    def removeRolling(self, deploy):
        self.rolling.remove(deploy)

    def emit(self, name, old, new, event, deploy="worker", port=9000, ready=False):
        info = {"name": name, "deploy": deploy, "port": port, "ready": ready, "event": event}
        for o in list(self.observers):
            o(name, old, new, info)

    def beforeStop(self, name, deploy="worker"):
        return [h(name, {"name": name, "deploy": deploy}) for h in self.hooks]


def info(name, port, ready=True, deploy="worker"):
    return {"name": name, "deploy": deploy, "port": port, "ready": ready, "state": "RUNNING"}


class DeployPoolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        decl = Balanced("web", listen=[], groups=[Group("workers", deploy="worker")])
        self.balancer = BalancerService(self.clock, [decl])
        self.sup = FakeSupervisor([info("worker:0", 9000), info("worker:1", 9001, ready=False),
                                   info("other:0", 9100, deploy="other")])
        self.pool = DeployPool(self.clock, self.balancer, "web", "workers", "worker", self.sup,
                               drain_timeout=5.0, poll=0.1)
        self.pool.setServiceParent(self.balancer)
        self.balancer.startService()
        self.addCleanup(self.balancer.stopService)
        self.group = self.balancer.balanced["web"].groups["workers"]

    def test_ready_instances_join_at_start(self):
        """Only the deploy's instances that are ready already are in the pool at start."""
        self.assertEqual(list(self.group.hosts), ["worker:0"])
        host = self.group.hosts["worker:0"]
        self.assertEqual((host.address, host.port, host.state), ("127.0.0.1", 9000, states.UP))

    def test_ready_event_joins_and_unready_leaves(self):
        """An instance takes traffic once ready and leaves as soon as it is not."""
        self.sup.emit("worker:1", S.RUNNING, S.RUNNING, "ready", port=9001, ready=True)
        self.assertEqual(sorted(self.group.hosts), ["worker:0", "worker:1"])
        self.assertIn(self.group.hosts["worker:1"], self.group.rotation)
        self.sup.emit("worker:1", S.RUNNING, S.RUNNING, "unready", port=9001)
        self.assertEqual(list(self.group.hosts), ["worker:0"])

    def test_stop_state_leaves(self):
        """A state change away from RUNNING removes the host even without an 'unready' event."""
        self.sup.emit("worker:0", S.RUNNING, S.EXITED, "state")
        self.assertEqual(list(self.group.hosts), [])

    def test_other_deploys_are_ignored(self):
        """Events and stops of another deploy never touch the group."""
        self.sup.emit("other:0", S.RUNNING, S.RUNNING, "ready", deploy="other", port=9100, ready=True)
        self.assertEqual(list(self.group.hosts), ["worker:0"])
        self.assertEqual(self.sup.beforeStop("other:0", deploy="other"), [None])

    def test_drain_waits_for_open_connections_then_leave(self):
        """Before the stop: no new connections, the stop waits until the open ones end; then leave."""
        host = self.group.hosts["worker:0"]
        host.active = 2
        [d] = self.sup.beforeStop("worker:0")
        self.assertEqual(host.state, states.DRAIN)
        self.assertNotIn(host, self.group.rotation)
        self.assertNoResult(d)
        self.clock.advance(1)
        host.active = 1
        self.clock.advance(1)
        self.assertNoResult(d)
        host.active = 0
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertIn("worker:0", self.group.hosts)  # still listed until the supervisor says unready
        self.sup.emit("worker:0", S.RUNNING, S.STOPPING, "unready")
        self.assertEqual(list(self.group.hosts), [])

    def test_idle_host_drains_at_once(self):
        """A host with no open connection does not delay its stop."""
        self.assertEqual(self.sup.beforeStop("worker:0"), [None])
        self.assertEqual(self.group.hosts["worker:0"].state, states.DRAIN)

    def test_drain_is_bounded_by_timeout(self):
        """A connection that never ends holds the stop only C{drain_timeout} seconds."""
        host = self.group.hosts["worker:0"]
        host.active = 1
        [d] = self.sup.beforeStop("worker:0")
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.successResultOf(d)
        self.assertEqual(_drainPolls(self.clock), [])

    def test_cancelled_drain_leaves_no_timer(self):
        """The supervisor cancels a hook that outlives its own timeout: no poll stays armed."""
        host = self.group.hosts["worker:0"]
        host.active = 1
        [d] = self.sup.beforeStop("worker:0")
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.pool._drains, {})
        self.assertEqual(_drainPolls(self.clock), [])

    def test_rejoin_after_drain_is_up(self):
        """An instance that was drained but not stopped (stop refused) becomes up again when ready."""
        self.sup.beforeStop("worker:0")
        self.sup.emit("worker:0", S.RUNNING, S.RUNNING, "ready", port=9000, ready=True)
        self.assertEqual(self.group.hosts["worker:0"].state, states.UP)

    def test_moved_port_replaces_host(self):
        """An instance that comes back on another port is balanced on the new one."""
        self.sup.emit("worker:0", S.RUNNING, S.RUNNING, "ready", port=9005, ready=True)
        self.assertEqual(self.group.hosts["worker:0"].port, 9005)

    def test_stop_unsubscribes_and_releases_drains(self):
        """Stopping the balancer lets a waiting stop go ahead and leaves no hook behind."""
        self.group.hosts["worker:0"].active = 1
        [d] = self.sup.beforeStop("worker:0")
        self.pool.stopService()
        self.successResultOf(d)
        self.assertEqual((self.sup.observers, self.sup.hooks), ([], []))

    def test_followed_deploy_rolls_on_change(self):
        """While the pool follows its deploy, the supervisor applies a changed declaration of it
        as a rolling restart (a reload never empties the group); after the pool stops, no more."""
        self.assertEqual(self.sup.rolling, ["worker"])
        self.pool.stopService()
        self.assertEqual(self.sup.rolling, [])

    def client(self):
        """A client connection accepted by the service (a memory transport)."""
        from twisted.internet.testing import StringTransport

        front = self.balancer.balanced["web"].factory.buildProtocol(None)
        transport = StringTransport()
        front.makeConnection(transport)
        return front, transport

    def test_planned_stop_holds_clients_until_an_instance_is_back(self):
        """A stop then a start (supervisorctl restart): the client arriving between them waits
        in the queue and goes to the instance that comes back, instead of being refused."""
        svc = self.balancer.balanced["web"]
        self.assertEqual(self.pool.hold, 5.0)  # the service's queue_timeout
        self.sup.beforeStop("worker:0")
        self.sup.emit("worker:0", S.RUNNING, S.STOPPED, "state")
        self.assertEqual(list(self.group.hosts), [])
        self.clock.advance(1)
        connects = len(self.clock.tcpClients)
        front, transport = self.client()
        self.assertFalse(transport.disconnecting)
        self.assertEqual((svc.queued, svc.held, svc.refused), (1, 1, 0))
        self.sup.emit("worker:0", S.STARTING, S.RUNNING, "ready", port=9000, ready=True)
        self.assertEqual(svc.queued, 0)
        self.assertEqual(self.clock.tcpClients[connects][:2], ("127.0.0.1", 9000))
        self.assertIs(front.host, self.group.hosts["worker:0"])

    def test_hold_ends(self):
        """Nothing came back within the hold: the waiting client, and the next ones, are refused."""
        svc = self.balancer.balanced["web"]
        self.sup.beforeStop("worker:0")
        self.sup.emit("worker:0", S.RUNNING, S.STOPPED, "state")
        front, transport = self.client()
        self.assertEqual(svc.queued, 1)
        self.clock.advance(5.1)
        self.assertEqual(svc.queued, 0)
        self.assertTrue(transport.disconnecting)
        _, later = self.client()
        self.assertTrue(later.disconnecting)
        self.assertEqual(svc.held, 1)

    def test_crash_sets_no_hold(self):
        """An instance that exits by itself leaves the group at once: its clients are refused."""
        svc = self.balancer.balanced["web"]
        self.sup.emit("worker:0", S.RUNNING, S.EXITED, "state")
        _, transport = self.client()
        self.assertTrue(transport.disconnecting)
        self.assertEqual((svc.held, svc.refused), (0, 1))

    def test_deploy_groups_are_not_reconciled_away(self):
        """diff() does not ask to remove hosts that came from the deploy."""
        self.assertEqual(self.balancer.diff(), [])


def _drainPolls(clock):
    return [c for c in clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "check"]


class DeployGroupConfigTests(SynchronousTestCase):
    def host(self, *deploys):
        host = Host(name="t", store="sqlite:" + os.path.join(self.mktemp(), "s.db"), var=self.mktemp())
        for d in deploys:
            host.add(d)
        return host

    def test_unknown_deploy_refused(self):
        """A group naming a deploy the host does not declare stops the host at start."""
        host = self.host(Deploy("api", command=[sys.executable], port="auto"))
        host.add(Balanced("web", listen=["tcp:0"], groups=[Group("g", deploy="worker")]))
        e = self.assertRaises(ConfigError, host.validate)
        self.assertIn("deploy 'worker' is not declared on this host (deploys: api)", str(e))

    def test_deploy_without_port_refused(self):
        """A deploy whose instances have no port cannot be balanced."""
        host = self.host(Deploy("worker", command=[sys.executable]))
        host.add(Balanced("web", listen=["tcp:0"], groups=[Group("g", deploy="worker")]))
        e = self.assertRaises(ConfigError, host.validate)
        self.assertIn("deploy 'worker' has no port to balance", str(e))

    def test_negative_drain_timeout_refused(self):
        decl = Balanced("web", listen=["tcp:0"], groups=[Group("g", deploy="w", drain_timeout=-1)])
        e = self.assertRaises(ConfigError, decl.validate, None)
        self.assertIn("drain_timeout must be >= 0", str(e))


class _Get(Protocol):
    def __init__(self):
        self.answer = b""
        self.done: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")

    def dataReceived(self, data):
        self.answer += data

    def connectionLost(self, reason):
        self.done.callback(self.answer)


class RollingRestartBehindBalancerTests(TestCase):
    """A real host: supervisor + balancer + SQLite store, three demo workers, a rolling restart."""

    timeout = 120

    @inlineCallbacks
    def test_rolling_restart_has_zero_failed_requests(self):
        """Client load through the balancer during C{restartDeploy(batch=1)}: no request fails."""
        var = self.mktemp()
        host = Host(name="t", store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
        host.add(Deploy("worker", command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
                        cwd=REPO, numprocs=3, port="auto", startsecs=0.2, stopwaitsecs=5,
                        probe=Probe(kind="tcp", interval=0.1, timeout=0.5, failures=3)))
        host.add(Balanced("web", listen=["tcp:0:interface=127.0.0.1"], groups=[
            Group("workers", deploy="worker", scheduler="leastconns",
                  health=HealthCheck(interval=0.5, timeout=0.5, rise=1, fall=2))]))
        top = host.build(reactor)
        # The test process must not adopt other tests' orphans: no child subreaper here.
        host.context.services["supervisor"].subreaper = False
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        supervisor = host.context.services["supervisor"]
        balancer = host.context.services["balancer"]
        web = balancer.balanced["web"]
        yield supervisor.ready
        yield web.listening
        group = web.groups["workers"]
        yield waitFor(lambda: len(group.rotation) == 3, timeout=20)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", web.ports[0].getHost().port)

        results = {"ok": 0, "failed": [], "names": set()}
        state = {"run": True}

        @inlineCallbacks
        def client():
            count = 0
            while state["run"] and count < 5000:
                count += 1
                try:
                    proto = yield endpoint.connect(Factory.forProtocol(_Get))
                    answer = yield proto.done
                except Exception as e:
                    answer = repr(e).encode()
                if answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]:
                    results["ok"] += 1
                    results["names"].add(answer.rsplit(b"hello from ", 1)[-1].split()[0])
                else:
                    results["failed"].append(answer[:200])

        old = {i["name"]: i["pid"] for i in supervisor.instanceInfos()}
        clients = [client() for _ in range(4)]
        yield supervisor.restartDeploy("worker", batch=1)
        state["run"] = False
        yield gatherResults(clients)
        new = {i["name"]: i["pid"] for i in supervisor.instanceInfos()}

        self.assertEqual(results["failed"], [])
        self.assertGreater(results["ok"], 30)
        self.assertEqual(results["names"], {b"worker:0", b"worker:1", b"worker:2"})
        self.assertFalse(set(old.values()) & set(new.values()))
        self.assertEqual(web.refused, 0)
        self.assertEqual(sorted(group.hosts), ["worker:0", "worker:1", "worker:2"])
        self.assertEqual({h.state for h in group.hosts.values()}, {states.UP})
        yield top.stopService()
        for pid in new.values():
            self.assertFalse(_alive(pid), f"worker pid {pid} survived the host's stop")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

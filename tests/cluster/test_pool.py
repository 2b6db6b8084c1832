"""Balancing across hosts on a Clock and a MemoryStore: a worker publishes its ready instances,
a front-end's C{cluster_deploy} group follows them — joins, drains before a stop, leaves, and
drops the instances of a host that is down."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer import states
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.cluster.pool import clusterGroups
from tests.cluster.helpers import MemoryCluster


class Supervisor:
    """The supervisor's observer / before-stop surface, driven by hand (as the real one calls it)."""

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

    def emit(self, name, event, new="RUNNING", deploy="worker", port=9000):
        info = {"name": name, "deploy": deploy, "port": port, "ready": event == "ready", "event": event}
        for o in list(self.observers):
            o(name, "RUNNING", new, info)

    def beforeStop(self, name, deploy="worker"):
        return [h(name, {"name": name, "deploy": deploy}) for h in self.hooks]


def info(name, port, ready=True, deploy="worker"):
    return {"name": name, "deploy": deploy, "port": port, "ready": ready, "state": "RUNNING"}


class ClusterPoolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.cluster = MemoryCluster(self.clock)
        decl = Balanced("web", listen=[], groups=[
            Group("workers", [Server("127.0.0.1:7000", name="static")], cluster_deploy="worker"),
        ])
        self.balancer = BalancerService(self.clock, [decl])
        self.sup1 = Supervisor([info("worker:0", 9000), info("worker:1", 9001, ready=False),
                                info("cache:0", 9100, deploy="cache")])
        self.sup2 = Supervisor([info("worker:0", 9000)])
        self.w1 = self.cluster.member("w1", supervisor=self.sup1, address="10.0.0.2", drain_delay=2.0)
        self.w2 = self.cluster.member("w2", supervisor=self.sup2, address="10.0.0.3", publish=["worker"])
        self.front = self.cluster.member("front", balancer=self.balancer)

    def tearDown(self):
        self.cluster.stopAll(self)

    def hosts(self):
        group = self.balancer.balanced["web"].groups["workers"]
        return {name: (h.address, h.port, h.admin) for name, h in group.hosts.items()}

    def test_clusterGroups(self):
        self.assertEqual(clusterGroups(self.balancer), [("web", "workers", "worker")])

    def test_publishesReadyInstancesOfItsDeploys(self):
        rows = self.cluster.rows("SELECT host, instance, deploy, address, port, state FROM cluster_instances"
                                 " ORDER BY host, instance")
        self.assertEqual(rows, [
            ("w1", "cache:0", "cache", "10.0.0.2", 9100, "ready"),
            ("w1", "worker:0", "worker", "10.0.0.2", 9000, "ready"),
            ("w2", "worker:0", "worker", "10.0.0.3", 9000, "ready"),
        ])

    def test_frontEndGroupHoldsEveryHostsInstances(self):
        """The group gets each worker host's ready instances, named instance@host, beside the
        servers an operator declared."""
        self.assertEqual(self.hosts(), {
            "static": ("127.0.0.1", 7000, "up"),
            "worker:0@w1": ("10.0.0.2", 9000, "up"),
            "worker:0@w2": ("10.0.0.3", 9000, "up"),
        })

    def test_joinAndLeaveFollowTheSupervisor(self):
        self.sup1.emit("worker:1", "ready", port=9001)
        self.assertIn("worker:1@w1", self.hosts())
        self.sup1.emit("worker:1", "unready", port=9001)
        self.assertNotIn("worker:1@w1", self.hosts())
        self.sup1.emit("worker:0", "state", new="STOPPED")
        self.assertEqual(set(self.hosts()), {"static", "worker:0@w2"})

    def test_drainBeforeStop(self):
        """Before the worker's supervisor signals an instance, front-ends set it to drain, and
        the stop waits the drain delay; when it is ready again it is back up."""
        (waiting,) = self.sup1.beforeStop("worker:0")
        self.assertIsInstance(waiting, Deferred)
        self.assertEqual(self.hosts()["worker:0@w1"][2], states.DRAIN)
        self.assertNoResult(waiting)
        self.clock.advance(2.0)
        self.successResultOf(waiting)
        self.sup1.emit("worker:0", "ready", port=9000)
        self.assertEqual(self.hosts()["worker:0@w1"][2], states.UP)

    def test_portChangeReplacesTheHost(self):
        self.sup1.emit("worker:0", "ready", port=9500)
        self.assertEqual(self.hosts()["worker:0@w1"][:2], ("10.0.0.2", 9500))

    def test_downHostIsDropped(self):
        """A worker host that stops beating (crash) leaves the group after missed heartbeats, and
        comes back with its next heartbeat."""
        self.w2._loop.stop()
        self.cluster.advance(20)
        self.assertNotIn("worker:0@w2", self.hosts())
        self.w2._loop.start(5.0, now=True)
        self.cluster.advance(5)
        self.assertIn("worker:0@w2", self.hosts())

    def test_cleanStopDrainsThenWithdrawsEverything(self):
        """A host that stops cleanly first has its instances drained on the front-ends for the
        drain delay (its supervisor stops them after), then withdraws them."""
        stopping = self.w1.stopService()
        self.assertNoResult(stopping)
        self.assertEqual(self.hosts()["worker:0@w1"][2], states.DRAIN)
        self.clock.advance(2.0)
        self.successResultOf(stopping)
        self.assertEqual(set(self.hosts()), {"static", "worker:0@w2"})
        left = self.cluster.rows("SELECT COUNT(*) FROM cluster_instances WHERE host = 'w1'")
        self.assertEqual(left, [(0,)])

    def test_operatorHostOfTheSameNameIsLeftAlone(self):
        """A host an operator added by hand is not the feed's to change or remove."""
        group = "workers"
        self.balancer.removeHost("web", group, "worker:0@w2")
        self.front.pool.managed[("web", group)].discard("worker:0@w2")
        self.balancer.addHost("web", group, "192.0.2.1", 1234, name="worker:0@w2")
        self.successResultOf(self.front.pool.refresh())
        self.assertEqual(self.hosts()["worker:0@w2"][:2], ("192.0.2.1", 1234))

    def test_restartRepublishesWhatIsReady(self):
        """A worker that crashed and restarts replaces its rows: stale instances go."""
        self.successResultOf(self.cluster.store.runOperation(
            "INSERT INTO cluster_instances VALUES"
            " ('w2', 'worker:9', 'worker', '10.0.0.3', 9999, 'ready', 0)"))
        stopping = self.w2.stopService()
        self.clock.advance(1.0)  # its drain delay
        self.successResultOf(stopping)
        again = self.cluster.member("w2", supervisor=self.sup2, address="10.0.0.3")
        self.assertTrue(again.joined.called)
        rows = self.cluster.rows("SELECT instance FROM cluster_instances WHERE host = 'w2'")
        self.assertEqual(rows, [("worker:0",)])
        self.assertIn("worker:0@w2", self.hosts())


class PublishedDeploysRollTests(SynchronousTestCase):
    """A changed deploy a worker host publishes is applied as a rolling restart, as one a local
    balanced group follows: the front-ends balancing it cannot hold their clients through a
    restart of every instance at once."""

    def setUp(self):
        from salvusctl.supervisor.deploy import Deploy
        from salvusctl.supervisor.service import SupervisorService

        self.clock = MemoryReactorClock()
        self.cluster = MemoryCluster(self.clock)
        self.supervisor = SupervisorService(self.clock, [
            Deploy("worker", ["true"], port=9000, numprocs=2),
            Deploy("batch", ["true"]),
        ], runDir=self.mktemp())
        self.Deploy = Deploy

    def tearDown(self):
        self.cluster.stopAll(self)

    def test_everyDeployWithAPortRollsWhilePublished(self):
        """The default publisher (every deploy with a port) covers a deploy a reload adds
        later too; stopping the cluster service withdraws the request."""
        member = self.cluster.member("w1", supervisor=self.supervisor)
        self.assertEqual(self.supervisor.rollingDeploys(), ["worker"])
        self.assertTrue(self.supervisor.rolls(self.Deploy("later", ["true"], port=9100)))
        self.assertFalse(self.supervisor.rolls(self.Deploy("later", ["true"])))
        d = member.stopService()
        self.cluster.advance(10)
        self.successResultOf(d)
        self.assertEqual(self.supervisor.rollingDeploys(), [])

    def test_namedDeploysRoll(self):
        self.cluster.member("w1", supervisor=self.supervisor, publish=["batch"])
        self.assertEqual(self.supervisor.rollingDeploys(), ["batch"])

    def test_publishingNothingRollsNothing(self):
        self.cluster.member("w1", supervisor=self.supervisor, publish=[])
        self.assertEqual(self.supervisor.rollingDeploys(), [])

"""C{Cluster(...)} and C{Group(cluster_deploy=...)} in a host's declarations: checked before
anything starts, built into the host in the right place."""

from __future__ import annotations

import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.cluster import Cluster
from salvusctl.cluster.service import ClusterService
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy


class ClusterDeclarationTests(SynchronousTestCase):
    def host(self, *declarations, name="web1"):
        host = Host(name, store="sqlite::memory:", var=self.mktemp())
        for d in declarations:
            host.add(d)
        return host

    def assertRefused(self, declaration, words):
        with self.assertRaises(ConfigError) as e:
            self.host(declaration).validate()
        self.assertIn(words, str(e.exception))

    def test_defaults(self):
        decl = Cluster()
        host = self.host(decl)
        host.validate()
        self.assertEqual(decl.hostName(host), "web1")
        self.assertEqual((decl.heartbeat, decl.missed, decl.address), (5.0, 3, "127.0.0.1"))

    def test_badValues(self):
        self.assertRefused(Cluster(heartbeat=0), "Cluster(heartbeat=…) must be a positive number")
        self.assertRefused(Cluster(missed=0), "Cluster(missed=…) must be an integer >= 1")
        self.assertRefused(Cluster(name="a b"), "Cluster(name=…) must be letters")
        self.assertRefused(Cluster(address=""), "Cluster(address=…)")
        self.assertRefused(Cluster(admin_url="ftp://x"), "Cluster(admin_url=…)")
        self.assertRefused(Cluster(publish="worker"), "Cluster(publish=…) must be a list")
        self.assertRefused(Cluster(drain_delay=-1), "Cluster(drain_delay=…)")
        self.assertRefused(Cluster(handlers={"x": 1}), "Cluster(handlers=…)")

    def test_hostNameThatCannotNameAMember(self):
        with self.assertRaises(ConfigError) as e:
            self.host(Cluster(), name="my host").validate()
        self.assertIn("give Cluster(name=…)", str(e.exception))
        self.host(Cluster(name="my-host"), name="my host").validate()

    def test_oneClusterPerHost(self):
        with self.assertRaises(ConfigError) as e:
            self.host(Cluster(), Cluster()).validate()
        self.assertIn("one Cluster(...)", str(e.exception))

    def test_adminURLFromTheAdminListener(self):
        host = self.host(Cluster(address="10.0.0.5"), Admin("ssl:8443", "unix:var/admin.sock"))
        self.assertEqual(host.declarations("cluster")[0].adminURL(host), "https://10.0.0.5:8443")
        explicit = Cluster(admin_url="https://admin.example:9000")
        self.assertEqual(explicit.adminURL(host), "https://admin.example:9000")
        self.assertIsNone(Cluster().adminURL(self.host(Admin("unix:var/a.sock"))))


class ClusterDeployGroupTests(SynchronousTestCase):
    def balanced(self, group):
        return Balanced("web", listen=["tcp:0"], groups=[group])

    def test_needsACluster(self):
        host = Host("f", store="sqlite::memory:", var=self.mktemp())
        host.add(self.balanced(Group("workers", cluster_deploy="worker")))
        with self.assertRaises(ConfigError) as e:
            host.validate()
        self.assertIn("cluster_deploy='worker' needs this host to declare Cluster(...)", str(e.exception))

    def test_notBothDeployAndClusterDeploy(self):
        host = Host("f", store="sqlite::memory:", var=self.mktemp())
        host.add(Deploy("worker", command=[sys.executable], port=8000))
        host.add(Cluster())
        host.add(self.balanced(Group("workers", deploy="worker", cluster_deploy="worker")))
        with self.assertRaises(ConfigError) as e:
            host.validate()
        self.assertIn("not both", str(e.exception))

    def test_builtAfterTheBalancerAndWiredToIt(self):
        """The builder finds the balancer (built before it) and feeds its cluster groups; the
        balancer's diff leaves those groups' hosts alone (they follow the cluster)."""
        host = Host("front", store="sqlite::memory:", var=self.mktemp())
        host.add(self.balanced(Group("workers", [Server("127.0.0.1:7000")], cluster_deploy="worker")))
        host.add(Cluster(address="10.0.0.1", heartbeat=2))
        top = host.build(MemoryReactorClock())
        names = [s.name for s in top]
        self.assertLess(names.index("balancer"), names.index("cluster"))
        cluster = host.context.services["cluster"]
        self.assertIsInstance(cluster, ClusterService)
        self.assertIs(cluster.pool.balancer, host.context.services["balancer"])
        self.assertIsNone(cluster.publisher)  # no supervisor on this host
        self.assertEqual((cluster.host_name, cluster.heartbeat), ("front", 2.0))
        balancer = host.context.services["balancer"]
        balancer.addHost("web", "workers", "10.0.0.9", 9000, name="worker:0@w1")
        self.assertEqual(balancer.diff(), [])

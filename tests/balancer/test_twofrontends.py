"""Two front-ends balancing the same service on one real PostgreSQL: what an operator sets on one
and what one's checks find are seen by the other within a second, and survive a restart.

Each front-end is a L{BalancerService} with its own L{PostgresStore} (its own connections and
LISTEN), as two machines would have; they share only the throw-away database.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer import persist, shared
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.store.postgres import PostgresStore
from salvusctl.store.testing import MemoryStore
from salvusctl.store.url import parseStoreURL
from tests.balancer.helpers import balanced, startBackend
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase, waitUntil
from tests.store.test_postgres_outage import FAST

#: the issue's bound: a change on one front-end is in force on the other within this
WITHIN = 1.0


class TwoFrontEndsTests(TestCase):
    skip = POSTGRES_SKIP
    timeout = 60

    def setUp(self):
        self.db = TempDatabase().create()
        self.addCleanup(self.db.drop)
        self.one = startBackend(self, b"one", mode="echo")
        self.two = startBackend(self, b"two", mode="echo")

    def decl(self, scheduler: str = "roundrobin"):
        servers = [f"127.0.0.1:{b.port.getHost().port}" for b in (self.one, self.two)]
        # checks far apart: each front-end checks only when the test says so
        return balanced(servers, name="web", scheduler=scheduler,
                        health=HealthCheck(interval=3600.0, timeout=1.0, fall=1))

    @inlineCallbacks
    def frontEnd(self, name: str, scheduler: str = "roundrobin", decl=None):
        store = PostgresStore(reactor, parseStoreURL(self.db.url), pool_size=2, reconnect_delays=FAST,
                              close_timeout=5)
        store.addMigrations("balancer", persist.MIGRATIONS)
        balancer = BalancerService(reactor, [decl or self.decl(scheduler)], store=store,
                                   store_ready=store.start, share=name)

        @inlineCallbacks
        def stop():
            if balancer.running:
                yield balancer.stopService()
            yield store.close()

        balancer.halt = stop
        self.addCleanup(stop)
        balancer.startService()
        yield balancer.restoring
        return balancer

    def host(self, balancer, index: int):
        return list(balancer.balanced["web"].groups["main"].hosts.values())[index]

    @inlineCallbacks
    def within(self, predicate, what: str):
        started = reactor.seconds()
        ok = yield waitUntil(reactor, predicate, timeout=5.0, step=0.005)
        took = reactor.seconds() - started
        self.assertTrue(ok, f"{what}: not seen after 5 s")
        self.assertLess(took, WITHIN, f"{what}: took {took:.3f} s")
        return took

    @inlineCallbacks
    def test_drainOnOneIsSeenOnTheOtherAndSurvivesItsRestart(self):
        """An operator drains a host on A: B stops sending it new clients within a second; B
        restarted still has it drained, and so does A restarted (the state is in the table)."""
        a = yield self.frontEnd("fe-a")
        b = yield self.frontEnd("fe-b")
        name = self.host(a, 0).name
        a.drain("web", "main", name)
        yield self.within(lambda: self.host(b, 0).state == "drain", "drain on B")
        b.setWeight("web", "main", self.host(b, 1).name, 7)
        yield self.within(lambda: self.host(a, 1).weight == 7, "weight on A")

        yield b.halt()
        b = yield self.frontEnd("fe-b")
        self.assertEqual((self.host(b, 0).state, self.host(b, 1).weight), ("drain", 7))
        yield a.halt()
        a = yield self.frontEnd("fe-a")
        self.assertEqual((self.host(a, 0).state, self.host(a, 1).weight), ("drain", 7))

        # set back up on the restarted B: A follows
        b.enable("web", "main", name)
        yield self.within(lambda: self.host(a, 0).state == "up", "up on A")

    @inlineCallbacks
    def test_fixedServersOfAClusterDeployGroupAreShared(self):
        """tac/frontend.tac's C{workers} group follows the cluster's C{worker} deploy and lists fixed
        servers too: a drain and a weight of a fixed server on A are in force on B within a second
        and survive B's restart; a drain of a deploy instance stays A's own (no row)."""
        def decl():
            servers = [Server(f"127.0.0.1:{b.port.getHost().port}") for b in (self.one, self.two)]
            return Balanced("web", listen=["tcp:0:interface=127.0.0.1"],
                            groups=[Group("workers", servers, cluster_deploy="worker",
                                          health=HealthCheck(interval=3600.0, timeout=1.0, fall=1))])

        def hosts(balancer):
            return balancer.balanced["web"].groups["workers"].hosts

        a = yield self.frontEnd("fe-a", decl=decl())
        b = yield self.frontEnd("fe-b", decl=decl())
        for balancer in (a, b):  # as the cluster's pool adds a published instance
            balancer.balanced["web"].addHost("workers", "127.0.0.1", self.one.port.getHost().port,
                                             name="worker:0@w1")
        fixed = [h for h in hosts(a) if h != "worker:0@w1"]
        a.drain("web", "workers", "worker:0@w1")
        a.drain("web", "workers", fixed[0])
        a.setWeight("web", "workers", fixed[1], 5)
        yield self.within(lambda: hosts(b)[fixed[0]].admin == "drain" and hosts(b)[fixed[1]].weight == 5,
                          "fixed server's drain and weight on B")
        yield waitUntil(reactor, lambda: not a.shared.pending)
        self.assertEqual(hosts(b)["worker:0@w1"].admin, "up")
        rows = yield a.store.runQuery("SELECT host, admin, weight FROM balancer_shared ORDER BY host")
        self.assertEqual(sorted(rows), sorted([(fixed[0], "drain", 1), (fixed[1], "up", 5)]))

        b.enable("web", "workers", fixed[0])
        yield self.within(lambda: hosts(a)[fixed[0]].admin == "up", "up on A")
        b.disable("web", "workers", fixed[1])
        yield waitUntil(reactor, lambda: not b.shared.pending)
        yield b.halt()
        b = yield self.frontEnd("fe-b", decl=decl())
        self.assertEqual((hosts(b)[fixed[0]].admin, hosts(b)[fixed[1]].admin, hosts(b)[fixed[1]].weight),
                         ("up", "maint", 5))

    @inlineCallbacks
    def test_changesWhileAwayAreSeenAtStart(self):
        """A maint set on A while B is stopped is in force as soon as B is back."""
        a = yield self.frontEnd("fe-a")
        b = yield self.frontEnd("fe-b")
        yield b.halt()
        a.disable("web", "main", self.host(a, 1).name)
        yield waitUntil(reactor, lambda: not a.shared.pending)
        b = yield self.frontEnd("fe-b")
        self.assertEqual(self.host(b, 1).state, "maint")

    @inlineCallbacks
    def test_healthResultOnOneIsSeenOnTheOther(self):
        """A's check finds a backend gone: B, which has not checked it, takes it out of rotation
        within a second, saying who saw it; when A's check readmits it, B follows."""
        a = yield self.frontEnd("fe-a")
        b = yield self.frontEnd("fe-b")
        port = self.one.port.getHost().port
        yield self.one.port.stopListening()
        monitor = a.balanced["web"].monitors[id(self.host(a, 0))]
        ok = yield monitor.checkOnce()
        self.assertFalse(ok)
        self.assertEqual(self.host(a, 0).state, "down")
        yield self.within(lambda: self.host(b, 0).state == "down", "down on B")
        self.assertIn("(seen by fe-a)", self.host(b, 0).down_reason)
        self.assertEqual(self.host(b, 1).state, "up")

        self.one.port = reactor.listenTCP(port, self.one, interface="127.0.0.1")
        self.addCleanup(self.one.port.stopListening)
        ok = yield monitor.checkOnce(force=True)
        self.assertTrue(ok)
        yield self.within(lambda: self.host(b, 0).state == "up", "up on B")

    @inlineCallbacks
    def test_concurrentChangesEndTheSameOnBoth(self):
        """A drains and B sets maint on the same host at the same moment: both end with the one
        the database committed last, never each with its own."""
        a = yield self.frontEnd("fe-a")
        b = yield self.frontEnd("fe-b")
        name = self.host(a, 0).name
        for _ in range(5):
            a.drain("web", "main", name)
            b.disable("web", "main", name)
            a.enable("web", "main", name)
        yield waitUntil(reactor, lambda: not a.shared.pending and not b.shared.pending)
        rows = self.db.query("SELECT admin FROM balancer_shared WHERE host = %s", (name,))
        final = rows[0][0]
        yield self.within(lambda: self.host(a, 0).admin == self.host(b, 0).admin == final,
                          "the same state on both")

    @inlineCallbacks
    def test_stickyPinsAreSharedAndSurviveARestart(self):
        """Clients pinned on A keep their backend when they come through B (the floating address
        moved), also after B restarted."""
        a = yield self.frontEnd("fe-a", "sticky")
        b = yield self.frontEnd("fe-b", "sticky")
        group_a = a.balanced["web"].groups["main"]
        hosts_a = list(group_a.hosts.values())
        pinned = {}
        for i in range(40):
            ip = f"10.1.0.{i}"
            host = group_a.scheduler.choose(hosts_a, (ip, 40000))
            host.active += 1  # least connections spreads the next ones
            pinned[ip] = host.name
        self.assertEqual(len(set(pinned.values())), 2)

        def onB(balancer):
            group = balancer.balanced["web"].groups["main"]
            hosts = list(group.hosts.values())
            return {ip: group.scheduler.choose(hosts, (ip, 50000)).name for ip in pinned}

        def seenOnB():
            cache = b.balanced["web"].groups["main"].scheduler._cache
            return all(ip in cache for ip in pinned)

        yield self.within(seenOnB, "sticky pins on B")
        self.assertEqual(onB(b), pinned)
        yield b.halt()
        b = yield self.frontEnd("fe-b", "sticky")
        self.assertEqual(onB(b), pinned)


class SharedStatesUnitTests(SynchronousTestCase):
    """Two front-ends on one in-memory store (its notifications delivered in-process)."""

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.store.addMigrations("balancer", persist.MIGRATIONS)
        self.successResultOf(self.store.start())

    def frontEnd(self, name: str, decl) -> BalancerService:
        balancer = BalancerService(self.clock, [decl], store=self.store, share=name)
        balancer.startService()
        self.addCleanup(lambda: balancer.running and balancer.stopService())
        return balancer

    def test_clusterDeployHostsAreNotShared(self):
        """A host that follows a cluster deploy takes its states from the workers' published
        rows: a drain of it on A is neither stored nor applied on B (a drain kept for
        C{worker:0@w1} must not fall on its next run)."""
        def decl():
            return Balanced("web", listen=[], groups=[Group("workers", cluster_deploy="worker")])

        a, b = self.frontEnd("fe-a", decl()), self.frontEnd("fe-b", decl())
        for balancer in (a, b):
            balancer.balanced["web"].addHost("workers", "10.0.0.5", 8001, name="worker:0@w1")
        a.drain("web", "workers", "worker:0@w1")
        self.assertEqual(b.balanced["web"].host("workers", "worker:0@w1").admin, "up")
        self.assertEqual(self.successResultOf(self.store.runQuery("SELECT * FROM balancer_shared")), [])

    def test_fixedServersOfAFollowingGroupAreShared(self):
        """A group that follows a deploy (on this host or cluster-wide) and also lists servers: the
        listed servers' states are shared like any group's, its instances' are not."""
        for follow in ({"cluster_deploy": "worker"}, {"deploy": "worker"}):
            store = MemoryStore(self.clock)
            store.addMigrations("balancer", persist.MIGRATIONS)
            self.successResultOf(store.start())
            self.store = store

            def decl(follow=follow):
                group = Group("workers", [Server("10.0.0.9:80")], **follow)
                return Balanced("web", listen=[], groups=[group])

            a, b = self.frontEnd("fe-a", decl()), self.frontEnd("fe-b", decl())
            for balancer in (a, b):
                balancer.balanced["web"].addHost("workers", "10.0.0.5", 8001, name="worker:0")
            a.drain("web", "workers", "worker:0")
            a.drain("web", "workers", "10.0.0.9:80")
            self.clock.advance(1)
            self.assertEqual(b.balanced["web"].host("workers", "10.0.0.9:80").admin, "drain", follow)
            self.assertEqual(b.balanced["web"].host("workers", "worker:0").admin, "up", follow)
            rows = self.successResultOf(store.runQuery("SELECT host, admin FROM balancer_shared"))
            self.assertEqual([tuple(r) for r in rows], [("10.0.0.9:80", "drain")], follow)
            a.stopService()
            b.stopService()

    def test_malformedNotificationIsIgnored(self):
        """A stray payload on the channel is logged and changes nothing; the next good one applies."""
        def decl():
            return Balanced("web", listen=[], groups=[Group("main", [Server("10.0.0.1:80")])])

        a, b = self.frontEnd("fe-a", decl()), self.frontEnd("fe-b", decl())
        self.successResultOf(self.store.notify(shared.CHANNEL, "not json"))
        a.drain("web", "main", "10.0.0.1:80")
        self.clock.advance(1)
        self.assertEqual(b.balanced["web"].host("main", "10.0.0.1:80").admin, "drain")

"""A front-end balancing to two worker hosts through a real PostgreSQL outage.

The database is a private cluster (C{tests.store.pgcluster}) that the test really stops for
several times C{missed x heartbeat} and starts again, while a client keeps making requests through
the front-end's balancer to the workers' real TCP backends.  No request may fail: the front-end
keeps its last view through the outage, and afterwards no host is judged by a heartbeat queued
during the outage (it is stamped with the database's clock when written) nor before it had a
chance to beat again.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck
from salvusctl.cluster.service import ClusterService
from salvusctl.store.postgres import PostgresStore
from salvusctl.store.url import parseStoreURL
from tests.balancer.helpers import fetch, startBackend
from tests.cluster.test_pool import Supervisor, info
from tests.store.pgcluster import CLUSTER_SKIP, PrivateCluster
from tests.store.pgtemp import waitUntil
from tests.store.test_postgres_outage import FAST

HEARTBEAT = 0.3
MISSED = 2
#: Five times what it takes to be judged down.
OUTAGE = 5 * HEARTBEAT * MISSED


def later(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class FrontEndThroughOutageTests(TestCase):
    skip = CLUSTER_SKIP
    timeout = 90

    @inlineCallbacks
    def setUp(self):
        self._members: list[ClusterService] = []
        self.cluster = PrivateCluster(reactor)
        self.addCleanup(self.cluster.destroy)
        yield self.cluster.start()

    def member(self, name: str, **options) -> ClusterService:
        store = PostgresStore(reactor, parseStoreURL(self.cluster.url), pool_size=2,
                              reconnect_delays=FAST, close_timeout=5)
        service = ClusterService(reactor, store, name, address="127.0.0.1", store_ready=store.start,
                                 heartbeat=HEARTBEAT, missed=MISSED, **options)

        @inlineCallbacks
        def stop():
            if service.running:
                yield service.stopService()
            yield store.close()

        self.addCleanup(stop)
        self._members.append(service)
        service.startService()
        return service

    @inlineCallbacks
    def test_noRequestFailsThroughADatabaseOutage(self):
        """Stop PostgreSQL for five times the down threshold under load, start it: every request
        is answered by a worker, and the front-end's group never loses a worker."""
        backends = {}
        for name in ("w1", "w2"):
            backend = startBackend(self, name.encode())
            backends[name] = backend
            self.member(name, supervisor=Supervisor([info("worker:0", backend.port.getHost().port)]))
        decl = Balanced("web", listen=["tcp:0:interface=127.0.0.1"], groups=[
            Group("workers", [], cluster_deploy="worker", health=HealthCheck(interval=60.0, timeout=1.0)),
        ], retries=0)
        balancer = BalancerService(reactor, [decl], wheel_resolution=0.05)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        svc = balancer.balanced["web"]
        yield svc.listening
        port = svc.ports[0].getHost().port
        front = self.member("front", balancer=balancer)
        yield front.joined
        group = svc.groups["workers"]
        ok = yield waitUntil(reactor, lambda: len(group.hosts) == 2)
        self.assertTrue(ok, sorted(group.hosts))

        answered, failed, fewest = [], [], [2]
        running = [True]

        @inlineCallbacks
        def load():
            while running[0]:
                try:
                    data, _ = yield fetch(port, b"x")
                except Exception as e:
                    data = repr(e).encode()
                (answered if data in (b"w1:x", b"w2:x") else failed).append(data)
                fewest[0] = min(fewest[0], len(group.hosts))
                yield later(0.01)

        loading = load()
        yield later(3 * HEARTBEAT)
        yield self.cluster.stop()
        yield later(OUTAGE)
        yield self.cluster.resume()
        # Until every member's store has replayed its queue and a few heartbeats have gone by.
        yield waitUntil(reactor, lambda: all(not m.store.stats()["outage"] for m in (front,)))
        yield later(6 * HEARTBEAT * MISSED)
        running[0] = False
        yield loading
        states = {name: peer.state for name, peer in front.membership.peers.items()}
        self.assertEqual(states, {"front": "up", "w1": "up", "w2": "up"})
        self.assertEqual(failed, [])
        self.assertEqual(fewest[0], 2)
        self.assertGreater(len(answered), 50)
        # The grace is for the outage only: a worker that stops beating now is dropped.
        w2 = [m for m in self._members if m.host_name == "w2"][0]
        w2._loop.stop()
        ok = yield waitUntil(reactor, lambda: sorted(group.hosts) == ["worker:0@w1"])
        self.assertTrue(ok, sorted(group.hosts))
        self.flushLoggedErrors()

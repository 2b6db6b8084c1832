"""The host service tree: start order, sequential reverse stop, and nothing left behind."""

from __future__ import annotations

import threading

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.host import Host, HostService


class _Recorder(Service):
    def __init__(self, name, log, gate=None):
        self.setName(name)
        self.log = log
        self.gate = gate

    def startService(self):
        Service.startService(self)
        self.log.append(("start", self.name))

    def stopService(self):
        Service.stopService(self)
        self.log.append(("stop", self.name))
        return self.gate


class HostServiceTests(TestCase):
    def test_stopsInReverseOneAtATime(self):
        """A child is not asked to stop until the one after it has finished stopping.

        The store is the first child: it must outlive everything that still writes to it.
        """
        log: list = []
        gate = Deferred()
        top = HostService("h")
        _Recorder("store", log).setServiceParent(top)
        _Recorder("supervisor", log, gate).setServiceParent(top)
        top.startService()
        d = top.stopService()
        self.assertEqual(log[-1], ("stop", "supervisor"))
        self.assertNotIn(("stop", "store"), log)
        gate.callback(None)
        self.assertEqual(log[-1], ("stop", "store"))
        return d


class HostLifecycleTests(TestCase):
    @inlineCallbacks
    def test_startStopLeavesNothing(self):
        """After stopService no store thread, no timer and no open database remain."""
        before_threads = {t.ident for t in threading.enumerate()}
        before_calls = set(reactor.getDelayedCalls())
        host = Host("h", store="sqlite:" + self.mktemp() + "/salvus.db", var=self.mktemp())
        top = host.build(reactor)
        top.startService()
        store = host.context.store
        yield top.getServiceNamed("store").ready
        rows = yield store.runQuery("SELECT count(*) FROM services")
        self.assertEqual(rows, [(0,)])
        yield top.stopService()
        leftover = [t for t in threading.enumerate() if t.ident not in before_threads]
        self.assertEqual(leftover, [])
        timers = [
            c for c in set(reactor.getDelayedCalls()) - before_calls if "TestCase._run" not in repr(c)
        ]
        self.assertEqual(timers, [])
        self.assertIsNone(store._conn)

    @inlineCallbacks
    def test_storeMigratesOncePerDatabase(self):
        """Starting a host twice on one database applies each migration once (no 'already exists')."""
        path = self.mktemp() + "/salvus.db"
        for _ in range(2):
            host = Host("h", store="sqlite:" + path, var=self.mktemp())
            top = host.build(reactor)
            top.startService()
            yield top.getServiceNamed("store").ready
            rows = yield host.context.store.runQuery("SELECT component, version FROM salvus_migrations")
            yield top.stopService()
        self.assertEqual(rows, [("core", 1)])

"""supervisor.shutdown and supervisor.restart for an operator, and versions clients accept.

supervisorctl's shutdown and reload call these; a host that refused them broke the scripts and
tools written against supervisord.  The real-twistd shutdown is in test_sidebyside (next to
supervisord's); these check the wiring over a memory reactor.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from salvusctl.admin.faults import Faults
from tests.admin.helpers import VIEW, HarnessTestCase


class _Reloader:
    def __init__(self, calls):
        self.calls = calls

    def reconcile(self):
        self.calls.append("reconcile")
        return defer.succeed({})


class HostControlTests(HarnessTestCase):
    def setUp(self):
        super().setUp()
        self.reactor = MemoryReactorClock()
        self.calls: list[str] = []
        self.h.state.context = SimpleNamespace(reactor=self.reactor, reloader=_Reloader(self.calls))

    def test_shutdownStopsTheReactorAfterAnswering(self):
        """True first; then reactor.stop(), what twistd's SIGTERM handler calls."""
        self.assertIs(self.call("supervisor.shutdown"), True)
        self.assertFalse(self.reactor.hasStopped)
        self.reactor.advance(0)
        self.assertTrue(self.reactor.hasStopped)

    def test_viewerMayNotShutDown(self):
        self.assertFault(self.call("supervisor.shutdown", user=VIEW), Faults.PERMISSION_DENIED)
        self.reactor.advance(0)
        self.assertFalse(self.reactor.hasStopped)

    def test_noHostNoShutdown(self):
        """An admin composed outside a host has nothing to stop: NO_SERVICE, not a dead reactor."""
        self.h.state.context = None
        self.assertFault(self.call("supervisor.shutdown"), Faults.NO_SERVICE)

    def test_restartStopsRereadsAndStarts(self):
        """supervisord's restart, in place: every program stops, the config is applied again,
        the programs start; the host (its reactor) keeps running."""
        sup = self.h.supervisor
        stopAll, startAll = sup.stopAll, sup.startAll
        sup.stopAll = lambda: (self.calls.append("stopAll"), stopAll())[1]
        sup.startAll = lambda **kw: (self.calls.append("startAll"), startAll(**kw))[1]
        self.assertIs(self.call("supervisor.restart"), True)
        self.reactor.advance(0)
        self.assertEqual(self.calls, ["stopAll", "reconcile", "startAll"])
        self.assertFalse(self.reactor.hasStopped)


class VersionTests(HarnessTestCase):
    def test_versionsClientsAccept(self):
        """getAPIVersion/getVersion are supervisord's 3.0 (supervisorctl refuses anything else);
        getSupervisorVersion parses as a version at least supervisord 4.3's."""
        self.assertEqual(self.call("supervisor.getAPIVersion"), "3.0")
        self.assertEqual(self.call("supervisor.getVersion"), "3.0")
        version = self.call("supervisor.getSupervisorVersion")
        from packaging.version import Version

        self.assertGreaterEqual(Version(version), Version("4.3.0"))
        self.assertIn("salvus", version)

"""Reloading the admin of a running host: users file, limits and page options, same listeners."""

from __future__ import annotations

import os
from types import SimpleNamespace

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin import Admin, reload
from salvusctl.admin.build import AdminService
from salvusctl.admin.state import AdminState
from salvusctl.admin.users import OPERATOR, UsersFile
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import OP, basic, tempDir, writeUsers

OTHER = ("other", "other-secret")
LISTEN = "tcp:9000:interface=127.0.0.1"


class AdminReloadTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempDir(self)
        self.reactor = MemoryReactorClock()
        self.first = os.path.join(self.tmp, "users")
        writeUsers(self.first)
        self.second = os.path.join(self.tmp, "users2")
        UsersFile(self.second).add(OTHER[0], OTHER[1], OPERATOR)
        state = AdminState(services={"supervisor": FakeSupervisor(clock=self.reactor)}, clock=self.reactor,
                           host_name="h")
        self.old = [Admin(LISTEN, users=self.first, refresh=10)]
        self.service = AdminService(self.reactor, self.old, state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.context = SimpleNamespace(services={"admin": self.service})
        [(port, site, _, _)] = self.reactor.tcpServers
        self.site = site  # what the bound port serves, before and after the reload

    def get(self, path, user):
        client = StubTreq(self.site.resource)
        d = client.get("http://localhost" + path, headers=basic(user))
        client.flush()
        response = self.successResultOf(d)
        return response.code, self.successResultOf(response.content())

    def reload(self, new):
        entry = reload.diff(self.context, self.old, new)
        if entry is not None and not entry.get("restart"):
            reload.apply(self.context, new, entry)
            self.old = new
        return entry

    def test_newUsersFileOnTheSameListener(self):
        """The next request is checked against the new users file; the port is not rebound."""
        self.assertEqual(self.get("/", OP)[0], 200)
        entry = self.reload([Admin(LISTEN, users=self.second, refresh=10)])
        self.assertEqual(entry, {"added": [], "changed": ["users"], "removed": []})
        self.assertEqual(self.get("/", OP)[0], 401)
        self.assertEqual(self.get("/", OTHER)[0], 200)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertIs(self.service.sites[0], self.site)

    def test_pageOptionsAndLimits(self):
        """refresh, title and the login limits answer the next request; counted failures stay."""
        self.service.limiter.attempt("op", "1.2.3.4")
        self.reload([Admin(LISTEN, users=self.first, refresh=33, title="Shop", login_limit=2,
                           login_window=10.0, max_request_bytes=8192)])
        code, body = self.get("/", OP)
        self.assertEqual(code, 200)
        self.assertIn(b'content="33"', body)
        self.assertIn(b"Shop", body)
        self.assertEqual((self.service.limiter.limit, self.service.limiter.window), (2, 10.0))
        self.assertEqual(len(self.service.limiter._pairs[("op", "1.2.3.4")].times), 1)
        self.assertEqual(self.site.requestFactory.maxBody, 8192)

    def test_newListenerNeedsARestart(self):
        """A changed endpoint is not applied at all, and the reason says why."""
        entry = self.reload([Admin("tcp:9001:interface=127.0.0.1", users=self.second)])
        self.assertEqual((entry["changed"], entry["restart"]), (["listen"], True))
        self.assertIn("drops privileges", entry["reason"])
        self.assertIn("cut off the client", entry["reason"])
        self.assertEqual(self.get("/", OP)[0], 200)
        with self.assertRaises(ValueError):
            self.service.reconfigure([Admin("tcp:9001:interface=127.0.0.1")])

    def test_sameDeclarationNoDifference(self):
        """Reading the same Admin again is no difference."""
        self.assertIsNone(self.reload([Admin(LISTEN, users=self.first, refresh=10)]))

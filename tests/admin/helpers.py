"""Shared set-up for admin tests: a users file, fakes, and an authenticated StubTreq."""

from __future__ import annotations

import base64
import os
import xmlrpc.client as xmlrpclib
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.auth import LoginRateLimiter
from salvusctl.admin.site import makeRoot
from salvusctl.admin.state import AdminOptions, AdminState
from salvusctl.admin.users import OPERATOR, VIEWER, UsersFile
from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor

OP = ("op", "op-secret")
VIEW = ("view", "view-secret")

_USERS_CACHE: dict[str, str] = {}


def writeUsers(path: str) -> UsersFile:
    """A users file with an operator and a viewer (hashing once per test run, then copying)."""
    if "content" not in _USERS_CACHE:
        first = UsersFile(path)
        first.add(OP[0], OP[1], OPERATOR)
        first.add(VIEW[0], VIEW[1], VIEWER)
        with open(path) as f:
            _USERS_CACHE["content"] = f.read()
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(_USERS_CACHE["content"])
        os.chmod(path, 0o600)
    return UsersFile(path)


def basic(user: tuple[str, str]) -> dict[bytes, list[bytes]]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {b"Authorization": [f"Basic {token}".encode()]}


class Harness:
    """An admin over fakes, driven in memory through StubTreq."""

    def __init__(
        self,
        tmp: str,
        services: dict[str, Any] | None = None,
        clock: Clock | None = None,
        options: AdminOptions | None = None,
    ):
        self.clock = clock or Clock()
        self.clock.advance(1_700_000_000)
        if services is None:
            self.supervisor = FakeSupervisor(clock=self.clock)
            self.balancer = FakeBalancer()
            self.monitor = FakeMonitor(self.supervisor)
            self.alerts = FakeAlerts()
            services = {
                "supervisor": self.supervisor,
                "balancer": self.balancer,
                "monitor": self.monitor,
                "alerts": self.alerts,
            }
        self.services = services
        self.users = writeUsers(os.path.join(tmp, "users"))
        self.state = AdminState(
            services=services, clock=self.clock, host_name="testhost", options=options or AdminOptions()
        )
        self.limiter = LoginRateLimiter(self.clock)
        self.root = makeRoot(self.state, self.users, self.limiter)
        self.treq = StubTreq(self.root)

    def request(self, testcase, method: str, path: str, user=OP, headers=None, data=None):
        """(response, body bytes) of one request, flushed synchronously."""
        all_headers = dict(basic(user)) if user else {}
        all_headers.update(headers or {})
        d = self.treq.request(
            method, "http://localhost" + path, headers=all_headers, data=data, allow_redirects=False
        )
        self.treq.flush()
        response = testcase.successResultOf(d)
        body = testcase.successResultOf(response.content())
        return response, body

    def rpc(self, testcase, method: str, *params, user=OP):
        """The result of one XML-RPC call, or the Fault it raised (returned, not raised)."""
        body = xmlrpclib.dumps(params, method, allow_none=True).encode()
        response, content = self.request(
            testcase, "POST", "/RPC2", user=user, headers={b"Content-Type": [b"text/xml"]}, data=body
        )
        testcase.assertEqual(response.code, 200, content)
        try:
            return xmlrpclib.loads(content)[0][0]
        except xmlrpclib.Fault as f:
            return f


def tempDir(testcase) -> str:
    """A fresh absolute temporary directory, removed when the test ends (nothing lands in the tree)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="salvus-admin-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


class HarnessTestCase(SynchronousTestCase):
    """A fresh admin over the fakes per test, driven in memory; calls go as the operator by default."""

    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.h = Harness(self.tmp)

    def call(self, method, *params, user=OP):
        return self.h.rpc(self, method, *params, user=user)

    def assertFault(self, result, code):
        self.assertIsInstance(result, xmlrpclib.Fault, result)
        self.assertEqual(result.faultCode, code, result.faultString)
        return result

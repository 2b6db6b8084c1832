"""Set-up for tests that drive a real admin over a real socket in front of cluster members.

The members share one real SQLite store (one store object in one process, so they see each
other), the admin serves one of them on an ephemeral loopback port, and L{RealClusterAdmin.cli}
runs C{salvusctl} against it in a thread, as a user would.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, threads

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.cli import run
from salvusctl.cluster.service import ClusterService
from salvusctl.cluster.tables import ClusterTables
from salvusctl.store.sqlite import SQLiteStore
from tests.admin.helpers import OP, tempDir, writeUsers

__all__ = ["RealClusterAdmin"]


class RealClusterAdmin:
    """A mixin for a C{TestCase}: L{startCluster}, then L{startAdmin}, then L{cli}."""

    @defer.inlineCallbacks
    def startCluster(
        self,
        names: tuple[str, ...],
        registries: tuple[Callable[[Any], Any], ...] = (),
        handlers: dict[str, Callable] | None = None,
        options: Callable[[str], dict[str, Any]] | None = None,
    ) -> defer.Deferred:
        """A fresh directory with a users file, the store (with the cluster tables and each of
        C{registries}) and the members C{names}, each joined, in C{self.members}."""
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.users = os.path.join(self.tmp, "users")
        writeUsers(self.users)
        self.store = SQLiteStore(reactor, os.path.join(self.tmp, "salvus.db"))
        ClusterTables(self.store)
        for registry in registries:
            registry(self.store)
        yield self.store.start()
        self.addCleanup(self.store.close)
        self.members = {}
        for name in names:
            member = ClusterService(reactor, self.store, name, address="127.0.0.1", heartbeat=0.5,
                                    tables=ClusterTables(self.store, migrate=False),
                                    **(options(name) if options else {}))
            for kind, handler in (handlers or {}).items():
                member.addHandler(kind, handler)
            member.startService()
            self.addCleanup(member.stopService)
            yield member.joined
            self.members[name] = member

    @defer.inlineCallbacks
    def startAdmin(self, host: str) -> defer.Deferred:
        """The admin of member C{host} on a loopback port; its URL in C{self.url}."""
        state = AdminState(services={"cluster": self.members[host]}, clock=reactor, host_name=host)
        self.admin = AdminService(reactor, [Admin("tcp:0:interface=127.0.0.1", users=self.users)], state,
                                  self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        ports = yield self.admin.ready
        self.url = f"http://127.0.0.1:{ports[0].getHost().port}"

    def cli(self, *argv: str, user: tuple[str, str] = OP) -> defer.Deferred:
        """C{salvusctl argv…} against the admin as C{user}; fires with (code, stdout, stderr)."""
        env = {"SALVUS_URL": self.url, "SALVUS_USER": user[0], "SALVUS_PASSWORD": user[1], "HOME": self.tmp}
        out, err = io.StringIO(), io.StringIO()

        def call():
            code = run(list(argv), env, out, err, io.StringIO())
            return code, out.getvalue(), err.getvalue()

        return threads.deferToThread(call)

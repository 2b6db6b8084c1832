"""Set-up for tests that drive a real admin on real sockets over a real supervisor.

The supervisor runs real child processes; the admin listens on a unix socket (for the real
C{supervisorctl}) and on an ephemeral loopback TCP port (for XML-RPC from Python).  The unix socket
sits in a short directory under C{/tmp}, since socket paths are limited to about 100 bytes.
"""

from __future__ import annotations

import os
import shutil
import xmlrpc.client as xmlrpclib

from twisted.internet import defer, reactor, threads
from twisted.internet.utils import getProcessOutputAndValue

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import OP, tempDir, writeUsers
from tests.admin.test_supervisorctl import SUPERVISORCTL
from tests.supervisor import scratch

__all__ = ["SupervisedAdmin"]


class SupervisedAdmin:
    """A mixin for a C{TestCase}: L{startSupervisedAdmin}, then L{rpc} and L{ctl}."""

    @defer.inlineCallbacks
    def startSupervisedAdmin(self, deploys: list[Deploy], prefix: str) -> defer.Deferred:
        """The supervisor of C{deploys} started and ready, and its admin listening: C{self.sup},
        C{self.admin}, C{self.sock} (the unix socket), C{self.port} (the TCP port)."""
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.sockdir = os.path.join("/tmp", f"salvus-{prefix}-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        self.sock = os.path.join(self.sockdir, "admin.sock")
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        self.sup = SupervisorService(reactor, deploys, runDir=scratch(self), reapInterval=0.2)
        self.sup.startService()
        self.addCleanup(lambda: self.sup.stopService() if self.sup.running else None)
        yield self.sup.ready
        state = AdminState(services={"supervisor": self.sup}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{self.sock}", "tcp:0:interface=127.0.0.1", users=users)
        declaration.validate(None)
        self.admin = AdminService(reactor, [declaration], state, self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        ports = yield self.admin.ready
        self.port = [p for p in ports if hasattr(p.getHost(), "port")][0].getHost().port

    def rpc(self, method: str, *args) -> defer.Deferred:
        """One XML-RPC call over the admin's TCP socket, in a thread (the reactor keeps running);
        a fault comes back as C{("fault", code, string)}."""
        url = f"http://{OP[0]}:{OP[1]}@127.0.0.1:{self.port}/RPC2"

        def call():
            try:
                return getattr(xmlrpclib.ServerProxy(url), method)(*args)
            except xmlrpclib.Fault as f:
                return ("fault", f.faultCode, f.faultString)

        return threads.deferToThread(call)

    def ctl(self, *args: str) -> defer.Deferred:
        """The real C{supervisorctl args…} over the unix socket as the operator; fires with
        (out, err, code)."""
        argv = ["-s", f"unix://{self.sock}", "-u", OP[0], "-p", OP[1], *args]
        return getProcessOutputAndValue(SUPERVISORCTL, argv, env=ctlEnv(self.tmp), path=self.tmp,
                                        reactor=reactor)


def ctlEnv(home: str) -> dict[str, str]:
    """The environment the real C{supervisorctl} runs with: a PATH, a HOME, a UTF-8 locale."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8"}

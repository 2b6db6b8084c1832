"""A stale admin socket is replaced at start, a live one refused: with real socket files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.admin.unixsocket import SocketInUse
from salvusctl.errors import ConfigError
from tests.admin.helpers import OP, basic, tempDir, writeUsers
from tests.admin.test_hostheader import _Raw, _status


class StaleSocketTests(TestCase):
    timeout = 30

    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.users = os.path.join(self.tmp, "users")
        writeUsers(self.users)
        self.sockdir = os.path.join("/tmp", f"salvus-s-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        self.path = os.path.join(self.sockdir, "admin.sock")

    def service(self) -> AdminService:
        state = AdminState(services={}, clock=reactor, host_name="h")
        return AdminService(reactor, [Admin(f"unix:{self.path}", users=self.users)], state, self.tmp)

    def leaveSocket(self) -> None:
        """A socket file nobody listens on, as a killed host (or a reboot) leaves it."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.close()

    def liveUnrelatedPid(self) -> int:
        argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE)

        def reap():
            child.stdin.close()
            child.wait()

        self.addCleanup(reap)
        return child.pid

    @defer.inlineCallbacks
    def assertServes(self, service):
        service.startService()
        self.addCleanup(service.stopService)
        yield service.ready
        auth = basic(OP)[b"Authorization"][0]
        raw = _Raw(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: "
                   + auth + b"\r\n\r\n")
        yield connectProtocol(UNIXClientEndpoint(reactor, self.path), raw)
        self.assertEqual(_status((yield raw.done)), 200)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_socketWithoutLockIsReplaced(self):
        """A socket file left without its lock no longer stops the start."""
        self.leaveSocket()
        self.assertFalse(os.path.lexists(self.path + ".lock"))
        return self.assertServes(self.service())

    def test_socketDirectoryThatDoesNotExistYetIsCreated(self):
        """C{unix:var/run/admin.sock} on a fresh host: the directories are made (0700, as the
        admin's other private directories), never a traceback at start."""
        self.path = os.path.join(self.sockdir, "not", "yet", "admin.sock")
        d = self.assertServes(self.service())

        def check(_):
            self.assertEqual(os.stat(os.path.dirname(self.path)).st_mode & 0o777, 0o700)
            self.assertEqual(self.flushLoggedErrors(), [])

        return d.addCallback(check)

    def test_socketDirectoryThatCannotBeMadeIsOneLine(self):
        """A file where the directory should be: the start fails with one line naming both."""
        blocker = os.path.join(self.sockdir, "file")
        open(blocker, "w").close()
        self.path = os.path.join(blocker, "admin.sock")
        service = self.service()
        with self.assertRaises(ConfigError) as caught:
            service.startService()
        self.assertEqual(str(caught.exception),
                         f"admin socket {self.path}: cannot make its directory {blocker}: File exists")
        self.assertEqual(service.ports, [])

    def test_lockNamingALiveUnrelatedPidIsReplaced(self):
        """After a reboot the lock's pid may belong to another process: the socket that nobody
        answers on is what counts."""
        self.leaveSocket()
        os.symlink(str(self.liveUnrelatedPid()), self.path + ".lock")
        return self.assertServes(self.service())

    def test_lockWithoutSocketIsReplaced(self):
        os.symlink(str(self.liveUnrelatedPid()), self.path + ".lock")
        return self.assertServes(self.service())

    @defer.inlineCallbacks
    def test_liveSocketIsRefusedWithOneLine(self):
        """A second host on a socket that is served refuses to start and leaves the first alone."""
        first = self.service()
        yield self.assertServes(first)
        second = self.service()
        with self.assertRaises(SocketInUse) as e:
            second.privilegedStartService()
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertIn(f"admin socket {self.path} is served by a running process (pid {os.getpid()})", message)
        self.flushLoggedErrors(SocketInUse)
        raw = _Raw(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        yield connectProtocol(UNIXClientEndpoint(reactor, self.path), raw)
        # The first still serves (and lets its own uid in without a password).
        self.assertEqual(_status((yield raw.done)), 200)

    def test_notASocketIsRefusedAndKept(self):
        with open(self.path, "w") as f:
            f.write("precious")
        with self.assertRaises(SocketInUse) as e:
            self.service().privilegedStartService()
        self.assertIn("exists and is not a socket", str(e.exception))
        self.flushLoggedErrors(SocketInUse)
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    @defer.inlineCallbacks
    def test_liveSocketStopsTwistdWithOneLine(self):
        """A real C{twistd salvus} against a served socket exits 1 with one line, before it makes a
        user (the host's listener check runs before anything starts)."""
        from twisted.internet.utils import getProcessOutputAndValue

        yield self.assertServes(self.service())
        tac = os.path.join(self.tmp, "h.tac")
        var = os.path.join(self.tmp, "var")
        with open(tac, "w") as f:
            f.write("from salvusctl.host import Host\nfrom salvusctl.admin import Admin\n"
                    f"host = Host(name='h', var={var!r})\n"
                    f"host.add(Admin('unix:{self.path}', bootstrap_user='admin'))\n")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        out, err, code = yield getProcessOutputAndValue(
            twistd, ["-n", "--pidfile=", "salvus", "--config", tac], env=dict(os.environ), path=self.tmp,
            reactor=reactor,
        )
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(
            err.decode().strip(), f"salvus: error: admin socket {self.path} is served by a running process "
            f"(pid {os.getpid()}): stop it first",
        )
        self.assertFalse(os.path.exists(os.path.join(var, "admin-users")))


class NoHostOverUnixSocketTests(TestCase):
    """HTTP/1.0 may omit C{Host}; on the unix socket there is no address to stand in for it."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        sockdir = os.path.join("/tmp", f"salvus-n-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, sockdir, True)
        self.path = os.path.join(sockdir, "admin.sock")
        state = AdminState(services={}, clock=reactor, host_name="h")
        self.service = AdminService(reactor, [Admin(f"unix:{self.path}", users=users)], state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.ready

    @defer.inlineCallbacks
    def get(self, request: bytes) -> defer.Deferred:
        raw = _Raw(request)
        yield connectProtocol(UNIXClientEndpoint(reactor, self.path), raw)
        answer = yield raw.done
        return answer

    @defer.inlineCallbacks
    def test_rootWithoutHostIsServed(self):
        """C{GET / HTTP/1.0} with no C{Host} (nc, socat, a bare script) gets the pages, not a
        traceback from a framework asking the socket for a host name it does not have."""
        for path, status in ((b"/", 200), (b"/metrics", 200), (b"/nowhere", 404)):
            answer = yield self.get(b"GET " + path + b" HTTP/1.0\r\n\r\n")
            self.assertNotIn(b"Traceback", answer)
            self.assertNotIn(b"AttributeError", answer)
            self.assertEqual(_status(answer), status, (path, answer[:300]))
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_urlsWithoutHostOrPortAreWellFormed(self):
        """C{prePathURL} and C{URLPath} (Twisted reads the listening address's port) name
        C{http://localhost/…} on the unix socket."""
        from twisted.web.test.requesthelper import DummyChannel

        from salvusctl.admin.auth import BoundedRequest

        channel = DummyChannel()
        channel.transport = DummyChannel.TCP()
        from twisted.internet.address import UNIXAddress

        channel.transport.getHost = lambda: UNIXAddress(self.path.encode())
        request = BoundedRequest(channel)
        request.clientproto = b"HTTP/1.0"
        request.prepath = [b"a b", b"c"]
        self.assertEqual(request.getRequestHostname(), b"localhost")
        self.assertEqual(request.prePathURL(), b"http://localhost/a%20b/c")
        self.assertEqual(str(request.URLPath()), "http://localhost/a%20b/c")
        request.requestHeaders.setRawHeaders(b"host", [b"box:80"])
        self.assertEqual(request.prePathURL(), b"http://box/a%20b/c")
        yield None

"""The Host header check, over real sockets: DNS-rebinding pages are refused, clients are not."""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.ssl import CertificateOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.hostcheck import HostNames, parseHostHeader
from salvusctl.admin.state import AdminState
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import OP, basic, tempDir, writeUsers


class _Raw(protocol.Protocol):
    """Sends one request as bytes and collects the whole answer (the server closes)."""

    def __init__(self, request: bytes):
        self.request = request
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


def _request(host: bytes | None, path: bytes = b"/metrics", proto: bytes = b"HTTP/1.1") -> bytes:
    auth = basic(OP)[b"Authorization"][0]
    lines = [b"GET " + path + b" " + proto, b"Authorization: " + auth, b"Connection: close"]
    if host is not None:
        lines.append(b"Host: " + host)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


class HostHeaderOverSocketsTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.sockdir = os.path.join("/tmp", f"salvus-h-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        services = {"supervisor": FakeSupervisor(clock=reactor)}
        state = AdminState(services=services, clock=reactor, host_name="box")
        declaration = Admin(
            "ssl:0:interface=127.0.0.1",
            "tcp:0:interface=127.0.0.1",
            f"unix:{self.sockdir}/a.sock",
            users=users,
        )
        self.service = AdminService(reactor, [declaration], state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        self.https, self.http = [p.getHost().port for p in ports if hasattr(p.getHost(), "port")]

    def send(self, endpoint, request: bytes):
        raw = _Raw(request)
        d = connectProtocol(endpoint, raw)
        d.addCallback(lambda _: raw.done)
        d.addCallback(_status)
        return d

    def http_(self, host):
        return self.send(TCP4ClientEndpoint(reactor, "127.0.0.1", self.http), _request(host))

    def https_(self, host):
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", self.https, CertificateOptions())
        return self.send(endpoint, _request(host))

    @defer.inlineCallbacks
    def test_foreignHostIsRefusedOnHTTPAndHTTPS(self):
        """A rebinding page sends its own name: 421 on both TCP listeners, before any route."""
        for send in (self.http_, self.https_):
            self.assertEqual((yield send(b"evil.example")), 421)
            self.assertEqual((yield send(b"evil.example:%d" % self.http)), 421)
            self.assertEqual((yield send(b"127.0.0.1.evil.example")), 421)
            self.assertEqual((yield send(b"localhost, evil.example")), 421)

    @defer.inlineCallbacks
    def test_ownNamesAreServed(self):
        """Loopback names and addresses, the interface and the certificate's names, with or
        without a port, as supervisorctl (C{127.0.0.1:PORT}) and browsers send them."""
        for send, port in ((self.http_, self.http), (self.https_, self.https)):
            for host in (b"127.0.0.1:%d" % port, b"127.0.0.1", b"localhost", b"LOCALHOST:%d" % port,
                         b"[::1]:%d" % port, b"box", b"box:%d" % port):
                self.assertEqual((yield send(host)), 200, host)

    @defer.inlineCallbacks
    def test_missingHostNeedsHTTP10(self):
        """HTTP/1.1 must name its host (RFC 9112); HTTP/1.0 may not."""
        ep = TCP4ClientEndpoint(reactor, "127.0.0.1", self.http)
        self.assertEqual((yield self.send(ep, _request(None))), 400)
        self.assertEqual((yield self.send(ep, _request(None, proto=b"HTTP/1.0"))), 200)

    @defer.inlineCallbacks
    def test_unixSocketIsExempt(self):
        """The unix socket has no names: any Host header (supervisorctl sends C{localhost}) is served."""
        ep = UNIXClientEndpoint(reactor, f"{self.sockdir}/a.sock")
        self.assertEqual((yield self.send(ep, _request(b"evil.example"))), 200)
        self.assertEqual((yield self.send(ep, _request(b"localhost"))), 200)


class HostNamesTests(SynchronousTestCase):
    def test_parse(self):
        self.assertEqual(parseHostHeader("[::1]:9001"), "::1")
        self.assertEqual(parseHostHeader("LocalHost.:80"), "localhost")
        for bad in ("", "::1", "a:b", "a:0", "a:70000", "[::1", "[x]:1", "a b", "*.x.org"):
            self.assertIsNone(parseHostHeader(bad), bad)

    def test_wildcardAndLocalAddress(self):
        names = HostNames(["*.example.org", "0.0.0.0"])
        self.assertTrue(names.allows("a.example.org:8443"))
        self.assertFalse(names.allows("a.b.example.org"))
        self.assertFalse(names.allows("example.org"))
        self.assertFalse(names.allows("0.0.0.0"))
        self.assertTrue(names.allows("10.1.2.3:9001", local_address="10.1.2.3"))
        self.assertFalse(names.allows("10.1.2.4", local_address="10.1.2.3"))

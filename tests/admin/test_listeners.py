"""The Admin declaration, its listeners and the request-size bound, over real sockets."""

from __future__ import annotations

import os
import xmlrpc.client as xmlrpclib

import treq
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from salvusctl.admin import Admin
from salvusctl.admin.build import AdminService, buildAdmin
from salvusctl.admin.state import AdminState
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import OP, basic, tempDir, writeUsers


@implementer(IBodyProducer)
class _Chunks:
    """A body of unknown length (sent chunked)."""

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes):
        self.data = data

    def startProducing(self, consumer):
        for i in range(0, len(self.data), 16384):
            consumer.write(self.data[i : i + 16384])
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class DeclarationTests(SynchronousTestCase):
    def assertConfigError(self, declaration, text):
        with self.assertRaises(ConfigError) as e:
            declaration.validate(None)
        self.assertIn(text, str(e.exception))

    def test_plainHTTPBeyondLoopbackNeedsOptIn(self):
        """Basic-auth passwords in clear on a network need an explicit flag."""
        self.assertConfigError(Admin("tcp:9001"), "allow_plain_http")
        self.assertConfigError(Admin("tcp:9001:interface=0.0.0.0"), "beyond loopback")
        Admin("tcp:9001", allow_plain_http=True).validate(None)
        Admin("tcp:9001:interface=127.0.0.1").validate(None)
        Admin("tcp6:9001:interface=\\:\\:1").validate(None)
        Admin("ssl:8443", "unix:/tmp/admin.sock").validate(None)

    def test_badDeclarations(self):
        self.assertConfigError(Admin(), "at least one listener")
        self.assertConfigError(Admin("udp:53"), "use tcp:, tcp6:, ssl: or unix:")
        self.assertConfigError(Admin("ssl:8443:privateKey=/nonexistent.pem"), "bad admin listener")
        self.assertConfigError(Admin("ssl:8443", refresh=-1), "refresh")
        self.assertConfigError(Admin("ssl:8443", project_url="javascript:alert(1)"), "project_url")
        self.assertConfigError(Admin(42), "endpoint string")

    def test_hostRefusesClash(self):
        """Two listeners on one port are refused by the host before anything starts."""
        host = Host(name="h", var=tempDir(self))
        host.add(Admin("ssl:8443"))
        host.add(Admin("tcp:8443:interface=127.0.0.1"))
        with self.assertRaises(ConfigError):
            host.validate()

    def test_buildAdmin(self):
        """The builder makes one service for all declarations (none without any)."""

        class Context:
            reactor = None
            services: dict = {}
            store = None
            var_dir = "/tmp/x"

            class host:
                name = "h"

        self.assertIsNone(buildAdmin(Context(), []))
        service = buildAdmin(Context(), [Admin("ssl:8443"), Admin("unix:/tmp/a.sock")])
        self.assertIsInstance(service, AdminService)
        self.assertEqual(len(service.declarations), 2)


class RealSocketTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def startAdmin(self, *listen, **kw):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        self.supervisor = FakeSupervisor(clock=reactor)
        state = AdminState(services={"supervisor": self.supervisor}, clock=reactor, host_name="h")
        service = AdminService(reactor, [Admin(*listen, users=users, **kw)], state, self.tmp)
        service.startService()
        self.addCleanup(service.stopService)
        ports = yield service.ready
        return service, ports

    @defer.inlineCallbacks
    def test_hugePayloadIs413(self):
        """A body over the bound is refused with 413 before it is stored or parsed."""
        service, ports = yield self.startAdmin("tcp:0:interface=127.0.0.1", max_request_bytes=64 * 1024)
        url = f"http://127.0.0.1:{ports[0].getHost().port}/RPC2"
        body = xmlrpclib.dumps(("x" * 200_000,), "supervisor.getProcessInfo").encode()
        headers = {**basic(OP), b"Content-Type": [b"text/xml"]}
        response = yield treq.post(url, data=body, headers=headers, reactor=reactor, persistent=False)
        self.assertEqual(response.code, 413)
        self.assertIn(b"larger than 65536", (yield response.content()))
        small = xmlrpclib.dumps(("web:0",), "supervisor.getProcessInfo").encode()
        response = yield treq.post(url, data=small, headers=headers, reactor=reactor, persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(xmlrpclib.loads((yield response.content()))[0][0]["statename"], "RUNNING")

    @defer.inlineCallbacks
    def test_hugeChunkedPayloadIs413(self):
        """Without a Content-Length the body is counted as it arrives and dropped past the bound."""
        service, ports = yield self.startAdmin("tcp:0:interface=127.0.0.1", max_request_bytes=64 * 1024)
        url = f"http://127.0.0.1:{ports[0].getHost().port}/RPC2"
        headers = {**basic(OP), b"Content-Type": [b"text/xml"]}
        response = yield treq.post(
            url, data=_Chunks(b"<x>" * 100_000), headers=headers, reactor=reactor, persistent=False
        )
        self.assertEqual(response.code, 413)
        yield response.content()

    @defer.inlineCallbacks
    def test_httpsCarriesHSTS(self):
        service, ports = yield self.startAdmin("ssl:0:interface=127.0.0.1")
        from twisted.internet import ssl as tssl
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

        with open(os.path.join(self.tmp, "admin", "admin.crt"), "rb") as f:
            authority = tssl.Certificate.loadPEM(f.read())
        agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=authority))
        url = f"https://127.0.0.1:{ports[0].getHost().port}/RPC2"
        response = yield treq.get(url, headers=basic(OP), agent=agent)
        yield response.content()
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"strict-transport-security"), [b"max-age=31536000"])

    @defer.inlineCallbacks
    def test_noUsersWarns(self):
        """An admin nobody can log in to says so, with the command that fixes it."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        tmp = tempDir(self)
        state = AdminState(services={}, clock=reactor, host_name="h")
        service = AdminService(reactor, [Admin("tcp:0:interface=127.0.0.1")], state, tmp)
        service.startService()
        self.addCleanup(service.stopService)
        yield service.ready
        self.assertTrue(any("salvusctl user add" in str(e.get("log_format")) for e in events))

    @defer.inlineCallbacks
    def test_plainHTTPWarns(self):
        """An opted-in plain-HTTP listener beyond loopback logs a warning."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.startAdmin("tcp:0", allow_plain_http=True)
        self.assertTrue(any("passwords travel in clear" in str(e.get("log_format")) for e in events))


class HostIntegrationTests(TestCase):
    """An Admin declared on a Host: built by the host, bootstrap user printed once, serving."""

    timeout = 30

    @defer.inlineCallbacks
    def test_hostBuildsAndServes(self):
        var = tempDir(self)
        host = Host(name="integration", store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
        host.add(Admin("tcp:0:interface=127.0.0.1", bootstrap_user="admin"))
        top = host.build(reactor)
        top.startService()
        self.addCleanup(top.stopService)
        admin = top.getServiceNamed("admin")
        ports = yield admin.ready
        password = admin.bootstrap_passwords["admin"]
        self.assertTrue(os.path.exists(os.path.join(var, "admin-users")))
        url = f"http://127.0.0.1:{ports[0].getHost().port}/RPC2"
        body = xmlrpclib.dumps((), "salvus.hostInfo").encode()
        headers = {**basic(("admin", password)), b"Content-Type": [b"text/xml"]}
        response = yield treq.post(url, data=body, headers=headers, reactor=reactor, persistent=False)
        info = xmlrpclib.loads((yield response.content()))[0][0]
        self.assertEqual(info["name"], "integration")
        self.assertIn("store", info["services"])
        body = xmlrpclib.dumps((), "supervisor.getAllProcessInfo").encode()
        response = yield treq.post(url, data=body, headers=headers, reactor=reactor, persistent=False)
        with self.assertRaises(xmlrpclib.Fault) as e:
            xmlrpclib.loads((yield response.content()))
        self.assertEqual(e.exception.faultString, "NO_SERVICE: this host runs no supervisor")


class BindFailureTests(TestCase):
    def test_portTakenFailsLoudly(self):
        """A listener that cannot bind stops the start with that error (no admin-less host)."""
        from twisted.internet.error import CannotListenError

        tmp = tempDir(self)
        users = os.path.join(tmp, "users")
        writeUsers(users)
        state = AdminState(services={}, clock=reactor, host_name="h")
        first = AdminService(reactor, [Admin("tcp:0:interface=127.0.0.1", users=users)], state, tmp)
        first.startService()
        self.addCleanup(first.stopService)
        port = self.successResultOf(first.ready)[0].getHost().port
        second = AdminService(reactor, [Admin(f"tcp:{port}:interface=127.0.0.1", users=users)], state, tmp)
        with self.assertRaises(CannotListenError):
            second.privilegedStartService()


class HostValidationTests(SynchronousTestCase):
    def test_sslWithoutKeyPassesHostValidation(self):
        """The host's clash check does not need the certificate that is only made at start."""
        host = Host(name="h", var=tempDir(self))
        host.add(Admin("ssl:18443:interface=127.0.0.1", "ssl:port=18444", "ssl:18445:interface=\\:\\:1"))
        host.validate()
        self.assertEqual(
            host.declarations("admin")[0].endpoints(),
            ["tcp:18443:interface=127.0.0.1", "tcp:18444", "tcp:18445:interface=\\:\\:1"],
        )

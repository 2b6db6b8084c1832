"""The admin's TLS listener: TLS 1.2 and 1.3 only, AEAD suites only; checked with the real
C{openssl s_client} against a real listener."""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from salvusctl.admin import Admin
from salvusctl.admin.build import AdminService
from salvusctl.admin.certs import makeSelfSigned
from salvusctl.admin.state import AdminState
from salvusctl.admin.tls import AEAD_CIPHERS, tlsEndpoint, tlsOptions
from salvusctl.errors import ConfigError
from salvusctl.testing import FakeSupervisor
from tests.admin.helpers import tempDir, writeUsers

OPENSSL = shutil.which("openssl")


class _Collect(protocol.ProcessProtocol):
    """Closes the child's stdin at once (s_client then ends after the handshake), keeps its output."""

    def __init__(self):
        self.output = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data):
        self.output += data

    def errReceived(self, data):
        self.output += data

    def processEnded(self, reason):
        self.done.callback((reason.value.exitCode, self.output.decode("utf-8", "replace")))


def sClient(port: int, *options: str) -> defer.Deferred:
    """(exit status, output) of C{openssl s_client} connecting to 127.0.0.1:PORT with C{options}."""
    collect = _Collect()
    argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *options]
    reactor.spawnProcess(collect, OPENSSL, argv, env={"PATH": os.environ.get("PATH", "")})
    return collect.done


def _handshook(output: str) -> bool:
    """Whether s_client's report shows an agreed suite (a refused handshake has none)."""
    return "Cipher is (NONE)" not in output and ", Cipher is " in output


class TLSListenerTests(TestCase):
    """A real admin on C{ssl:0} with its own self-signed EC certificate."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        if OPENSSL is None:
            raise SkipTest("needs the openssl binary (Debian package openssl)")
        tmp = tempDir(self)
        users = os.path.join(tmp, "users")
        writeUsers(users)
        services = {"supervisor": FakeSupervisor(clock=reactor)}
        state = AdminState(services=services, clock=reactor, host_name="h")
        service = AdminService(reactor, [Admin("ssl:0:interface=127.0.0.1", users=users)], state, tmp)
        service.startService()
        self.addCleanup(service.stopService)
        ports = yield service.ready
        self.port = ports[0].getHost().port

    @defer.inlineCallbacks
    def test_tls13IsAccepted(self):
        code, out = yield sClient(self.port, "-tls1_3")
        self.assertTrue(_handshook(out), out)
        self.assertIn("TLSv1.3", out)

    @defer.inlineCallbacks
    def test_tls12WithAnAEADSuiteIsAccepted(self):
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            code, out = yield sClient(self.port, "-tls1_2", "-cipher", suite)
            self.assertTrue(_handshook(out), out)
            self.assertIn(suite, out)

    @defer.inlineCallbacks
    def test_tls12WithCBCSuitesIsRefused(self):
        """CBC suites with TLS 1.2 (OpenSSL's defaults offer them) are padding-oracle targets."""
        for suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA",
                      "ECDHE-ECDSA-AES256-SHA"):
            code, out = yield sClient(self.port, "-tls1_2", "-cipher", suite)
            self.assertFalse(_handshook(out), (suite, out))
            self.assertNotEqual(code, 0, (suite, out))

    @defer.inlineCallbacks
    def test_tls10And11AreRefused(self):
        """Refused by the server, not only by the client's own security level (lowered here)."""
        for version in ("-tls1", "-tls1_1"):
            code, out = yield sClient(self.port, version, "-cipher", "DEFAULT:@SECLEVEL=0")
            self.assertFalse(_handshook(out), (version, out))
            self.assertNotEqual(code, 0, (version, out))


class TLSOptionsTests(SynchronousTestCase):
    def setUp(self):
        import datetime

        self.tmp = tempDir(self)
        key, cert = makeSelfSigned("h", datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        self.key, self.cert = os.path.join(self.tmp, "k.pem"), os.path.join(self.tmp, "c.pem")
        for path, pem in ((self.key, key), (self.cert, cert)):
            with open(path, "wb") as f:
                f.write(pem)

    def test_offeredSuitesAreAEADOnly(self):
        """What a server context made from the options offers: TLS 1.3's suites (all AEAD) and
        ECDHE suites with GCM or ChaCha20-Poly1305; no CBC, no RSA key exchange."""
        from OpenSSL import SSL

        suites = SSL.Connection(tlsOptions(self.key, self.cert).getContext(), None).get_cipher_list()
        tls12 = [s for s in suites if not s.startswith("TLS_")]
        self.assertTrue(tls12, suites)
        for suite in tls12:
            self.assertTrue(suite.startswith("ECDHE-") and ("GCM" in suite or "CHACHA20" in suite), suites)
        self.assertEqual(AEAD_CIPHERS, "ECDHE+AESGCM:ECDHE+CHACHA20")

    def test_endpointStringKeysAndErrors(self):
        description = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
        endpoint = tlsEndpoint(reactor, description)
        self.assertEqual((endpoint._port, endpoint._interface), (0, "127.0.0.1"))
        for description, message in (
            ("tcp:0", "not an ssl: endpoint"),
            (f"ssl:0:privateKey={self.key}:sslmethod=TLSv1_METHOD", "sslmethod"),
            (f"ssl:0:privateKey={self.key}:bogus=1", "unknown option bogus"),
            (f"ssl:0:privateKey={self.tmp}/missing.pem", "cannot load"),
            ("ssl:0", "names no privateKey"),
        ):
            with self.assertRaises(ValueError) as caught:
                tlsEndpoint(reactor, description)
            self.assertIn(message, str(caught.exception))

    def test_sslmethodIsAConfigError(self):
        with self.assertRaises(ConfigError):
            Admin("ssl:8443:sslmethod=TLSv1_METHOD").validate(None)

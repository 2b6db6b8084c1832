"""TLS listeners with real clients: curl offering ALPN, Connection: close load, client half-close."""

from __future__ import annotations

import shutil
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from tests.balancer.helpers import tempdir
from tests.balancer.tlsutil import makeCertificate

CURL = shutil.which("curl")

# A TLS client that sends one request, then half-closes: "notify" sends close_notify (TLS 1.3
# lets the other side go on sending), "fin" shuts down the TCP sending side under TLS, "both"
# does the two.  It prints what came back and how the stream ended.
HALF_CLOSE_CLIENT = r"""
import socket, sys
from OpenSSL import SSL
port, mode = int(sys.argv[1]), sys.argv[2]
ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
s = socket.create_connection(("127.0.0.1", port))
c = SSL.Connection(ctx, s)
c.set_connect_state()
c.do_handshake()
c.sendall(b"GET / HTTP/1.0\r\n\r\n")
if mode in ("notify", "both"):
    c.shutdown()
if mode in ("fin", "both"):
    s.shutdown(socket.SHUT_WR)
out, end = b"", "eof"
while True:
    try:
        d = c.recv(65536)
    except SSL.ZeroReturnError:
        end = "close_notify"
        break
    except SSL.SysCallError:
        end = "unexpected eof"
        break
    if not d:
        break
    out += d
sys.stdout.write(end + "\n" + out.decode())
"""


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello over tls\n"


class _QuietSite(Site):
    def log(self, request):
        pass


class TLSListenerTests(TestCase):
    """A balancer listening on C{ssl:} in front of a plain HTTP backend, all on 127.0.0.1."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.dir = tempdir(self)
        self.key, self.cert = makeCertificate(self.dir)
        backend = reactor.listenTCP(0, _QuietSite(_Hello()), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
        decl = Balanced("tls", listen=[listen],
                        groups=[Group("g", [Server(f"127.0.0.1:{backend.getHost().port}")],
                                      health=HealthCheck(interval=60))])
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.balancer = BalancerService(reactor, [decl])
        self.balancer.startService()
        self.addCleanup(self.balancer.stopService)
        svc = self.balancer.balanced["tls"]
        yield svc.listening
        self.port = svc.ports[0].getHost().port

    def curl(self, *args: str):
        if CURL is None:
            self.skipTest("curl is not installed")
        return getProcessOutputAndValue(CURL, (
            "-sS", "--http1.1", "--cacert", self.cert,
            "--resolve", f"localhost:{self.port}:127.0.0.1", *args), env={})

    def tracebacks(self) -> list[str]:
        texts = []
        for event in self.events:
            if "log_failure" in event or "Traceback" in (formatEvent(event) or ""):
                texts.append(formatEvent(event) or repr(event))
        return texts

    @inlineCallbacks
    def test_curl_offering_alpn_connects(self):
        """curl offers ALPN (http/1.1) by default; browsers do too.  The balancer selects no
        protocol and the handshake goes on (it was a fatal internal_error alert)."""
        out, err, code = yield self.curl("-v", f"https://localhost:{self.port}/")
        self.assertEqual((code, out), (0, b"hello over tls\n"), err.decode())
        self.assertIn(b"ALPN: offers http/1.1", err)
        self.assertEqual(self.tracebacks(), [])

    @inlineCallbacks
    def test_connection_close_load_logs_no_traceback(self):
        """200 requests, each on its own TLS connection closed by the backend: every answer
        arrives and the log has no traceback (thousands were logged under this load)."""
        out, err, code = yield self.curl("-H", "Connection: close",
                                         f"https://localhost:{self.port}/[1-200]")
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(out.count(b"hello over tls\n"), 200)
        self.assertEqual(self.tracebacks(), [])
        self.assertEqual(self.balancer.balanced["tls"].counters()["total"], 200)

    @inlineCallbacks
    def halfClose(self, mode: str):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ("-c", HALF_CLOSE_CLIENT, str(self.port), mode), env={})
        self.assertEqual(code, 0, err.decode())
        end, _, answer = out.decode().partition("\n")
        self.assertIn("200 OK", answer)
        self.assertTrue(answer.endswith("hello over tls\n"), answer)
        self.assertEqual(end, "close_notify")  # and closed cleanly after the answer
        self.assertEqual(self.tracebacks(), [])

    def test_answer_returns_after_client_close_notify(self):
        """A client that sends close_notify after its request still gets the whole answer."""
        return self.halfClose("notify")

    def test_answer_returns_after_client_tcp_half_close(self):
        """A client that shuts down its TCP sending side under TLS still gets the answer."""
        return self.halfClose("fin")

    def test_answer_returns_after_close_notify_and_fin(self):
        return self.halfClose("both")

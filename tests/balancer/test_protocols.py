"""PROXY protocol toward backends, TLS termination on listen, and TLS to backends (real sockets)."""

from __future__ import annotations

from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.balancer import proxyproto
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from tests.balancer.helpers import address, balanced, fetch, startBackend, tempdir
from tests.balancer.tlsutil import makeCertificate


class HeaderTests(SynchronousTestCase):
    src = IPv4Address("TCP", "192.0.2.1", 5000)
    dst = IPv4Address("TCP", "198.51.100.2", 443)

    def test_v1(self):
        line = proxyproto.headerV1(self.src, self.dst)
        self.assertEqual(line, b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n")
        self.assertEqual(proxyproto.parseV1(line), ("192.0.2.1", "198.51.100.2", 5000, 443))

    def test_v1_ipv6_and_unknown(self):
        src6, dst6 = IPv6Address("TCP", "2001:db8::1", 1), IPv6Address("TCP", "2001:db8::2", 2)
        self.assertEqual(proxyproto.headerV1(src6, dst6), b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
        self.assertEqual(proxyproto.headerV1(object(), object()), b"PROXY UNKNOWN\r\n")

    def test_v2_round_trip(self):
        data = proxyproto.headerV2(self.src, self.dst)
        self.assertTrue(data.startswith(proxyproto.V2_SIGNATURE))
        self.assertEqual(len(data), 28)
        self.assertEqual(proxyproto.parseV2(data + b"rest"), (("192.0.2.1", "198.51.100.2", 5000, 443), 28))
        data6 = proxyproto.headerV2(IPv6Address("TCP", "2001:db8::1", 1), IPv6Address("TCP", "::1", 2))
        self.assertEqual(proxyproto.parseV2(data6)[0], ("2001:db8::1", "::1", 1, 2))

    def test_bad_version(self):
        self.assertRaises(ValueError, proxyproto.header, 3, self.src, self.dst)


class Recorder(Protocol):
    def connectionMade(self):
        self.factory.seen.append(self)
        self.data = b""

    def dataReceived(self, data):
        self.data += data
        if self.data.endswith(b"END"):
            self.transport.write(b"ok")
            self.transport.loseConnection()
            self.factory.done.callback(self.data)


class SocketTests(TestCase):
    timeout = 20

    def recorder(self):
        f = Factory.forProtocol(Recorder)
        f.seen = []
        f.done = Deferred()
        port = reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f, f"127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def start(self, decl):
        b = BalancerService(reactor, [decl])
        b.startService()
        self.addCleanup(b.stopService)
        svc = b.balanced[decl.name]
        yield svc.listening
        return svc.ports[0].getHost().port

    @inlineCallbacks
    def test_proxy_v1_header_reaches_backend_first(self):
        f, addr = self.recorder()
        port = yield self.start(balanced([Server(addr, proxy_protocol=1)]))
        data, _ = yield fetch(port, b"payloadEND")
        self.assertEqual(data, b"ok")
        received = yield f.done
        line, rest = received.split(b"\r\n", 1)
        src, dst, sport, dport = proxyproto.parseV1(line + b"\r\n")
        self.assertEqual((src, dst, dport), ("127.0.0.1", "127.0.0.1", port))
        self.assertEqual(rest, b"payloadEND")

    @inlineCallbacks
    def test_proxy_v2_header_reaches_backend_first(self):
        f, addr = self.recorder()
        port = yield self.start(balanced([Server(addr, proxy_protocol=2)]))
        yield fetch(port, b"xEND")
        received = yield f.done
        (src, dst, sport, dport), n = proxyproto.parseV2(received)
        self.assertEqual((src, dport, received[n:]), ("127.0.0.1", port, b"xEND"))

    @inlineCallbacks
    def test_no_header_by_default(self):
        f, addr = self.recorder()
        port = yield self.start(balanced([addr]))
        yield fetch(port, b"xEND")
        received = yield f.done
        self.assertEqual(received, b"xEND")

    @inlineCallbacks
    def test_tls_terminated_on_listen_and_tls_to_backend(self):
        """A TLS client talks to the balancer's ssl: endpoint; the balancer talks TLS to the backend."""
        key, cert = makeCertificate(tempdir(self))
        with open(cert, "rb") as fh:
            trust = ssl.Certificate.loadPEM(fh.read())
        with open(key, "rb") as kf, open(cert, "rb") as cf:
            server_cert = ssl.PrivateCertificate.loadPEM(kf.read() + cf.read())
        backend = startBackend(self, b"tlsbackend")
        backend.port.stopListening()
        backend.port = reactor.listenSSL(0, backend, server_cert.options(), interface="127.0.0.1")
        self.addCleanup(backend.port.stopListening)
        decl = Balanced("tls", listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
                        groups=[Group("g", [Server(address(backend), tls=True, tls_hostname="localhost",
                                                   tls_ca=cert)], health=HealthCheck(interval=60))])
        port = yield self.start(decl)
        done: Deferred = Deferred()

        class C(Protocol):
            def connectionMade(self):
                self.data = b""
                self.transport.write(b"secret")

            def dataReceived(self, data):
                self.data += data

            def connectionLost(self, reason):
                done.callback(self.data)

        class F(ClientFactory):
            def buildProtocol(self, addr):
                return C()

        reactor.connectSSL("127.0.0.1", port, F(), ssl.optionsForClientTLS("localhost", trustRoot=trust))
        data = yield done
        self.assertEqual(data, b"tlsbackend:secret")
        self.assertEqual(backend.received, b"secret")

"""Alert actions against real servers on 127.0.0.1: Twisted's ESMTP server and a web server."""

from __future__ import annotations

import datetime
import email
import ipaddress
import json

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, protocol, reactor
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.mail import smtp
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from salvusctl.alerts.actions import EmailAction, WebhookAction, WebhookError
from salvusctl.alerts.engine import Alert
from salvusctl.interfaces import IAlertAction

ALERT = Alert("cpu:web", "cpu", "web:0", "warning", "web:0 cpu 95% (limit 90%)", "h1", 1795000000.0)


def selfSigned():
    """A key and certificate for localhost / 127.0.0.1, made fresh for the test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert_pem


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, box, recipient):
        self.box, self.recipient, self.lines = box, recipient, []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.box.append((str(self.recipient), b"\n".join(self.lines)))
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box):
        self.box = box

    def receivedHeader(self, helo, origin, recipients):
        return b"Received: from test"

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: _Message(self.box, user.dest)


@implementer(IRealm)
class _Realm:
    def __init__(self, delivery):
        self.delivery = delivery
        self.logins = []

    def requestAvatar(self, avatarId, mind, *interfaces):
        self.logins.append(avatarId)
        return smtp.IMessageDelivery, self.delivery, lambda: None


class _SMTPFactory(protocol.ServerFactory):
    def __init__(self, delivery, tls=None, portal=None):
        self.delivery, self.tls, self.portal = delivery, tls, portal
        self.tlsUsed = []
        self.closed = []

    def buildProtocol(self, addr):
        p = smtp.ESMTP(contextFactory=self.tls)
        closed = defer.Deferred()
        self.closed.append(closed)
        lost = p.connectionLost

        def connectionLost(reason):
            lost(reason)
            closed.callback(None)

        p.connectionLost = connectionLost
        p.factory = self
        p.host = b"mail.test"
        if self.portal is None:
            p.delivery = self.delivery
        else:
            p.portal = self.portal
            p.challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials}
        original = p.ext_STARTTLS

        def starttls(rest):
            self.tlsUsed.append(True)
            return original(rest)

        p.ext_STARTTLS = starttls
        return p


class EmailTests(TestCase):
    def serve(self, **kwargs):
        self.box = []
        factory = _SMTPFactory(_Delivery(self.box), **kwargs)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: defer.gatherResults(factory.closed))
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_plainMessageArrives(self):
        """The alert reaches every recipient with its title as the subject and its details."""
        _, port = self.serve()
        action = EmailAction(reactor, "127.0.0.1", "salvus@h1.test", ["ops@x.test", "dev@x.test"],
                             port=port)
        verifyObject(IAlertAction, action)
        yield action.fire(ALERT)
        self.assertEqual(sorted(r for r, _ in self.box), ["dev@x.test", "ops@x.test"])
        message = email.message_from_bytes(self.box[0][1])
        self.assertEqual(message["Subject"], "[salvus] FIRING warning: cpu:web web:0 on h1")
        self.assertEqual(message["From"], "salvus@h1.test")
        self.assertIn("web:0 cpu 95% (limit 90%)", message.get_payload())
        self.assertIn("subject:  web:0", message.get_payload())

    @defer.inlineCallbacks
    def test_starttlsAndLogin(self):
        """With STARTTLS and a login, the session is encrypted before AUTH and the server saw
        the user."""
        key_pem, cert_pem = selfSigned()
        server_tls = PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alerts=b"s3cret")
        realm = _Realm(_Delivery([]))
        factory, port = self.serve(tls=server_tls, portal=Portal(realm, [checker]))
        realm.delivery = _Delivery(self.box)
        client_tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(cert_pem))
        action = EmailAction(reactor, "127.0.0.1", "salvus@h1.test", "ops@x.test", port=port,
                             starttls=True, username="alerts", password="s3cret",
                             tls_options=client_tls)
        yield action.fire(ALERT)
        self.assertEqual(factory.tlsUsed, [True])
        self.assertEqual(realm.logins, [b"alerts"])
        self.assertEqual([r for r, _ in self.box], ["ops@x.test"])

    @defer.inlineCallbacks
    def test_recoveryNotice(self):
        """A cleared alert is mailed as RESOLVED with its clearing time."""
        from dataclasses import replace

        _, port = self.serve()
        action = EmailAction(reactor, "127.0.0.1", "salvus@h1.test", ["ops@x.test"], port=port)
        yield action.fire(replace(ALERT, cleared=True, cleared_at=ALERT.fired_at + 60))
        message = email.message_from_bytes(self.box[0][1])
        self.assertEqual(message["Subject"], "[salvus] RESOLVED: cpu:web web:0 on h1")
        self.assertIn("cleared:", message.get_payload())

    def test_badSettings(self):
        """Missing recipients, a bad sender or half a login are refused when declared."""
        with self.assertRaises(ValueError):
            EmailAction(reactor, "127.0.0.1", "salvus@h1", [])
        with self.assertRaises(ValueError):
            EmailAction(reactor, "127.0.0.1", "salvus", ["a@b"])
        with self.assertRaises(ValueError):
            EmailAction(reactor, "127.0.0.1", "salvus@h1", ["a@b"], username="u")


class _Hook(Resource):
    isLeaf = True

    def __init__(self, code=200):
        super().__init__()
        self.code = code
        self.received = []

    def render_POST(self, request):
        self.received.append((request.getHeader(b"content-type"), request.content.read()))
        request.setResponseCode(self.code)
        return b"ok"


class WebhookTests(TestCase):
    def serve(self, code=200):
        hook = _Hook(code)
        port = reactor.listenTCP(0, Site(hook), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return hook, f"http://127.0.0.1:{port.getHost().port}/hook"

    @defer.inlineCallbacks
    def test_postsJSON(self):
        """The alert's fields arrive as one JSON object."""
        hook, url = self.serve()
        action = WebhookAction(Agent(reactor), url, headers={"X-Token": "t"})
        verifyObject(IAlertAction, action)
        code = yield action.fire(ALERT)
        self.assertEqual(code, 200)
        ctype, body = hook.received[0]
        self.assertEqual(ctype, b"application/json")
        data = json.loads(body)
        self.assertEqual((data["rule"], data["subject"], data["cleared"]), ("cpu:web", "web:0", False))

    @defer.inlineCallbacks
    def test_errorStatusFails(self):
        """A webhook answering 500 is a failure the engine logs (not a silent success)."""
        hook, url = self.serve(code=500)
        action = WebhookAction(Agent(reactor), url)
        with self.assertRaises(WebhookError) as e:
            yield action.fire(ALERT)
        self.assertIn("500", str(e.exception))

    def test_badURL(self):
        """Only http(s) URLs."""
        with self.assertRaises(ValueError):
            WebhookAction(Agent(reactor), "ftp://x/")

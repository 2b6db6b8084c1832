"""Alert actions: record (store and log), e-mail over SMTP, JSON webhook.

Each takes what it talks through as a parameter (the store, the reactor, an HTTP agent), so tests
drive them against a real SMTP server or web server on 127.0.0.1 without global state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from salvusctl.interfaces import IAlertAction

__all__ = ["RecordAction", "EmailAction", "WebhookAction", "WebhookError", "formatAlertMail", "actionKey"]

log = Logger()


def actionKey(action: Any) -> str:
    """The name a queued notice gives its action: the action's C{key}, else its class."""
    key = getattr(action, "key", None)
    if key:
        return str(key)
    cls = type(action)
    return f"{cls.__module__}.{cls.__qualname__}"


@implementer(IAlertAction)
class RecordAction:
    """Writes each alert and each recovery to the C{alerts} table and the log.

    Sees every change (C{records = True}), including those the repeat filter keeps from
    notifications: the store is the audit trail.
    """

    records = True

    def __init__(self, store):
        self._store = store

    def fire(self, alert) -> Deferred:
        if alert.cleared:
            log.info("alert cleared: {title}: {message}", title=alert.title, message=alert.message)
            return self._store.runOperation(
                "UPDATE alerts SET cleared_at = ? WHERE rule = ? AND subject = ? AND host = ?"
                " AND cleared_at IS NULL",
                (alert.cleared_at, alert.rule, alert.subject, alert.host),
            )
        log.warn("alert: {title}: {message}", title=alert.title, message=alert.message)
        return self._store.runOperation(
            "INSERT INTO alerts (host, rule, subject, severity, message, fired_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (alert.host, alert.rule, alert.subject, alert.severity, alert.message, alert.fired_at),
        )


def formatAlertMail(alert, sender: str, recipients: Iterable[str], now: float) -> bytes:
    """The RFC 5322 message for one alert (subject line = the alert's title)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = alert.title
    msg["Date"] = formatdate(now)
    msg["Message-ID"] = make_msgid("salvus")
    lines = [
        alert.message,
        "",
        f"rule:     {alert.rule} ({alert.kind})",
        f"subject:  {alert.subject}",
        f"host:     {alert.host}",
        f"severity: {alert.severity}",
        f"fired:    {formatdate(alert.fired_at)}",
    ]
    if alert.cleared:
        lines.append(f"cleared:  {formatdate(alert.cleared_at)}")
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes()


@implementer(IAlertAction)
class EmailAction:
    """Sends each notification by e-mail through Twisted's ESMTP client.

    @param server: the SMTP server's host name; C{port} its port.
    @param starttls: require STARTTLS (the server's certificate is verified against
        C{tls_options} or, by default, the system's trust roots for C{server}).
    @param username: log in (AUTH) with C{username}/C{password} when given.
    """

    records = False

    def __init__(
        self,
        reactor,
        server: str,
        sender: str,
        recipients: Iterable[str],
        port: int = 25,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls_options=None,
        timeout: float = 60,
        retries: int = 2,
    ):
        recipients = [recipients] if isinstance(recipients, str) else list(recipients)
        if not recipients:
            raise ValueError("an e-mail alert action needs at least one recipient")
        if not sender or "@" not in sender:
            raise ValueError(f"an e-mail alert action needs a sender address, not {sender!r}")
        if (username is None) != (password is None):
            raise ValueError("SMTP login needs both username and password")
        self._reactor = reactor
        self.server = server
        self.port = port
        self.sender = sender
        self.recipients = recipients
        self.starttls = starttls
        self.username = username
        self.password = password
        self._tls = tls_options
        self.timeout = timeout
        self.retries = retries

    @property
    def key(self) -> str:
        """Names this action in the notification outbox (stable across restarts)."""
        return f"email:{','.join(self.recipients)}@{self.server}:{self.port}"

    def fire(self, alert) -> Deferred:
        """Send one message; fires once the server accepted it and the session has closed."""
        body = formatAlertMail(alert, self.sender, self.recipients, self._reactor.seconds())
        d: Deferred = Deferred()
        context = None
        if self.starttls:
            context = self._tls
            if context is None:
                from twisted.internet.ssl import optionsForClientTLS

                context = optionsForClientTLS(self.server)
        closed: Deferred = Deferred()
        factory = _SenderFactory(
            closed,
            None if self.username is None else self.username.encode("utf-8"),
            None if self.password is None else self.password.encode("utf-8"),
            self.sender,
            self.recipients,
            BytesIO(body),
            d,
            retries=self.retries,
            timeout=self.timeout,
            contextFactory=context,
            heloFallback=not (self.starttls or self.username),
            requireAuthentication=self.username is not None,
            requireTransportSecurity=self.starttls,
        )
        self._reactor.connectTCP(self.server, self.port, factory, timeout=self.timeout)

        def sent(result):
            # Wait for QUIT to finish so no connection outlives the notification.
            return closed.addCallback(lambda _: result)

        return d.addCallback(sent)


def _senderFactory():
    from salvusctl._twistedcompat import ESMTPSenderFactory  # overrides a private hook (PRIVATE_HOOKS)

    class SenderFactory(ESMTPSenderFactory):
        """Twisted's sender, plus a Deferred that fires when the connection has closed."""

        def __init__(self, closed: Deferred, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._closed = closed

        def _processConnectionError(self, connector, err):
            super()._processConnectionError(connector, err)
            if self.sendFinished and not self._closed.called:
                self._closed.callback(None)

    return SenderFactory


def _SenderFactory(*args, **kwargs):
    return _senderFactory()(*args, **kwargs)


class WebhookError(Exception):
    """The webhook answered with a non-2xx status."""


@implementer(IBodyProducer)
class _BytesProducer:
    """A whole body at once (FileBodyProducer would need the global cooperator)."""

    def __init__(self, body: bytes):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Collect(Protocol):
    """Reads a response body, keeping its first 64 KiB (for the error message)."""

    def __init__(self, done: Deferred):
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._size < 65536:
            self._parts.append(data)
            self._size += len(data)

    def connectionLost(self, reason=None) -> None:
        self._done.callback(b"".join(self._parts))


@implementer(IAlertAction)
class WebhookAction:
    """POSTs each notification as JSON (the alert's fields) to a URL.

    @param agent: an L{twisted.web.iweb.IAgent} (inject one; tests use a real local server).
    """

    records = False

    def __init__(self, agent, url: str, headers: Mapping[str, str] | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http:// or https://, not {url!r}")
        self._agent = agent
        self.url = url
        self.headers = dict(headers or {})

    @property
    def key(self) -> str:
        """Names this action in the outbox: its host and a digest of the URL (which may hold a
        token, so it is not stored as such)."""
        import hashlib
        from urllib.parse import urlsplit

        digest = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:12]
        return f"webhook:{urlsplit(self.url).netloc.rsplit('@', 1)[-1]}:{digest}"

    def fire(self, alert) -> Deferred:
        body = json.dumps(alert.asDict(), sort_keys=True).encode("utf-8")
        headers = Headers({"Content-Type": ["application/json"], "User-Agent": ["salvus-alerts"]})
        for k, v in self.headers.items():
            headers.addRawHeader(k, v)
        d = self._agent.request(b"POST", self.url.encode("ascii"), headers, _BytesProducer(body))

        def check(response):
            content: Deferred = Deferred()
            response.deliverBody(_Collect(content))

            def done(data: Any):
                if not 200 <= response.code < 300:
                    raise WebhookError(f"webhook {self.url} answered {response.code}: {data[:200]!r}")
                return response.code

            return content.addCallback(done)

        return d.addCallback(check)

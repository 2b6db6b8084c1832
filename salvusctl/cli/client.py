"""The XML-RPC client behind C{salvusctl}: http, https (CA file or pinned fingerprint) and unix.

Built on the standard library's C{xmlrpc.client} so the CLI starts fast and needs no reactor.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import urllib.parse
import xmlrpc.client
from typing import Any

__all__ = ["connect", "resolveURL", "FingerprintMismatch", "ClientError", "normaliseFingerprint"]


class ClientError(Exception):
    """A problem on the client side before any call is made (bad URL, unreadable CA file)."""


class FingerprintMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one."""


def normaliseFingerprint(value: str) -> str:
    """C{AB:CD:…}, from any spelling (colons or not, any case, optional C{SHA256:} prefix)."""
    text = value.strip()
    if text.lower().startswith("sha256:") or text.lower().startswith("sha256="):
        text = text[7:]
    digits = text.replace(":", "").replace(" ", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        raise ClientError(f"bad fingerprint {value!r}: expected 64 hex digits (SHA-256)")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def _authHeader(user: str | None, password: str | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
    return [("Authorization", f"Basic {token}")]


class _AuthTransport(xmlrpc.client.Transport):
    def __init__(self, user, password, timeout):
        super().__init__()
        self._auth = _authHeader(user, password)
        self._timeout = timeout

    def send_headers(self, connection, headers):
        super().send_headers(connection, list(headers) + self._auth)

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class _UnixTransport(_AuthTransport):
    def __init__(self, path, user, password, timeout):
        super().__init__(user, password, timeout)
        self.unix_path = path

    def make_connection(self, host):
        if self._connection and self._connection[0] == "unix":
            return self._connection[1]
        self._connection = ("unix", _UnixConnection(self.unix_path, self._timeout))
        return self._connection[1]


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, host, fingerprint, timeout, context):
        super().__init__(host, timeout=timeout, context=context)
        self.fingerprint = fingerprint

    def connect(self):
        super().connect()
        der = self.sock.getpeercert(binary_form=True)
        got = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        if got != self.fingerprint:
            self.sock.close()
            raise FingerprintMismatch(f"certificate fingerprint {got} is not the pinned {self.fingerprint}")


class _HTTPSTransport(_AuthTransport):
    def __init__(self, user, password, timeout, context, fingerprint=None):
        super().__init__(user, password, timeout)
        self.context = context
        self.fingerprint = fingerprint

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        if self.fingerprint:
            connection = _PinnedConnection(chost, self.fingerprint, self._timeout, self.context)
        else:
            connection = http.client.HTTPSConnection(chost, timeout=self._timeout, context=self.context)
        self._connection = host, connection
        return connection


def resolveURL(url: str) -> str:
    """C{url} with a relative unix socket path made absolute against the working directory.

    C{unix://var/admin.sock} would otherwise parse as host C{var}, path C{/admin.sock}; as
    supervisorctl's C{-s unix://var/admin.sock} means, it is C{./var/admin.sock}. Errors then name
    the resolved path (C{unix:///srv/salvus/var/admin.sock: connection refused}).
    """
    if not url.startswith("unix:"):
        return url
    path = url[len("unix:"):]
    if path.startswith("//"):
        path = path[2:]
    if not path:
        return url
    return "unix://" + os.path.abspath(path)


def connect(
    url: str,
    user: str | None = None,
    password: str | None = None,
    cacert: str | None = None,
    fingerprint: str | None = None,
    timeout: float = 30.0,
) -> Any:
    """A C{ServerProxy} for an admin URL: C{https://host:port}, C{http://…} or C{unix:///path}.

    The XML-RPC path defaults to C{/RPC2}.  For https, C{cacert} trusts one CA file (e.g. the host's
    self-signed C{var/admin/admin.crt}); C{fingerprint} pins the certificate instead.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "unix":
        path = resolveURL(url)[len("unix://"):]
        if not path:
            raise ClientError(f"bad URL {url!r}: use unix:///path/to/admin.sock")
        transport = _UnixTransport(path, user, password, timeout)
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport, allow_none=True)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientError(f"bad URL {url!r}: use https://HOST:PORT, http://127.0.0.1:PORT or unix:///PATH")
    if parsed.username is not None and user is None:
        user = urllib.parse.unquote(parsed.username)
        password = urllib.parse.unquote(parsed.password or "")
    netloc = parsed.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parsed.port:
        netloc += f":{parsed.port}"
    target = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path or "/RPC2", parsed.query, ""))
    if parsed.scheme == "http":
        transport = _AuthTransport(user, password, timeout)
    else:
        if fingerprint:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            fingerprint = normaliseFingerprint(fingerprint)
        else:
            try:
                context = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as e:
                raise ClientError(f"cannot read CA file {cacert}: {e}")
        transport = _HTTPSTransport(user, password, timeout, context, fingerprint)
    return xmlrpc.client.ServerProxy(target, transport=transport, allow_none=True)

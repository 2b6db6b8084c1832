"""The C{Host} header check: a request names one of the listener's own names or addresses.

A page from another site that re-binds its DNS name to 127.0.0.1 (DNS rebinding) reaches the
loopback listener as if it were the admin's own origin, but its requests still carry
C{Host: evil.example}.  Refusing names the listener does not answer to keeps such pages out of
the HTTPS and loopback HTTP listeners.  The unix socket has no names and is not checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from cryptography import x509

__all__ = ["HostNames", "certificateNames", "parseHostHeader"]

#: The names every TCP listener answers to: clients on the machine itself.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-_:")


def _normal(name: str) -> str:
    """Lower case, no trailing dot, IPv6 addresses in compressed form."""
    name = name.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def parseHostHeader(value: str) -> str | None:
    """The host part of a C{Host} header (C{name}, C{name:port}, C{[v6]}, C{[v6]:port}),
    normalised; None when it is not of that shape."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif value.count(":") > 1:
        return None  # a bare IPv6 address must be bracketed
    else:
        host, sep, port = value.partition(":")
        rest = sep + port
    if rest:
        port = rest[1:]
        if not rest.startswith(":") or not port.isdigit() or not 0 < int(port) < 65536:
            return None
    if not host or not set(host.lower()) <= _NAME_CHARS:
        return None
    return _normal(host)


def certificateNames(path: str) -> set[str]:
    """The DNS names and IP addresses of a PEM certificate's subjectAltName (empty when it has
    none or cannot be read: the listener then fails on the same file with its own error)."""
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:
        return set()
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return {_normal(n) for n in names}


class HostNames:
    """The names a site's TCP and TLS listeners answer to.

    Any port is accepted with a known name: the name is what a rebinding page cannot forge, and
    an SSH tunnel (C{ssh -L 8000:127.0.0.1:9001}) legitimately sends its own local port.
    """

    def __init__(self, names: Iterable[str] = ()):
        self.names: set[str] = {_normal(n) for n in LOOPBACK_NAMES}
        self.add(names)

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            if name and _normal(name) not in ("0.0.0.0", "::"):
                self.names.add(_normal(name))

    def allows(self, header: str, local_address: str | None = None) -> bool:
        """Whether C{header} (a C{Host} value) names this listener; C{local_address} is the
        address the connection arrived on, which is always one of its names."""
        host = parseHostHeader(header)
        if host is None:
            return False
        if host in self.names:
            return True
        if local_address is not None and host == _normal(local_address):
            return True
        label, _, parent = host.partition(".")
        return bool(label and parent) and "*." + parent in self.names  # a wildcard certificate name

"""Endpoint strings (C{tcp:8080:interface=127.0.0.1}, C{ssl:…}, C{unix:…}), read without a reactor.

A declaration must check its endpoint strings when the config is read, long before a reactor
binds anything, and several parts of Salvus need what a string names (its kind, port, interface,
socket path).  Twisted parses them only inside C{serverFromString}, which needs a reactor and
builds the endpoint; its splitter is private.  This module is the one wrapper over that private
parser (through L{salvusctl._twistedcompat}): the rest of Salvus asks here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from salvusctl import _twistedcompat

__all__ = ["EndpointString", "parseEndpoint", "parseListener", "checkServerEndpoint", "LISTEN_KINDS"]

#: The kinds of endpoint a Salvus listener (the admin's, a balanced service's) binds.
LISTEN_KINDS = ("tcp", "tcp6", "ssl", "unix")


@dataclass(frozen=True)
class EndpointString:
    """One parsed endpoint string: its kind (lower case), positional words after the kind, and
    its C{name=value} options."""

    description: str
    kind: str
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, position: int = 0, default: Any = None) -> Any:
        """An option given by name or at a position after the kind (C{tcp:8080} and
        C{tcp:port=8080} both name the port)."""
        if name in self.options:
            return self.options[name]
        return self.args[position] if len(self.args) > position else default

    @property
    def port(self) -> str | None:
        """The port as written (C{tcp:}, C{tcp6:}, C{ssl:}), or None."""
        value = self.get("port")
        return None if value is None else str(value)

    @property
    def interface(self) -> str:
        """The interface option (C{""} when none: every interface)."""
        return str(self.options.get("interface", ""))

    @property
    def address(self) -> str:
        """A C{unix:} endpoint's socket path."""
        return str(self.get("address", default=""))


def parseEndpoint(description: str) -> EndpointString:
    """Split an endpoint string; ValueError (with Twisted's reason) when it does not parse.

    Only the syntax is read: the kind is not looked up and no option is checked (see
    L{checkServerEndpoint}).
    """
    if not isinstance(description, str):
        raise ValueError(f"an endpoint must be a string, not {type(description).__name__}")
    try:
        words, options = _twistedcompat.parseEndpointWords(description)
    except Exception as e:
        raise ValueError(str(e)) from e
    kind = str(words[0]).lower() if words else ""
    return EndpointString(description, kind, tuple(str(w) for w in words[1:]), dict(options))


def parseListener(description: str, label: str) -> EndpointString:
    """Split a listener's endpoint string and check its kind is one of L{LISTEN_KINDS}; ValueError
    with one line that names the listener by C{label} (C{"admin listener"} …) and the string."""
    try:
        parsed = parseEndpoint(description)
    except ValueError as e:
        raise ValueError(f"bad {label} {description!r}: {e}")
    if parsed.kind not in LISTEN_KINDS:
        raise ValueError(f"{label} {description!r}: use tcp:, tcp6:, ssl: or unix:")
    return parsed


def checkServerEndpoint(description: str) -> None:
    """Raise (ValueError, TypeError …, as C{serverFromString} would) for a server endpoint string
    whose kind is unknown or whose options are wrong, without a reactor and binding nothing.  For
    C{ssl:} this reads the key and certificate files."""
    _twistedcompat.checkServerDescription(description)

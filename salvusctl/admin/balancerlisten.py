"""What C{salvus.balancerAddService} may listen on: explicit interfaces, endpoints that load.

A balanced service relays whatever its backends serve.  Added over XML-RPC with C{tcp:PORT} and
no C{interface=}, it would listen on every interface and could put a loopback-only backend (a
database, the admin's own plain-HTTP listener) on the network.  So, like the admin's own
listeners, a live-added service names the address it binds: C{interface=127.0.0.1} for loopback,
or the address to serve, even C{0.0.0.0}, written out.

Every string is also parsed here the way the listener will be, certificate and key files
included, so a bad argument is refused before anything is registered.
"""

from __future__ import annotations

from typing import Any

from salvusctl.endpoints import LISTEN_KINDS

__all__ = ["checkListen", "KINDS"]

#: The endpoint kinds a live-added service may use (the admin's own listeners take the same).
KINDS = LISTEN_KINDS


def checkListen(listen: Any) -> list[str]:
    """The endpoint strings of C{listen}, checked; ValueError with one line naming the bad one.

    Checks, in order: a non-empty array of strings; each a C{tcp:}, C{tcp6:}, C{ssl:} or
    C{unix:} endpoint; network ones with an explicit C{interface=}; each parses as a server
    endpoint (for C{ssl:}, its key and certificate files are read and loaded).
    """
    from salvusctl.endpoints import checkServerEndpoint, parseListener

    if not isinstance(listen, list) or not listen or not all(isinstance(x, str) and x for x in listen):
        raise ValueError("listen must be a non-empty array of endpoint strings")
    for description in listen:
        parsed = parseListener(description, "listen endpoint")
        kind, kwargs = parsed.kind, parsed.options
        if kind != "unix" and not str(kwargs.get("interface", "")).strip():
            raise ValueError(
                f"listen endpoint {description!r} names no interface: add interface=127.0.0.1 "
                "for loopback only, or the address to listen on (0.0.0.0 for every interface)"
            )
        try:
            checkServerEndpoint(description)
        except Exception as e:
            raise ValueError(f"bad listen endpoint {description!r}: {type(e).__name__}: {e}")
    return list(listen)

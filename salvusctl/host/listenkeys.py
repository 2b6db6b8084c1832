"""What an endpoint string binds, so two declarations on one port are refused before start.

A leaf: declaration modules call L{iterEndpoints} from their C{validate}, and import nothing of
the host or the services through it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from salvusctl.errors import ConfigError

__all__ = ["listenKey", "iterEndpoints"]

_ephemeral = itertools.count()


def listenKey(description: str) -> str:
    """Normalise an endpoint string to what it binds: C{tcp:8080} and C{tcp:port=8080} clash."""
    from salvusctl.endpoints import checkServerEndpoint, parseEndpoint

    try:
        parsed = parseEndpoint(description)
        kind = parsed.kind
        if kind not in ("ssl", "unix"):
            # A full parse catches unknown kinds and options; ssl is not fully parsed here, as that
            # would load key files that may be made only at start.
            checkServerEndpoint(description)
    except Exception as e:
        raise ConfigError(f"bad endpoint {description!r}: {e}")
    if kind in ("tcp", "ssl", "tcp6"):
        port = parsed.port or ""
        if port == "0":
            return f"ephemeral:{next(_ephemeral)}"
        # Any two listeners on one port number clash unless both name distinct interfaces;
        # refusing the overlap is the safe reading of a config.
        return f"tcp:{port}"
    if kind == "unix":
        return "unix:" + os.path.abspath(parsed.address)
    return description


def iterEndpoints(descriptions: Iterable[str]) -> list[str]:
    """Check endpoint strings parse; used by declarations' C{validate}."""
    out = []
    for description in descriptions:
        listenKey(description)
        out.append(description)
    return out


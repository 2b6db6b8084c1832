"""Start a host without TLS when none of its components speaks it: a smaller supervise-only host.

Importing Twisted's reactor loads pyOpenSSL and C{cryptography} whenever they are installed
(C{twisted.internet.tcp} and C{ssl} look for them), about 14 MB of resident memory per host that
only supervises and monitors.  The component table says which components may speak TLS
(L{Component.tls<salvusctl.host.components.Component>}); when a host declares none of them,
L{withoutTLS} marks C{OpenSSL} and C{cryptography} as absent in C{sys.modules} before the reactor
is imported, so Twisted takes its no-TLS path, as on a machine without pyOpenSSL.

The choice is made once, at start.  A reload that adds a TLS component to such a host cannot
load TLS into the running process: the reloader reports that entry as needing a host restart
(L{RESTART_REASON}) rather than fail half-way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

__all__ = ["BLOCKED", "RESTART_REASON", "needsTLS", "withoutTLS", "tlsBlocked"]

#: The top-level packages a lean host marks absent.
BLOCKED = ("OpenSSL", "cryptography")

#: Modules whose presence means TLS may already be loaded or decided: too late to leave it out.
_DECIDED = ("twisted.internet.reactor", "twisted.internet.tcp", "twisted.internet.ssl") + BLOCKED

RESTART_REASON = "it may speak TLS, which this host started without: none of its components needed it"


def needsTLS(declarations: Iterable[Any]) -> bool:
    """Whether any declaration belongs to a component that may speak TLS (or to no known one)."""
    from salvusctl.host.components import component

    for declaration in declarations:
        row = component(getattr(declaration, "component", None) or "")
        if row is None or row.tls:
            return True
    return False


def withoutTLS(modules: MutableMapping[str, Any] | None = None) -> bool:
    """Mark L{BLOCKED} absent in C{modules} (C{sys.modules}) unless TLS may already be loaded.

    Returns whether it did: False when the reactor, Twisted's TCP or TLS modules, or the TLS
    packages themselves are already imported (a test run, a host embedded in a larger program).
    """
    modules = sys.modules if modules is None else modules
    if any(name in modules for name in _DECIDED):
        return False
    for name in BLOCKED:
        modules[name] = None
    return True


def tlsBlocked(modules: MutableMapping[str, Any] | None = None) -> bool:
    """Whether this process was started by L{withoutTLS}."""
    modules = sys.modules if modules is None else modules
    return any(name in modules and modules[name] is None for name in BLOCKED)

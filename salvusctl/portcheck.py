"""Is every port a host will listen on free?  Asked before anything starts.

A port that is taken would otherwise be found only when its service binds, after the admin has
created its first user and printed a password the failed start then buries in a traceback.  This
check binds each TCP listener for a moment (with C{SO_REUSEADDR}, as Twisted's own listen does, so a
port in C{TIME_WAIT} still counts as free) and reports the first one taken in one line.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from salvusctl.errors import ConfigError

__all__ = ["checkListenersFree", "tcpListeners"]

#: Components whose endpoints the host itself binds (a deploy's ports are its instances' own).
_SKIP = ("supervisor",)


def tcpListeners(host: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, str, int]]:
    """C{(kind, interface, port)} of every fixed TCP port the host's services bind."""
    from salvusctl.endpoints import parseEndpoint

    out = []
    for declaration in host.declarations():
        if declaration.component in _SKIP or declaration.component in skip:
            continue
        endpoints = getattr(declaration, "endpoints", None)
        for description in endpoints() if endpoints is not None else ():
            parsed = parseEndpoint(description)
            if parsed.kind not in ("tcp", "tcp6", "ssl"):
                continue
            try:
                number = int(parsed.port or "")
            except (TypeError, ValueError):
                continue  # validate() reports a bad port
            if number:
                out.append((parsed.kind, parsed.interface, number))
    return out


def unixListeners(host: Any) -> list[str]:
    """The socket paths of the admin's C{unix:} listeners (the ones replaced when stale)."""
    from salvusctl.endpoints import parseEndpoint

    out = []
    for declaration in host.declarations():
        if declaration.component != "admin":
            continue
        endpoints = getattr(declaration, "endpoints", None)
        for description in endpoints() if endpoints is not None else ():
            parsed = parseEndpoint(description)
            if parsed.kind == "unix":
                out.append(parsed.address)
    return out


def checkListenersFree(host: Any, skip: tuple[str, ...] = (), wait: float = 0.0) -> None:
    """Raise L{ConfigError} (C{tcp:8080: address already in use}) for the first port taken, or
    for a unix socket a running process serves (a stale one is replaced when it is bound).

    C{skip} names components whose ports are not checked, and C{wait} is how long a taken port
    may take to be let go: both for a host that took its balancer's sockets from a predecessor
    that is stopping now (L{salvusctl.balancer.hosthandover}).
    """
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            _checkOnce(host, skip)
            return
        except ConfigError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)  # before the reactor runs: a predecessor is letting its ports go


def _checkOnce(host: Any, skip: tuple[str, ...]) -> None:
    for path in unixListeners(host):
        if path:
            # Only a host with a unix listener (the admin's) loads the admin's socket check.
            from salvusctl.admin.unixsocket import checkSocketFree

            checkSocketFree(path)
    for kind, interface, port in tcpListeners(host, skip):
        family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((interface, port))
        except OSError as e:
            where = f"{kind}:{port}"
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"{where}: address already in use")
            if e.errno == errno.EACCES:
                raise ConfigError(f"{where}: permission denied")
            raise ConfigError(f"{where}: {e.strerror}")
        finally:
            probe.close()

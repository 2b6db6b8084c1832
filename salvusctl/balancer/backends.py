"""A plain file of backends that the balancer watches and applies without a restart.

One backend per line; C{#} starts a comment::

    # group  address:port     options
    blue     10.0.0.1:8000    weight=2 name=a
    blue     app2.lan:8000    maxconn=100
    green    10.0.0.3:8000    tls proxy=2

The file owns the groups it names: a host of such a group that is no longer listed is removed (its
connections finish), a new line adds a host, a changed weight is applied in place.  A file that
does not parse is reported and ignored — the running config stays as it was.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from salvusctl.balancer.declare import Server
from salvusctl.errors import ConfigError

__all__ = ["parseBackends", "BackendsFile"]

log = Logger()


def parseBackends(text: str, path: str = "<backends>") -> dict[str, list[Server]]:
    """Parse a backends file into {group: [Server]}; raises L{ConfigError} naming the line."""
    groups: dict[str, list[Server]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 2:
            raise ConfigError("expected 'group address:port [options]'", path, lineno)
        group, address, options = words[0], words[1], words[2:]
        kwargs: dict[str, Any] = {}
        for option in options:
            key, eq, value = option.partition("=")
            try:
                if key == "tls" and not eq:
                    kwargs["tls"] = True
                elif key in ("weight", "maxconn"):
                    kwargs[key] = int(value)
                elif key == "proxy":
                    kwargs["proxy_protocol"] = int(value)
                elif key == "name" and value:
                    kwargs["name"] = value
                else:
                    raise ConfigError(f"unknown option {option!r}", path, lineno)
            except ValueError:
                raise ConfigError(f"option {option!r} needs a number", path, lineno)
        server = Server(address, **kwargs)
        try:
            server.validate()
        except ConfigError as e:
            raise ConfigError(e.message, path, lineno)
        servers = groups.setdefault(group, [])
        if any(s.key() == server.key() for s in servers):
            raise ConfigError(f"duplicate host {server.key()!r} in group {group!r}", path, lineno)
        servers.append(server)
    return groups


class BackendsFile:
    """Polls a file's mtime and size on a C{LoopingCall}; applies a changed file to a service."""

    def __init__(self, reactor: Any, service: Any, path: str, interval: float = 2.0):
        self.reactor = reactor
        self.service = service
        self.path = path
        self.interval = interval
        self._seen: tuple | None = None
        self._loop = LoopingCall(self.poll)
        self._loop.clock = reactor
        self.applied = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        """One look at the file; never raises (a raising LoopingCall stops for good)."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            if self._seen != ("missing",):
                log.warn("backends file {path}: {error}", path=self.path, error=e.strerror)
                self._seen = ("missing",)
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            with open(self.path, encoding="utf-8") as f:
                groups = parseBackends(f.read(), self.path)
            changes = apply(self.service, groups)
        except ConfigError as e:
            self.last_error = str(e)
            log.error("backends file not applied: {error}", error=str(e))
            return
        except Exception as e:  # pragma: no cover - keep polling whatever happens
            self.last_error = repr(e)
            log.failure("backends file {path} not applied", path=self.path)
            return
        self.last_error = None
        self.applied += 1
        log.info("backends file {path} applied: {changes}", path=self.path, changes=changes or "no change")


def apply(service: Any, groups: dict[str, list[Server]]) -> list[str]:
    """Make the named groups of C{service} hold exactly these servers; returns what changed."""
    changes = []
    for group_name, servers in groups.items():
        if group_name not in service.groups:
            service.addGroup(group_name)
            changes.append(f"+group {group_name}")
        group = service.groups[group_name]
        wanted = {s.key(): s for s in servers}
        for name in list(group.hosts):
            host = group.hosts[name]
            server = wanted.get(name)
            if server is None or server.hostPort() != (host.address, host.port) \
                    or server.tls != host.tls or server.proxy_protocol != host.proxy_protocol:
                service.removeHost(group_name, name)
                changes.append(f"-{group_name}/{name}")
        for name, server in wanted.items():
            host = group.hosts.get(name)
            if host is None:
                service.addServer(group_name, server)
                changes.append(f"+{group_name}/{name}")
                continue
            if host.weight != server.weight:
                host.setWeight(server.weight)
                changes.append(f"{group_name}/{name} weight={server.weight}")
            if host.maxconn != server.maxconn:
                host.maxconn = server.maxconn
                host._changed()
                changes.append(f"{group_name}/{name} maxconn={server.maxconn}")
    return changes

"""The C{Cluster(...)} declaration a host's C{.tac} adds: this host as a member of a cluster.

    from salvusctl.cluster import Cluster

    host = Host("web1", store="postgresql://salvus@db.lan/salvus")
    host.add(Cluster(address="10.0.0.11", heartbeat=5, missed=3))

Every host of a cluster points at the same PostgreSQL store; on the default SQLite store the host
is a cluster of one (it still heartbeats, answers pings and runs messages sent to itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from salvusctl.errors import ConfigError

__all__ = ["Cluster", "HOST_NAME"]

#: Host names a cluster accepts: what fits in a log line, a URL path and a balancer host name.
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _positive(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > 0


@dataclass
class Cluster:
    """This host's membership in a cluster of hosts sharing one PostgreSQL store.

    @ivar name: the name peers know this host by (default: the C{Host}'s name); unique in the
        cluster.
    @ivar address: the address peers use to reach this host: its balancer, its published
        deploy instances (default C{127.0.0.1}, which only works for hosts on one machine).
    @ivar admin_url: this host's admin URL as peers and operators should use it (shown in the
        host list; default: derived from C{address} and the first C{tcp:}/C{ssl:} Admin listener).
    @ivar heartbeat: seconds between heartbeats (and between fallback looks at the mailbox).
    @ivar missed: heartbeats a peer may miss before it is marked down.
    @ivar publish: the deploys whose ready instances this host publishes for other hosts'
        balancers (None: every deploy with a port; C{[]}: none).
    @ivar drain_delay: seconds an instance that is about to stop stays published as draining
        before the supervisor signals it, so front-ends stop sending it new connections first.
    @ivar retention: seconds messages are kept (delivered or not).
    @ivar max_messages: at most this many messages are kept (the oldest are dropped first).
    @ivar prune_interval: seconds between retention runs.
    """

    component: ClassVar[str] = "cluster"
    name: str | None = None
    address: str = "127.0.0.1"
    admin_url: str | None = None
    heartbeat: float = 5.0
    missed: int = 3
    publish: list[str] | None = None
    drain_delay: float = 1.0
    retention: float = 7 * 86400.0
    max_messages: int = 100_000
    prune_interval: float = 3600.0
    handlers: dict[str, Any] = field(default_factory=dict)

    def hostName(self, host: Any) -> str:
        """The cluster name of this host: C{name}, or the C{Host}'s."""
        return self.name or host.name

    def validate(self, host: Any = None) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not HOST_NAME.match(self.name)):
            raise ConfigError(
                f"Cluster(name=…) must be letters, digits, '.', '_' or '-' (at most 63), not {self.name!r}"
            )
        if host is not None and self.name is None and not HOST_NAME.match(str(host.name)):
            raise ConfigError(
                f"host name {host.name!r} cannot name a cluster member: give Cluster(name=…) letters,"
                " digits, '.', '_' or '-'"
            )
        if not isinstance(self.address, str) or not self.address or any(c in self.address for c in " /"):
            raise ConfigError(f"Cluster(address=…) must be a host name or IP address, not {self.address!r}")
        if self.admin_url is not None and (
            not isinstance(self.admin_url, str) or not re.match(r"^(https?|unix)://", self.admin_url)
        ):
            raise ConfigError(
                f"Cluster(admin_url=…) must be an http(s):// or unix:// URL, not {self.admin_url!r}"
            )
        for attr in ("heartbeat", "retention", "prune_interval"):
            if not _positive(getattr(self, attr)):
                raise ConfigError(f"Cluster({attr}=…) must be a positive number of seconds, not "
                                  f"{getattr(self, attr)!r}")
        if isinstance(self.missed, bool) or not isinstance(self.missed, int) or self.missed < 1:
            raise ConfigError(f"Cluster(missed=…) must be an integer >= 1, not {self.missed!r}")
        if isinstance(self.drain_delay, bool) or not isinstance(self.drain_delay, int | float) or (
            self.drain_delay < 0
        ):
            raise ConfigError(f"Cluster(drain_delay=…) must be >= 0 seconds, not {self.drain_delay!r}")
        if isinstance(self.max_messages, bool) or not isinstance(self.max_messages, int) or (
            self.max_messages < 1
        ):
            raise ConfigError(
                f"Cluster(max_messages=…) must be a positive integer, not {self.max_messages!r}"
            )
        if self.publish is not None and (
            isinstance(self.publish, str) or not all(isinstance(d, str) for d in self.publish)
        ):
            raise ConfigError("Cluster(publish=…) must be a list of deploy names (or None for all)")
        if not isinstance(self.handlers, dict) or not all(
            isinstance(k, str) and callable(v) for k, v in self.handlers.items()
        ):
            raise ConfigError("Cluster(handlers=…) must be a dict {kind: callable(message)}")
        if host is not None:
            others = [d for d in host.declarations("cluster") if d is not self]
            if others:
                raise ConfigError("a host has one Cluster(...); merge the declarations")

    def adminURL(self, host: Any) -> str | None:
        """C{admin_url}, or one derived from C{address} and the host's first network Admin listener."""
        if self.admin_url:
            return self.admin_url
        from salvusctl.endpoints import parseEndpoint

        for admin in host.declarations("admin"):
            for description in getattr(admin, "listen", ()):
                try:
                    parsed = parseEndpoint(description)
                except ValueError:
                    continue
                kind, port = parsed.kind, parsed.port
                if kind in ("tcp", "ssl") and port not in (None, "0"):
                    scheme = "https" if kind == "ssl" else "http"
                    return f"{scheme}://{self.address}:{port}"
        return None

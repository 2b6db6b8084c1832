"""The monitor's declaration, C{Monitor(...)}: what a C{.tac} file writes (no service code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from salvusctl.errors import ConfigError
from salvusctl.monitor.retention import DEFAULT_RETENTION, TIME_COLUMNS, RetentionPolicy

__all__ = ["Monitor"]


@dataclass
class Monitor:
    """Sample every supervised instance and the host into the store.

    @ivar interval: seconds between samples (default 5).
    @ivar disk_interval: seconds between deploy-directory size walks.
    @ivar buffer_rows: rows kept while the store is unreachable (oldest dropped beyond).
    @ivar deploy_dirs: {deploy: directory} whose size is sampled (besides each instance's
        C{directory}).
    @ivar memcached: a client endpoint string (C{tcp:127.0.0.1:11211}) to publish the latest
        status to, or None.
    @ivar retention: {table: RetentionPolicy or {"max_age": s, "max_rows": n}} overriding the
        defaults; C{retention_interval} seconds between runs.
    @ivar address: the address this host's instances are reached on (stored in services rows and
        used to match balancer backends).
    @ivar load_source: a L{MonitorLoadSource} also given to a balanced service's least-load
        scheduler (C{scheduler_options={"source": src}}); the builder binds it to this monitor.
    @ivar deploys: the deploys whose instances are sampled (None: every deploy).
    @ivar mounts: sample the usage of the host's mounts (a host metric).
    @ivar synchronous_commit: on PostgreSQL, wait for each tick's commit to be flushed to the
        server's disk.  Off by default: a server crash may then lose the last fraction of a
        second of samples already acknowledged, and every tick's commit is much cheaper.

    A reload applies every field live except C{address}, C{memcached}, C{memcached_expire} and
    whether there is a C{load_source} (see L{salvusctl.monitor.reload}).
    """

    component: ClassVar[str] = "monitor"
    interval: float = 5.0
    disk_interval: float = 60.0
    buffer_rows: int = 100_000
    deploy_dirs: dict[str, str] = field(default_factory=dict)
    memcached: str | None = None
    memcached_expire: int = 60
    retention: dict[str, Any] = field(default_factory=dict)
    retention_interval: float = 3600.0
    address: str | None = None
    load_source: Any = None
    deploys: list[str] | None = None
    mounts: bool = True
    synchronous_commit: bool = False

    def validate(self, host) -> None:
        for name in ("interval", "disk_interval", "retention_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"Monitor({name}=…) must be a positive number of seconds, not {value!r}")
        rows = self.buffer_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ConfigError(f"Monitor(buffer_rows=…) must be a positive integer, not {self.buffer_rows!r}")
        if not isinstance(self.deploy_dirs, dict):
            raise ConfigError("Monitor(deploy_dirs=…) must be a dict {deploy: directory}")
        if self.memcached is not None:
            from salvusctl.endpoints import parseEndpoint

            if not isinstance(self.memcached, str) or ":" not in self.memcached:
                raise ConfigError(
                    "Monitor(memcached=…) must be an endpoint like 'tcp:127.0.0.1:11211',"
                    f" not {self.memcached!r}"
                )
            parseEndpoint(self.memcached)
        if self.deploys is not None and (
            isinstance(self.deploys, str) or not all(isinstance(d, str) and d for d in self.deploys)
        ):
            raise ConfigError(f"Monitor(deploys=…) must be a list of deploy names, not {self.deploys!r}")
        for flag in ("mounts", "synchronous_commit"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"Monitor({flag}=…) must be True or False, not {getattr(self, flag)!r}")
        if self.load_source is not None and not hasattr(self.load_source, "bind"):
            raise ConfigError("Monitor(load_source=…) must be a MonitorLoadSource()")
        self.policies()

    def policies(self) -> dict[str, RetentionPolicy]:
        """The retention policies: the defaults, overridden per table by C{retention}."""
        out = dict(DEFAULT_RETENTION)
        for table, policy in (self.retention or {}).items():
            if table not in TIME_COLUMNS:
                raise ConfigError(
                    f"Monitor(retention=…): unknown table {table!r}; one of {sorted(TIME_COLUMNS)}"
                )
            try:
                if isinstance(policy, dict):
                    policy = RetentionPolicy(**policy)
                elif policy is not None and not isinstance(policy, RetentionPolicy):
                    raise ValueError(f"give a dict or RetentionPolicy, not {policy!r}")
            except (TypeError, ValueError) as e:
                raise ConfigError(f"Monitor(retention={{{table!r}: …}}): {e}")
            if policy is None:
                out.pop(table, None)
            else:
                out[table] = policy
        return out

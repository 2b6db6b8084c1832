"""The supervisor's host-wide declaration, C{SupervisorSettings(...)} (deploys: supervisor.deploy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from salvusctl.errors import ConfigError

__all__ = ["SupervisorSettings"]


@dataclass
class SupervisorSettings:
    """Host-wide supervisor options (at most one per host).

    @ivar max_processes: instances alive at once, all deploys together (None: no limit).
    @ivar drain_timeout: seconds before-stop hooks (balancer drains) may take.
    @ivar run_dir / log_dir: default C{var/run/supervisor} and C{var/log/supervisor}.
    """

    max_processes: int | None = None
    drain_timeout: float = 30.0
    run_dir: str | None = None
    log_dir: str | None = None

    component = "supervisor"

    def validate(self, host: Any = None) -> None:
        mp = self.max_processes
        if mp is not None and (not isinstance(mp, int) or mp < 1):
            raise ConfigError(f"supervisor max_processes must be an int >= 1, not {self.max_processes!r}")
        if self.drain_timeout < 0:
            raise ConfigError("supervisor drain_timeout must be >= 0")
        if host is not None:
            settings = [d for d in host.declarations("supervisor") if isinstance(d, SupervisorSettings)]
            if len(settings) > 1:
                raise ConfigError("SupervisorSettings declared more than once")

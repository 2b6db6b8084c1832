"""The supervisor's declarations: C{SupervisorSettings(...)} here, and the deploys'.

Every service's declarations are imported from its C{declare} module.  C{Deploy} and its parts
(C{Probe}, C{Ready}, C{Backoff}, C{Flapping}) are written in L{salvusctl.supervisor.deploy}, with
the validation and templating they need; they are re-exported here.  C{EventListener} stays with
its pool and protocol in L{salvusctl.supervisor.eventlistener}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.supervisor.deploy import Backoff, Deploy, Flapping, Probe, Ready

__all__ = ["SupervisorSettings", "Deploy", "Probe", "Ready", "Backoff", "Flapping"]


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

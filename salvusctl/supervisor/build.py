"""C{buildSupervisor}: the host's deploy declarations -> one L{SupervisorService}."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.service import SupervisorService

__all__ = ["buildSupervisor", "SupervisorSettings"]


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


def buildSupervisor(context: Any, declarations: Sequence[Any]) -> SupervisorService | None:
    """One service for all deploys of the host; None when the host declares no deploy."""
    deploys = [d for d in declarations if isinstance(d, Deploy)]
    settings = next((d for d in declarations if isinstance(d, SupervisorSettings)), SupervisorSettings())
    unknown = [d for d in declarations if not isinstance(d, (Deploy, SupervisorSettings))]
    if unknown:
        raise ConfigError(f"not a supervisor declaration: {unknown[0]!r}")
    if not deploys:
        return None
    return SupervisorService(
        context.reactor,
        deploys,
        runDir=settings.run_dir or context.path("run", "supervisor"),
        logDir=settings.log_dir or context.path("log", "supervisor"),
        maxProcesses=settings.max_processes,
        drainTimeout=settings.drain_timeout,
        hostName=getattr(context.host, "name", ""),
    )

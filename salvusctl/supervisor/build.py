"""C{buildSupervisor}: the host's deploy declarations -> one L{SupervisorService}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.supervisor.declare import SupervisorSettings
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.service import SupervisorService

__all__ = ["buildSupervisor", "SupervisorSettings"]


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

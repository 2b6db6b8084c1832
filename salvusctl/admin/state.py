"""What the admin's pages and XML-RPC share: the host's services, found by name, and options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from salvusctl.admin.faults import Faults, rpcFault

__all__ = ["AdminOptions", "AdminState", "NoService"]


class NoService(Exception):
    """The host runs no such service (pages say so; XML-RPC answers C{NO_SERVICE})."""

    def __init__(self, component: str):
        super().__init__(f"this host runs no {component}")
        self.component = component


@dataclass
class AdminOptions:
    """Presentation options of one admin.

    @ivar refresh: seconds between automatic page reloads (0: never).
    @ivar project_url: a link shown in every page's header (the project's home, a runbook …).
    """

    refresh: int = 10
    project_url: str | None = None
    title: str = "Salvus"
    history_window: float = 3600.0


@dataclass
class AdminState:
    """The admin's view of its host.

    @ivar services: component name -> service, as C{HostContext.services} holds them.
    @ivar clock: the reactor (C{seconds()}, C{callLater}).
    """

    services: dict[str, Any]
    clock: Any
    host_name: str
    store: Any = None
    options: AdminOptions = field(default_factory=AdminOptions)
    transitions: Any = None  # a metrics.TransitionCounter while the admin observes the supervisor
    context: Any = None  # the HostContext, for its reloader (set once the whole host is built)

    def reloader(self) -> Any:
        """The host's L{salvusctl.host.reload.HostReloader}, or None (an admin built outside a host)."""
        return getattr(self.context, "reloader", None)

    def optional(self, component: str) -> Any:
        """The service called C{component}, or None."""
        return self.services.get(component)

    def service(self, component: str) -> Any:
        """The service called C{component}; raises L{NoService} when the host has none."""
        service = self.services.get(component)
        if service is None:
            raise NoService(component)
        return service

    def rpcService(self, component: str) -> Any:
        """Like L{service} but raising the XML-RPC fault a client understands."""
        service = self.services.get(component)
        if service is None:
            raise rpcFault(Faults.NO_SERVICE, f"this host runs no {component}")
        return service

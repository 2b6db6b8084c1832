"""The one table that names the host's components: what each declares, builds, reloads, describes.

Adding a component is one service subpackage and one row here.  The table holds
C{"module:attribute"} strings, not objects, so it imports nothing: the core reads it without
loading any service (and a declaration module may import the core without a cycle), and only
the components a host declares are ever imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Component", "COMPONENTS", "component", "resolve", "names"]


@dataclass(frozen=True)
class Component:
    """One component of a host.

    @ivar name: what its declarations carry as C{component}, and its service's name in the host.
    @ivar declares: the declaration classes it takes (C{"module:Class"}), for docs and checks.
    @ivar build: C{"module:function"}, called as C{build(context, declarations)}; returns an
        C{IService} or None when there is nothing to run.
    @ivar reload: a module with C{diff(context, running, declared) -> entry | None} and
        C{apply(context, declared, entry)} (see L{salvusctl.host.reload}); None when every change
        needs a host restart, or, for the supervisor and the balancer, when the host's reloader
        applies it itself (their entries still live there).
    @ivar describe: C{"module:function"}, called as C{describe(declaration) -> dict}: the extra
        fields the out-of-process model keeps of a declaration (None: its digest alone).
    """

    name: str
    declares: tuple[str, ...]
    build: str
    reload: str | None = None
    describe: str | None = None


#: Start order is this order; the host stops them in reverse.
COMPONENTS: tuple[Component, ...] = (
    Component("supervisor",
              ("salvusctl.supervisor.deploy:Deploy", "salvusctl.supervisor.declare:SupervisorSettings",
               "salvusctl.supervisor.eventlistener:EventListener"),
              "salvusctl.supervisor.build:buildSupervisor",
              describe="salvusctl.host.model:describeDeploy"),
    Component("balancer", ("salvusctl.balancer.declare:Balanced",),
              "salvusctl.balancer.build:buildBalancer",
              describe="salvusctl.host.model:describeBalanced"),
    Component("monitor", ("salvusctl.monitor.declare:Monitor",),
              "salvusctl.monitor.build:buildMonitor", reload="salvusctl.monitor.reload"),
    Component("alerts", ("salvusctl.alerts.declare:AlertRule", "salvusctl.alerts.declare:EmailAlerts",
                         "salvusctl.alerts.declare:WebhookAlerts", "salvusctl.alerts.declare:RestartAlerts",
                         "salvusctl.alerts.declare:AlertSettings"),
              "salvusctl.alerts.build:buildAlerts", reload="salvusctl.alerts.reload"),
    Component("backup", ("salvusctl.backup.declaration:Backup",),
              "salvusctl.backup.build:buildBackup", reload="salvusctl.backup.reload"),
    Component("cluster", ("salvusctl.cluster.declare:Cluster",),
              "salvusctl.cluster.build:buildCluster"),
    Component("admin", ("salvusctl.admin.declaration:Admin",),
              "salvusctl.admin.build:buildAdmin", reload="salvusctl.admin.reload"),
)

_BY_NAME = {c.name: c for c in COMPONENTS}


def names() -> list[str]:
    """The component names, in start order."""
    return [c.name for c in COMPONENTS]


def component(name: str) -> Component | None:
    """The entry of component C{name}, or None for a name no row has."""
    return _BY_NAME.get(name)


def resolve(target: str) -> Any:
    """Import C{"module:attribute"} (or a bare module) and return it."""
    module, _, attribute = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded

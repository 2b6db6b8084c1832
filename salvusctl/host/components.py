"""The one table that names the host's components: what each declares, builds, reloads, describes.

Adding a component is one service subpackage and one row here.  The table holds
C{"module:attribute"} strings, not objects, so it imports nothing: the core reads it without
loading any service (and a declaration module may import the core without a cycle), and only
the components a host declares are ever imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Component", "COMPONENTS", "component", "resolve", "names", "oneEntry", "wire", "peers",
           "buildOne"]


@dataclass(frozen=True)
class Component:
    """One component of a host.

    @ivar name: what its declarations carry as C{component}, and its service's name in the host.
    @ivar declares: the modules that hold its declarations (what a C{.tac} imports): a test checks
        that they load no service code.  A new declaration class in one of them needs no change
        here.
    @ivar build: C{"module:function"}, called as C{build(context, declarations)}; returns an
        C{IService} or None when there is nothing to run.
    @ivar reload: a module with C{entries(context, running, declared) -> {entry name: entry}}
        and C{applyEntries(context, declared, live)} (see L{salvusctl.host.reload}); None when
        every change needs a host restart.
    @ivar model: whether its C{reload.entries} reads a config read out of process (the digests of
        L{salvusctl.host.model}); when not, the reloader names what differs by digest and leaves
        the call to the apply.
    @ivar describe: C{"module:function"}, called as C{describe(declaration) -> dict}: the extra
        fields the out-of-process model keeps of a declaration (None: its digest alone).
    @ivar tls: whether it may speak TLS (HTTPS, TLS endpoints, STARTTLS, TLS health checks): a
        host whose components all say False starts without loading pyOpenSSL
        (L{salvusctl.host.lean}).
    @ivar needs: the components built before it whose services its builder takes: L{buildOne}
        passes each as a keyword argument named after it, None when the host
        runs none, so a builder names what it depends on and never searches the host for it.
    @ivar wire: C{"module:function"}, called as C{wire(context, service)} once every builder ran:
        where a component plugs itself into the others (hooks, load sources), so that no builder
        reaches into a service built before it; None when it needs nothing of the others.
    """

    name: str
    declares: tuple[str, ...]
    build: str
    reload: str | None = None
    describe: str | None = None
    model: bool = False
    wire: str | None = None
    needs: tuple[str, ...] = ()
    tls: bool = True


#: Start order is this order; the host stops them in reverse.
COMPONENTS: tuple[Component, ...] = (
    Component("supervisor",
              ("salvusctl.supervisor.deploy", "salvusctl.supervisor.declare",
               "salvusctl.supervisor.eventlistener"),
              "salvusctl.supervisor.build:buildSupervisor", reload="salvusctl.supervisor.reload",
              describe="salvusctl.host.model:describeDeploy", model=True, tls=False),
    Component("balancer", ("salvusctl.balancer.declare",),
              "salvusctl.balancer.build:buildBalancer", reload="salvusctl.balancer.reload",
              describe="salvusctl.host.model:describeBalanced", model=True,
              needs=("supervisor",)),
    Component("monitor", ("salvusctl.monitor.declare",),
              "salvusctl.monitor.build:buildMonitor", reload="salvusctl.monitor.reload",
              wire="salvusctl.monitor.build:wireMonitor", needs=("supervisor",), tls=False),
    Component("alerts", ("salvusctl.alerts.declare",),
              "salvusctl.alerts.build:buildAlerts", reload="salvusctl.alerts.reload",
              needs=("monitor", "supervisor")),
    Component("backup", ("salvusctl.backup.declare",),
              "salvusctl.backup.build:buildBackup", reload="salvusctl.backup.reload",
              needs=("supervisor",)),
    Component("cluster", ("salvusctl.cluster.declare",),
              "salvusctl.cluster.build:buildCluster", reload="salvusctl.cluster.reload",
              needs=("supervisor", "balancer")),
    Component("admin", ("salvusctl.admin.declare",),
              "salvusctl.admin.build:buildAdmin", reload="salvusctl.admin.reload",
              wire="salvusctl.admin.build:wireAdmin"),
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


def peers(context: Any, entry: Component) -> dict[str, Any]:
    """The services C{entry} needs, by name, from those built so far (None for one not built)."""
    return {name: context.services.get(name) for name in entry.needs}


def buildOne(context: Any, entry: Component, declarations: list) -> Any:
    """Call C{entry}'s builder with its declarations and the services it L{needs<Component>}: the
    one way a component is built, at start (L{salvusctl.host.building}) and when a reload adds
    it."""
    return resolve(entry.build)(context, declarations, **peers(context, entry))


def oneEntry(name: str, diff: Callable[..., dict | None],
             apply: Callable[..., Any]) -> tuple[Callable, Callable]:
    """C{entries} and C{applyEntries} for a reload module whose C{diff(context, running, declared)}
    gives one entry or None, and whose C{apply(context, declared, entry)} applies it: the entry is
    named C{name} in the host's diff."""

    def entries(context: Any, running: list, declared: list) -> dict[str, dict]:
        entry = diff(context, running, declared)
        return {name: entry} if entry else {}

    def applyEntries(context: Any, declared: list, live: dict[str, dict]) -> Any:
        return apply(context, declared, live[name])

    return entries, applyEntries


def wire(context: Any) -> None:
    """The wiring phase: each built component's C{wire} entry, in table order, over the whole
    context.  Run once every builder ran, and again after a reload applied its changes (what the
    reload added — a least-load group, say — is plugged in the same way); each C{wire} is
    idempotent for that reason."""
    for entry in COMPONENTS:
        if entry.wire is not None and entry.name in context.services:
            resolve(entry.wire)(context, context.services[entry.name])

"""Reloading a running host's configuration: re-read it, compare it with what runs, apply the rest.

A L{HostReloader} re-reads the host's config through C{host.source} (the C{.tac} file again, or the
default host again) into a new L{Host}, validates all of it before anything changes (a bad file is
one L{ConfigError} line naming the file and line, and nothing is touched), and compares it with
the running host per component:

  - supervisor: deploys added, changed (their declaration's C{spec()} differs: the same test
    C{SupervisorService.reload} uses) and removed; a C{SupervisorSettings} is no deploy
    (L{deploysOf}): its own entry, C{supervisor-settings}, names the fields that differ, applied
    live for C{max_processes} and C{drain_timeout}, C{restart: True} for the directories;
  - balancer: C{BalancerService.diff(declared)}, reported as names (L{shapes.balancerDiff});
  - monitor, alerts, backup and admin: each service's own C{reload} module (L{RELOADERS}) compares
    the declarations it runs with to the file's, names what differs, and says C{restart: True}
    with a C{reason} for the parts it cannot apply live (a new admin listener, the monitor's
    address …);
  - any other component, and the host's store URL, name and state directory: reported with
    C{restart: True} ("restart the host to apply") and left alone.

L{HostReloader.reconcile} applies the supervisor and balancer parts, then each live entry of the
other services: the supervisor touches only deploys whose declarations changed, the balancer only
the services, groups and hosts that differ, and the other services only what their entry names.
An entry marked C{restart} is never half applied.

A host read from a file is read again out of process for a diff (L{HostReloader.reread}: a
L{salvusctl.host.model.DeclaredHost} from L{salvusctl.host.reader}); the file runs in this process
only when an operator applies it (L{HostReloader.loadForApply}), after a child has read it.  Such a
model carries digests, not the declarations themselves, so a read-only diff names the monitor,
alerts, backup and admin declarations that differ (by name) and leaves to the apply, which has the
real declarations, the decision of what is applied live and what needs a restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from salvusctl.errors import ConfigError
from salvusctl.host.components import COMPONENTS
from salvusctl.host.model import Declared, declarationDigest, specDigest

__all__ = ["HostReloader", "deployDiff", "deploysOf", "isDeploy", "declarationsDiffer", "LIVE_COMPONENTS",
           "RELOADERS", "SETTINGS_KEY"]

log = Logger()

# Components whose differences are applied to the running host; the others need a restart.
LIVE_COMPONENTS = ("supervisor", "balancer")

# Services that apply their own reload: component -> module with diff(context, old, new) -> entry
# or None, and apply(context, new, entry).  Applied in this (the build) order.
RELOADERS = {c.name: c.reload for c in COMPONENTS if c.reload is not None}

HOST_REASON = (
    "the store URL, host name and state directory are fixed at start: the store is open and every "
    "service writes through it"
)


MODEL_NOTE = (
    "read out of process: which of these changes apply live, and which need a restart, is decided "
    "when they are applied (salvusctl reconcile, SIGHUP)"
)


def _fromModel(declarations: list[Any]) -> bool:
    """Whether these declarations came from a config read out of process (digests only)."""
    return any(isinstance(d, Declared) for d in declarations)


def _reloader(component: str) -> Any:
    import importlib

    return importlib.import_module(RELOADERS[component])


def _empty() -> dict[str, Any]:
    return {"added": [], "changed": [], "removed": []}


# The diff's entry for the host-wide SupervisorSettings (not a deploy, not a component of its own).
SETTINGS_KEY = "supervisor-settings"
# SupervisorSettings fields a running supervisor takes live, and the service attribute of each.
LIVE_SETTINGS = {"max_processes": "maxProcesses", "drain_timeout": "drainTimeout"}
SETTINGS_REASON = ("the supervisor's run and log directories are fixed at start (its lock, pid registry and "
                   "logs live there)")


def isDeploy(declaration: Any) -> bool:
    """Whether a supervisor declaration is a deploy (a L{Deploy}, or a model entry of one read out
    of process: it carries a spec digest), not the host-wide C{SupervisorSettings}."""
    if isinstance(declaration, Declared):
        return bool(declaration.spec_digest)
    return callable(getattr(declaration, "spec", None))


def deploysOf(declarations: list[Any]) -> list[Any]:
    """The deploys among a host's supervisor declarations, in order: what every deploy diff and
    every C{SupervisorService.reload} is given (a C{SupervisorSettings} is neither)."""
    return [d for d in declarations if isDeploy(d)]


def _settingsOf(declarations: list[Any]) -> list[Any]:
    return [d for d in declarations if not isDeploy(d)]


def deployDiff(running: dict[str, Any], declared: list[Any]) -> dict[str, list[str]]:
    """Deploy names added, changed and removed between the running deploys (name -> declaration)
    and the declared list (its C{SupervisorSettings}, if any, is skipped).  "Changed" is C{spec()}
    inequality: exactly what makes C{SupervisorService.reload} stop or rescale a deploy; a
    priority-only change is not one."""
    wanted = {d.name: d for d in deploysOf(declared)}
    return {
        "added": sorted(n for n in wanted if n not in running),
        "changed": sorted(n for n in wanted if n in running and _specChanged(wanted[n], running[n])),
        "removed": sorted(n for n in running if n not in wanted),
    }


def _specChanged(new: Any, old: Any) -> bool:
    """C{spec()} inequality; through digests when either deploy was read in another process."""
    if isinstance(new, Declared) or isinstance(old, Declared):
        return specDigest(new) != specDigest(old)
    return new.spec() != old.spec()


def _same(a: Any, b: Any) -> bool:
    """Two declarations of a component that cannot be applied live are the same config."""
    if isinstance(a, Declared) or isinstance(b, Declared):
        return declarationDigest(a) == declarationDigest(b)
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return a == b
    try:
        return vars(a) == vars(b)
    except TypeError:
        return a == b


def declarationsDiffer(old: list[Any], new: list[Any]) -> bool:
    """Whether two declaration lists of one component describe different configs."""
    return len(old) != len(new) or not all(_same(a, b) for a, b in zip(old, new, strict=True))


def _label(declaration: Any, component: str) -> str:
    return str(getattr(declaration, "name", None) or component)


class HostReloader:
    """Re-reads a running host's config and applies the difference.

    @param host: the running L{Host} (its C{source} re-reads the config; its declarations are what
        the non-live components were built from).
    @param context: its L{HostContext} (the built services by component name).
    """

    def __init__(self, host: Any, context: Any):
        self.host = host
        self.context = context
        self._busy = False
        # component -> the declarations a reload applied (the host's own until one does)
        self._running: dict[str, list[Any]] = {}
        self.reader = _outOfProcessReader(host, context)

    def running(self, component: str) -> list[Any]:
        """The declarations the running C{component} was built with or last reloaded to."""
        if component in self._running:
            return self._running[component]
        return self.host.declarations(component)

    def load(self) -> Any:
        """Read the config again into a new, validated L{Host}; L{ConfigError} when it is bad.

        A host composed in code (no C{source}) has nothing to re-read: its own declarations are the
        config, so the diff shows only what operators changed at run time (a host set down, a
        weight) and reconcile puts that back.
        """
        if self.host.source is None:
            return self.host
        new = self.host.source()
        new.validate()
        return new

    def diff(self, new: Any = None) -> dict[str, dict[str, Any]]:
        """Per component C{{added, changed, removed}} (names), only for components that differ;
        components that need a host restart carry C{restart: True}.  Reads the config (L{load})
        unless C{new} is given."""
        if new is None:
            new = self.load()
        services = self.context.services
        out: dict[str, dict[str, Any]] = {}
        supervisor = services.get("supervisor")
        deploys = deploysOf(new.declarations("supervisor"))
        if supervisor is not None and hasattr(supervisor, "deploys"):
            changes = deployDiff(dict(supervisor.deploys), deploys)
            if any(changes.values()):
                out["supervisor"] = changes
            settings = self._settingsDiff(_settingsOf(new.declarations("supervisor")))
            if settings:
                out[SETTINGS_KEY] = settings
        elif deploys:
            out["supervisor"] = dict(_empty(), added=[_label(d, "supervisor") for d in deploys], restart=True)
        balancer = services.get("balancer")
        balanced = new.declarations("balancer")
        if balancer is not None and callable(getattr(balancer, "diff", None)):
            from salvusctl.admin.shapes import balancerDiff

            changes = balancerDiff(balancer.diff(balanced))
            if any(changes.values()):
                out["balancer"] = changes
        elif balanced:
            out["balancer"] = dict(_empty(), added=[_label(d, "balancer") for d in balanced], restart=True)
        components = {d.component for d in self.host.declarations() + new.declarations()}
        for component in sorted(components - set(LIVE_COMPONENTS)):
            old_decls, new_decls = self.running(component), new.declarations(component)
            if component in RELOADERS and _fromModel(new_decls):
                # Read out of process: digests, not declarations.  Name what differs; what of
                # it applies live is the service's reload module's call, made when applied.
                if declarationsDiffer(old_decls, new_decls):
                    out[component] = dict(self._namedEntry(component, old_decls, new_decls),
                                          note=MODEL_NOTE)
            elif component in RELOADERS:
                entry = _reloader(component).diff(self.context, old_decls, new_decls)
                if entry:
                    out[component] = entry
            elif declarationsDiffer(old_decls, new_decls):
                out[component] = dict(self._namedEntry(component, old_decls, new_decls), restart=True)
        if (new.store_url, new.name, new.var_dir) != (self.host.store_url, self.host.name, self.host.var_dir):
            out["host"] = dict(_empty(), changed=["store/name/var"], restart=True, reason=HOST_REASON)
        return out

    def _runningSettings(self) -> list[Any]:
        if SETTINGS_KEY in self._running:
            return self._running[SETTINGS_KEY]
        return _settingsOf(self.host.declarations("supervisor"))

    def _settingsDiff(self, new: list[Any]) -> dict[str, Any] | None:
        """The C{SupervisorSettings} entry: the fields that differ (a model read out of process has
        only digests: C{settings}, with the model's note); C{restart} when a directory moved.
        None when they are the same."""
        old = self._runningSettings()
        if not declarationsDiffer(old, new):
            return None
        if _fromModel(new):
            return dict(_empty(), changed=["settings"], note=MODEL_NOTE)
        from salvusctl.supervisor.declare import SupervisorSettings

        before = old[0] if old else SupervisorSettings()
        after = new[0] if new else SupervisorSettings()
        fields = sorted(f.name for f in dataclasses.fields(SupervisorSettings)
                        if getattr(before, f.name) != getattr(after, f.name))
        if not fields:
            return None
        entry = dict(_empty(), changed=fields)
        if any(f not in LIVE_SETTINGS for f in fields):
            entry.update(restart=True, reason=SETTINGS_REASON)
        return entry

    def _applySettings(self, new: list[Any], entry: dict[str, Any]) -> None:
        from salvusctl.supervisor.declare import SupervisorSettings

        supervisor = self.context.services["supervisor"]
        settings = new[0] if new else SupervisorSettings()
        for field in entry["changed"]:
            setattr(supervisor, LIVE_SETTINGS[field], getattr(settings, field))
        self._running[SETTINGS_KEY] = list(new)

    def _namedEntry(self, component: str, old: list[Any], new: list[Any]) -> dict[str, Any]:
        """C{{added, changed, removed}} by declaration name (the component's own when unnamed)."""
        olds = {_label(d, component): d for d in old}
        news = {_label(d, component): d for d in new}
        entry = _empty()
        entry["added"] = sorted(n for n in news if n not in olds)
        entry["removed"] = sorted(n for n in olds if n not in news)
        entry["changed"] = sorted(n for n in news if n in olds and not _same(olds[n], news[n]))
        if not any(entry[k] for k in ("added", "changed", "removed")):
            entry["changed"] = [component]  # same names, different order or count
        return entry

    def reconcile(self) -> defer.Deferred:
        """Re-read the config and apply what can be applied live; fires with the L{diff} that was
        found (restart-needed entries included, untouched).  A bad config fails with
        L{ConfigError} before anything changes; a second reconcile while one runs is refused."""
        return self._exclusive(lambda: self.loadForApply().addCallback(
            lambda new: self._apply(new, self.diff(new))))

    # -- reading out of process ------------------------------------------------------------------

    def read(self, fresh: bool = False) -> defer.Deferred:
        """Fires with the config to compare with: a L{DeclaredHost} read by a child process when
        the host came from a file (cached while the files are unchanged, unless C{fresh}), else
        the L{load}ed host (the default host or one composed in code: no user file runs)."""
        if self.reader is None:
            return defer.maybeDeferred(self.load)
        return self.reader.read(fresh)

    def reread(self) -> defer.Deferred:
        """Fires with the L{diff} between the config read again (out of process) and what runs."""
        return self.read().addCallback(self.diff)

    def staged(self) -> Any:
        """The config as last read out of process (what C{supervisorctl avail} lists), or None."""
        return None if self.reader is None else self.reader.last

    def loadForApply(self) -> defer.Deferred:
        """Fires with the new validated L{Host} to apply.  A file is first read by a child, so a
        config that fails or hangs is refused before any of it runs here; only then is it
        loaded in this process, to get the declarations themselves (commands, callables …)."""
        if self.reader is None:
            return defer.maybeDeferred(self.load)
        return self.reader.read(fresh=True).addCallback(lambda _: self.load())

    def applyDeploys(self, choose: Any, load: bool = True) -> defer.Deferred:
        """Give the supervisor the deploy list C{choose(new_host_or_None, running_deploys)}
        returns, through C{SupervisorService.reload}, the same step L{reconcile} takes.

        C{supervisorctl add / remove / update} come here one process group at a time: they share
        L{reconcile}'s lock, its read (C{load}: the config is read as for L{reconcile}; without
        it nothing is read) and its apply, so there is one way a config reaches what runs.
        """
        supervisor = self.context.services.get("supervisor")
        if supervisor is None or not hasattr(supervisor, "deploys"):
            return defer.fail(ConfigError("this host runs no supervisor"))

        def apply(new):
            deploys = choose(new, dict(supervisor.deploys))
            log.info("reload: supervisor deploys {names}", names=[d.name for d in deploys])
            return supervisor.reload(deploys)

        def run():
            first = self.loadForApply() if load else defer.succeed(None)
            return first.addCallback(apply)

        return self._exclusive(run)

    def _exclusive(self, step: Any) -> defer.Deferred:
        """Run C{step()} (a Deferred) unless another reload runs: one reload at a time."""
        if self._busy:
            return defer.fail(ConfigError("a reload is already in progress"))
        self._busy = True
        d = defer.maybeDeferred(step)

        def done(result):
            self._busy = False
            return result

        return d.addBoth(done)

    @defer.inlineCallbacks
    def _apply(self, new: Any, changes: dict[str, dict[str, Any]]):
        services = self.context.services
        if "supervisor" in changes and not changes["supervisor"].get("restart"):
            log.info("reload: supervisor {changes}", changes=changes["supervisor"])
            applied = yield services["supervisor"].reload(deploysOf(new.declarations("supervisor")))
            if isinstance(applied, dict) and applied.get("rolled"):
                # changed deploys a balanced group follows: restarted one instance at a time
                changes["supervisor"]["rolled"] = list(applied["rolled"])
        settings = changes.get(SETTINGS_KEY)
        if settings is not None and not settings.get("restart"):
            log.info("reload: supervisor settings {changes}", changes=settings)
            self._applySettings(_settingsOf(new.declarations("supervisor")), settings)
        if "balancer" in changes and not changes["balancer"].get("restart"):
            log.info("reload: balancer {changes}", changes=changes["balancer"])
            yield services["balancer"].reconcile(new.declarations("balancer"))
            self._bindLoadSources(services["balancer"], services.get("monitor"))
            yield self._followDeploys(services["balancer"], services.get("supervisor"),
                                      new.declarations("balancer"))
        for component in RELOADERS:
            entry = changes.get(component)
            if entry is None or entry.get("restart"):
                continue
            log.info("reload: {component} {changes}", component=component, changes=entry)
            try:
                yield _reloader(component).apply(self.context, new.declarations(component), entry)
            except Exception as e:
                log.failure("reload: applying the {component} changes failed", component=component)
                entry["failed"] = f"{type(e).__name__}: {e}"
            else:
                self._running[component] = new.declarations(component)
        for component, entry in sorted(changes.items()):
            if entry.get("restart"):
                log.warn("reload: {component} changed; restart the host to apply it ({reason})",
                         component=component, reason=entry.get("reason", "not applied live"))
        return changes

    def _followDeploys(self, balancer: Any, supervisor: Any, declared: list[Any]) -> defer.Deferred:
        """Keep one L{DeployPool} per group that takes its hosts from a deploy, as the balancer's
        builder makes them: a group the reload added (or re-pointed) gets one, and the pool of a
        group that is gone stops following its deploy."""
        from twisted.application.service import IServiceCollection

        from salvusctl.balancer.deploys import DeployPool

        if not IServiceCollection.providedBy(balancer):
            return defer.succeed(None)  # not the real balancer: it has no pools to keep
        pools = {(c.service, c.group): c for c in list(balancer) if isinstance(c, DeployPool)}
        wanted = {(d.name, g.name): g for d in declared for g in d.groups if g.deploy is not None}
        stops = []
        for key, pool in pools.items():
            group = wanted.get(key)
            if group is None or (pool.deploy, pool.address) != (group.deploy, group.deploy_address):
                stops.append(defer.maybeDeferred(pool.disownServiceParent))
        for key, group in wanted.items():
            pool = pools.get(key)
            if pool is not None and (pool.deploy, pool.address) == (group.deploy, group.deploy_address):
                continue
            if supervisor is None:
                log.warn("reload: {service}/{group} follows deploy {deploy} but this host runs no "
                         "supervisor", service=key[0], group=key[1], deploy=group.deploy)
                continue
            DeployPool(self.context.reactor, balancer, key[0], key[1], group.deploy, supervisor,
                       address=group.deploy_address, drain_timeout=group.drain_timeout
                       ).setServiceParent(balancer)
        return defer.gatherResults(stops)

    @staticmethod
    def _bindLoadSources(balancer: Any, monitor: Any) -> None:
        """A least-load group added by the reload got an unbound C{MonitorLoadSource()} from the
        file, as at build time: bind it to the running monitor, as the monitor's builder does."""
        if monitor is None:
            return
        from salvusctl.monitor.build import bindLoadSources

        address = getattr(monitor, "address", None)
        bindLoadSources(balancer, monitor, [address] if address else [])


def _outOfProcessReader(host: Any, context: Any) -> Any:
    """A L{ConfigReader} for a host read from a file, on the host's reactor; else None."""
    origin = getattr(host, "origin", None)
    reactor = getattr(context, "reactor", None)
    if not origin or not origin.get("config") or reactor is None or not hasattr(reactor, "spawnProcess"):
        return None
    from salvusctl.host.reader import ConfigReader

    return ConfigReader(reactor, origin["config"], store=origin.get("store"))

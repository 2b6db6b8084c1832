"""Reloading the supervisor: which deploys a config adds, changes and removes, and its settings.

The supervisor's row in L{salvusctl.host.components} names this module; the host's generic
reloader (L{salvusctl.host.reload}) calls L{entries} and L{applyEntries} as it does every component's.

  - C{supervisor}: deploys added, changed (their C{spec()} differs: the same test
    C{SupervisorService.reload} uses) and removed; applied by C{SupervisorService.reload}, which
    touches only those deploys (and rolls the changed ones a balanced group follows);
  - C{supervisor-settings} (L{SETTINGS_KEY}): the C{SupervisorSettings} fields that differ,
    applied live for C{max_processes} and C{drain_timeout}, C{restart: True} for the directories.

Both read a config read out of process too (L{salvusctl.host.model.Declared}: spec digests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from salvusctl.host.model import Declared, declarationDigest, specDigest
from salvusctl.supervisor.declare import SupervisorSettings

__all__ = ["entries", "applyEntries", "applyDeploys", "deployDiff", "deploysOf", "isDeploy", "SETTINGS_KEY",
           "LIVE_SETTINGS"]

log = Logger()

# The diff's entry for the host-wide SupervisorSettings (not a deploy, not a component of its own).
SETTINGS_KEY = "supervisor-settings"
# SupervisorSettings fields a running supervisor takes live, and the service attribute of each.
LIVE_SETTINGS = {"max_processes": "maxProcesses", "drain_timeout": "drainTimeout"}
SETTINGS_REASON = ("the supervisor's run and log directories are fixed at start (its lock, pid registry and "
                   "logs live there)")
MODEL_NOTE = (
    "read out of process: which of these changes apply live, and which need a restart, is decided "
    "when they are applied (salvusctl reconcile, SIGHUP)"
)


def applyDeploys(reloader: Any, choose: Any, load: bool = True) -> defer.Deferred:
    """Give the supervisor the deploy list C{choose(new_host_or_None, running_deploys)} returns,
    through C{SupervisorService.reload}: the same step a whole reload takes, under its lock.

    @param reloader: the host's L{salvusctl.host.reload.HostReloader}.
    """

    def apply(new, supervisor):
        deploys = choose(new, dict(supervisor.deploys))
        log.info("reload: supervisor deploys {names}", names=[d.name for d in deploys])
        return supervisor.reload(deploys)

    return reloader.applyTo("supervisor", apply, load=load)


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


def _empty() -> dict[str, Any]:
    return {"added": [], "changed": [], "removed": []}


def _sameSettings(old: list[Any], new: list[Any]) -> bool:
    if len(old) != len(new):
        return False
    if any(isinstance(d, Declared) for d in old + new):
        return all(declarationDigest(a) == declarationDigest(b) for a, b in zip(old, new, strict=True))
    return old == new


def _settingsDiff(old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """The C{SupervisorSettings} entry: the fields that differ (a model read out of process has
    only digests: C{settings}, with the model's note); C{restart} when a directory moved.
    None when they are the same."""
    if _sameSettings(old, new):
        return None
    if any(isinstance(d, Declared) for d in new):
        return dict(_empty(), changed=["settings"], note=MODEL_NOTE)
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


def entries(context: Any, running: list[Any], declared: list[Any]) -> dict[str, dict[str, Any]]:
    """The supervisor's entries: C{supervisor} (deploys) and C{supervisor-settings}, each only
    when something differs.  A host that runs no supervisor needs a restart to start one."""
    out: dict[str, dict[str, Any]] = {}
    supervisor = context.services.get("supervisor")
    deploys = deploysOf(declared)
    if supervisor is not None and hasattr(supervisor, "deploys"):
        changes = deployDiff(dict(supervisor.deploys), deploys)
        if any(changes.values()):
            out["supervisor"] = changes
        settings = _settingsDiff(_settingsOf(running), _settingsOf(declared))
        if settings:
            out[SETTINGS_KEY] = settings
    elif deploys:
        out["supervisor"] = dict(_empty(), added=[str(d.name) for d in deploys], restart=True)
    return out


@defer.inlineCallbacks
def applyEntries(context: Any, declared: list[Any], live: dict[str, dict[str, Any]]):
    """Give the running supervisor the declared deploys (C{SupervisorService.reload}: only the
    deploys that differ are touched) and the live settings."""
    supervisor = context.services["supervisor"]
    if "supervisor" in live:
        applied = yield supervisor.reload(deploysOf(declared))
        if isinstance(applied, dict) and applied.get("rolled"):
            # changed deploys a balanced group follows: restarted one instance at a time
            live["supervisor"]["rolled"] = list(applied["rolled"])
    if SETTINGS_KEY in live:
        settings = _settingsOf(declared)
        chosen = settings[0] if settings else SupervisorSettings()
        for name in live[SETTINGS_KEY]["changed"]:
            setattr(supervisor, LIVE_SETTINGS[name], getattr(chosen, name))

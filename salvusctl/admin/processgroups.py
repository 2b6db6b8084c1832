"""supervisord's process groups over Salvus deploys: what C{reread}, C{add}, C{remove} and C{update} see.

A supervisord process group is a Salvus group: a deploy's C{group=}, its own name when it declares
none (the usual case, where group and deploy are one).  These functions are pure: they take the
running deploys (name -> declaration) and the declared ones (a L{Host}'s or a
L{salvusctl.host.model.DeclaredHost}'s), and return names, or the deploy list to hand to
C{SupervisorService.reload} through L{salvusctl.supervisor.reload.applyDeploys}.  Faults carry
supervisord's codes, so C{supervisorctl} prints its own messages.
"""

from __future__ import annotations

from typing import Any

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.supervisor.reload import deployDiff, deploysOf

__all__ = ["groupsOf", "groupDiff", "withGroup", "withoutGroup", "UNSTOPPED_STATES"]

# supervisord's get_unstopped_processes: anything not STOPPED, EXITED, FATAL or UNKNOWN
UNSTOPPED_STATES = (10, 20, 30, 40)  # STARTING, RUNNING, BACKOFF, STOPPING


def _group(deploy: Any) -> str:
    return str(getattr(deploy, "groupName", None) or deploy.name)


def groupsOf(deploys: list[Any]) -> dict[str, list[Any]]:
    """{group name: its deploys}, in the order given (a C{SupervisorSettings} among them is no
    group: it is skipped)."""
    out: dict[str, list[Any]] = {}
    for deploy in deploysOf(deploys):
        out.setdefault(_group(deploy), []).append(deploy)
    return out


def groupDiff(running: dict[str, Any], declared: list[Any]) -> list[list[str]]:
    """supervisord's C{[added, changed, removed]} group names between what runs and the config.

    A group is changed when it is in both and any of its deploys was added to it, removed from it
    or changed (the deploy-level test of L{deployDiff}, so C{update} restarts exactly what a
    reconcile would)."""
    deploys = deployDiff(running, declared)
    touched = set(deploys["added"]) | set(deploys["changed"]) | set(deploys["removed"])
    new = {g: {d.name for d in ds} for g, ds in groupsOf(declared).items()}
    old = {g: {d.name for d in ds} for g, ds in groupsOf(list(running.values())).items()}
    added = sorted(g for g in new if g not in old)
    removed = sorted(g for g in old if g not in new)
    changed = sorted(g for g in new if g in old and (new[g] != old[g] or (new[g] | old[g]) & touched))
    return [added, changed, removed]


def withGroup(running: dict[str, Any], declared: list[Any], name: str) -> list[Any]:
    """The running deploys plus the declared group C{name}: what C{addProcessGroup} applies.

    BAD_NAME when the config has no such group, ALREADY_ADDED when it runs (supervisord's order
    of checks); FAILED when one of its deploys still runs in another group (a deploy that moved:
    update that group first)."""
    wanted = groupsOf(declared).get(name)
    if not wanted:
        raise rpcFault(Faults.BAD_NAME, name)
    if name in groupsOf(list(running.values())):
        raise rpcFault(Faults.ALREADY_ADDED, name)
    for deploy in wanted:
        if deploy.name in running:
            other = _group(running[deploy.name])
            raise rpcFault(Faults.FAILED, f"{name}: deploy {deploy.name!r} still runs in group "
                                          f"{other!r}: update {other} first")
    names = set(running) | {d.name for d in wanted}
    for deploy in wanted:
        missing = [n for n in getattr(deploy, "depends_on", ()) if n not in names]
        if missing:
            raise rpcFault(Faults.FAILED, f"{name}: deploy {deploy.name!r} depends on "
                                          f"{', '.join(missing)}, which does not run: add it first")
    return list(running.values()) + list(wanted)


def withoutGroup(running: dict[str, Any], name: str, statecodes: dict[str, int]) -> list[Any]:
    """The running deploys less group C{name}: what C{removeProcessGroup} applies.

    BAD_NAME when no such group runs, STILL_RUNNING while any of its instances is not stopped
    (C{statecodes}: instance name -> supervisord state code)."""
    members = groupsOf(list(running.values())).get(name)
    if not members:
        raise rpcFault(Faults.BAD_NAME, name)
    for deploy in members:
        for instance in deploy.instanceNames():
            if statecodes.get(instance, 0) in UNSTOPPED_STATES:
                raise rpcFault(Faults.STILL_RUNNING, name)
    gone = {d.name for d in members}
    left = [d for d in running.values() if d.name not in gone]
    for deploy in left:
        needed = gone.intersection(getattr(deploy, "depends_on", ()))
        if needed:
            raise rpcFault(Faults.FAILED, f"{name}: deploy {deploy.name!r} depends on "
                                          f"{', '.join(sorted(needed))}: remove it first")
    return left

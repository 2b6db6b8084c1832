"""The operations that take a running balancer to a declared one, computed from data alone.

The real L{salvusctl.balancer.control.BalancerService} and the fake in
L{salvusctl.balancer.testing} both answer C{diff()} with this one function, so the order and the
shape of the operations cannot drift between them: each hands over its declared and running
services as data (the shape of L{salvusctl.balancer.declare.Balanced.asData}) and a way to read a
host's admin state, which only the running side knows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["diffServices"]


def diffServices(
    wanted: dict[str, dict[str, Any]],
    running: dict[str, dict[str, Any]],
    admin: Callable[[str, str, str], str],
    up: str = "up",
) -> list[dict[str, Any]]:
    """The operations from C{running} to C{wanted} (service name -> its config as data).

    Ops, in order: add-service, remove-service, then per shared service add-group, remove-group,
    set-active, and per shared group set-scheduler, add-host, remove-host, set-weight, set-state
    (a host whose C{admin(service, group, host)} is not C{up}).  A group that follows a deploy
    (C{deploy} or C{cluster_deploy}) has its hosts from the deploy's instances, not from the
    declaration, so its hosts are not compared.
    """
    ops: list[dict[str, Any]] = []
    for name in wanted.keys() - running.keys():
        ops.append({"op": "add-service", "service": name})
    for name in running.keys() - wanted.keys():
        ops.append({"op": "remove-service", "service": name})
    for name in sorted(wanted.keys() & running.keys()):
        want, have = wanted[name], running[name]
        for g in want["groups"].keys() - have["groups"].keys():
            ops.append({"op": "add-group", "service": name, "group": g})
        for g in have["groups"].keys() - want["groups"].keys():
            ops.append({"op": "remove-group", "service": name, "group": g})
        if want["active"] != have["active"]:
            ops.append({"op": "set-active", "service": name, "group": want["active"],
                        "running": have["active"]})
        for g in sorted(want["groups"].keys() & have["groups"].keys()):
            wg, hg = want["groups"][g], have["groups"][g]
            if wg["scheduler"] != hg["scheduler"]:
                ops.append({"op": "set-scheduler", "service": name, "group": g,
                            "scheduler": wg["scheduler"], "running": hg["scheduler"]})
            if wg.get("deploy") or wg.get("cluster_deploy"):
                continue  # its hosts follow the deploy's instances, not the declaration
            for h in sorted(wg["hosts"].keys() - hg["hosts"].keys()):
                ops.append({"op": "add-host", "service": name, "group": g, "host": h})
            for h in sorted(hg["hosts"].keys() - wg["hosts"].keys()):
                ops.append({"op": "remove-host", "service": name, "group": g, "host": h})
            for h in sorted(wg["hosts"].keys() & hg["hosts"].keys()):
                wh, hh = wg["hosts"][h], hg["hosts"][h]
                if (wh["address"], wh["port"]) != (hh["address"], hh["port"]):
                    ops.append({"op": "remove-host", "service": name, "group": g, "host": h})
                    ops.append({"op": "add-host", "service": name, "group": g, "host": h})
                elif wh["weight"] != hh["weight"]:
                    ops.append({"op": "set-weight", "service": name, "group": g, "host": h,
                                "weight": wh["weight"], "running": hh["weight"]})
                state = admin(name, g, h)
                if state != up:
                    ops.append({"op": "set-state", "service": name, "group": g, "host": h,
                                "state": up, "running": state})
    return ops

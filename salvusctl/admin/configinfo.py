"""supervisord's C{getAllConfigInfo} rows, filled from Salvus's deploys.

supervisord 4.3 answers 29 keys per process (what C{supervisorctl avail} and the tools built on
it read: Ansible's module, supervisor-serialrestart, dashboards).  Salvus answers the same keys,
each with the value that means the same thing on a Salvus host; where supervisord has no
counterpart of a Salvus setting, or Salvus none of supervisord's, the value says what Salvus does
(C{killasgroup} is True: Salvus always stops an instance's whole process group and cgroup).
"""

from __future__ import annotations

import pwd
import shlex
from typing import Any

from salvusctl.supervisor.deploy import signalNumber

__all__ = ["CONFIG_INFO_KEYS", "configInfo"]

#: supervisord 4.3's keys, in its source's order.
CONFIG_INFO_KEYS = (
    "autostart", "directory", "uid", "command", "exitcodes", "group", "group_prio", "inuse",
    "killasgroup", "name", "process_prio", "redirect_stderr", "startretries", "startsecs",
    "stdout_capture_maxbytes", "stdout_events_enabled", "stdout_logfile", "stdout_logfile_backups",
    "stdout_logfile_maxbytes", "stdout_syslog", "stopsignal", "stopwaitsecs",
    "stderr_capture_maxbytes", "stderr_events_enabled", "stderr_logfile", "stderr_logfile_backups",
    "stderr_logfile_maxbytes", "stderr_syslog", "serverurl",
)

_MAX_INT = 2**31 - 1


def _int(value: Any, default: int = 0) -> int:
    try:
        return max(-_MAX_INT, min(_MAX_INT, int(value)))
    except (TypeError, ValueError):
        return default


def _number(value: Any) -> int | float:
    """An int where the value is whole (supervisord's settings are ints), else the float."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0
    return int(f) if f.is_integer() and abs(f) <= _MAX_INT else f


def _uid(user: Any) -> int | str:
    """supervisord's C{uid}: the number of the C{user=} setting, C{'none'} when unset."""
    if user in (None, ""):
        return "none"
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(str(user)).pw_uid
    except KeyError:
        return "none"


def _command(command: Any) -> str:
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(a)) for a in command or ())


def _stopsignal(deploy: Any) -> int:
    try:
        return int(signalNumber(getattr(deploy, "stopsignal", "TERM")))
    except (ValueError, TypeError):
        return 15


def _retries(deploy: Any) -> int:
    """supervisord's C{startretries}: the failed starts allowed before FATAL (Salvus's None,
    unlimited, has no supervisord spelling: the largest XML-RPC int)."""
    retries = getattr(deploy, "retries", 3)
    return _MAX_INT if retries is None else _int(retries, 3)


def _stream(deploy: Any, stream: str, logfile: str, backups: int, maxbytes: int) -> dict[str, Any]:
    """The six keys of one output stream (C{stdout} or C{stderr}), in supervisord's order."""
    return {
        f"{stream}_capture_maxbytes": _int(getattr(deploy, f"{stream}_capture_maxbytes", 0)),
        f"{stream}_events_enabled": bool(getattr(deploy, f"{stream}_events_enabled", False)),
        f"{stream}_logfile": logfile or "none",
        f"{stream}_logfile_backups": backups,
        f"{stream}_logfile_maxbytes": maxbytes,
        f"{stream}_syslog": False,
    }


def configInfo(deploy: Any, name: str, group: str, inuse: bool, stdout_logfile: str = "",
               stderr_logfile: str = "") -> dict[str, Any]:
    """One row of C{getAllConfigInfo} for instance C{name} of C{group}, from C{deploy} (a
    L{salvusctl.supervisor.deploy.Deploy}, or the L{salvusctl.host.model.Declared} of a config read
    in another process, which carries fewer settings: the rest take the Deploy defaults)."""
    priority = _int(getattr(deploy, "priority", 999), 999)
    maxbytes = _int(getattr(deploy, "log_max_bytes", 50 * 1024 * 1024))
    backups = _int(getattr(deploy, "log_backups", 10))
    directory = getattr(deploy, "cwd", None) if hasattr(deploy, "cwd") else getattr(
        deploy, "directory", None)
    redirect = bool(getattr(deploy, "redirect_stderr", False))
    row = {
        "autostart": bool(getattr(deploy, "autostart", True)),
        "directory": directory or "none",
        "uid": _uid(getattr(deploy, "user", None)),
        "command": _command(getattr(deploy, "command", "")),
        "exitcodes": [_int(c) for c in getattr(deploy, "exitcodes", (0,))],
        "group": group,
        "group_prio": priority,
        "inuse": bool(inuse),
        "killasgroup": True,
        "name": name,
        "process_prio": priority,
        "redirect_stderr": redirect,
        "startretries": _retries(deploy),
        "startsecs": _number(getattr(deploy, "startsecs", 1)),
        **_stream(deploy, "stdout", stdout_logfile, backups, maxbytes),
        "stopsignal": _stopsignal(deploy),
        "stopwaitsecs": _number(getattr(deploy, "stopwaitsecs", 10)),
        **_stream(deploy, "stderr", stderr_logfile, backups, maxbytes),
        "serverurl": "none",  # supervisord's for a program with no serverurl= of its own
    }
    return row

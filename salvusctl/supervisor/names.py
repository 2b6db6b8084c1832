"""Process names, built as supervisord builds them, so its clients find Salvus's processes.

supervisord names the process of a one-process program after the program (C{ticker}), and the
processes of a C{numprocs > 1} program from its C{process_name} template. Tools written against
it (C{supervisorctl status ticker}, superlance's C{-p ticker}, supervisor-wildcards' patterns,
Ansible's C{supervisorctl} module) type those names back, so Salvus names its instances the
same way when a deploy asks for it (C{process_name=SUPERVISORD_NAMES} or a template); Salvus's
C{deploy:N} spelling (L{SALVUS_NAMES}) is also accepted as a lookup alias (see L{legacyIndex}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_TEMPLATE",
    "MANY_TEMPLATE",
    "SALVUS_NAMES",
    "SUPERVISORD_NAMES",
    "expandName",
    "processNames",
    "legacyName",
    "legacyIndex",
    "ProcessNameError",
]

#: supervisord's default C{process_name}: the program's own name.
DEFAULT_TEMPLATE = "%(program_name)s"
#: The template Salvus uses for C{numprocs > 1} when none is given (supervisord's examples').
MANY_TEMPLATE = "%(program_name)s_%(process_num)02d"
#: supervisord's names, whatever C{numprocs}: C{ticker} for one process, C{ticker_00} … for more.
SUPERVISORD_NAMES = "supervisord"
#: Salvus's own spelling, C{web:0} … C{web:N-1}, for hosts whose tooling already types it.
SALVUS_NAMES = "%(program_name)s:%(process_num)d"

_KEY = re.compile(r"%\((\w+)\)")
_KEYS = ("program_name", "process_num", "group_name", "numprocs")
_FORBIDDEN = re.compile(r"[\s/@*?\[\]]")


class ProcessNameError(ValueError):
    """A C{process_name} template that cannot name the deploy's processes."""


def expandName(template: str, values: Mapping[str, Any]) -> str:
    """C{template % values} for supervisord's keys, with one clear sentence when it fails."""
    for key in _KEY.findall(template):
        if key not in _KEYS:
            known = ", ".join(_KEYS)
            raise ProcessNameError(f"process_name {template!r}: unknown key %({key})s (known: {known})")
    try:
        return template % dict(values)
    except (ValueError, TypeError, KeyError) as e:
        raise ProcessNameError(f"process_name {template!r} does not expand: {e}") from None


def processNames(
    program: str, numprocs: int, template: str | None = None, group: str | None = None
) -> list[str]:
    """The names of a program's C{numprocs} processes, in index order.

    C{template} None keeps Salvus's spelling (L{SALVUS_NAMES}) for hosts written against it. A
    given template is used as given, for one process as for many (supervisord requires
    C{%(process_num)} in it when C{numprocs > 1}); L{SUPERVISORD_NAMES} asks for supervisord's
    names: the program's name for one process, L{MANY_TEMPLATE} for more.
    """
    if template is None:
        template = SALVUS_NAMES
    elif template == SUPERVISORD_NAMES:
        template = DEFAULT_TEMPLATE if numprocs == 1 else MANY_TEMPLATE
    if numprocs > 1 and "%(process_num)" not in template:
        raise ProcessNameError(
            f"process_name {template!r} must contain %(process_num) when numprocs > 1 (as in supervisord)"
        )
    names = []
    for index in range(numprocs):
        values = {"program_name": program, "process_num": index, "group_name": group or program,
                  "numprocs": numprocs}
        name = expandName(template, values)
        if not name or _FORBIDDEN.search(name):
            raise ProcessNameError(
                f"process_name {template!r} gives {name!r}: a name is one word without / @ * ? [ ]"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ProcessNameError(f"process_name {template!r} gives the same name to two processes")
    return names


def legacyName(program: str, index: int) -> str:
    """Salvus's older spelling of a process name (C{web:0}), still accepted in lookups."""
    return f"{program}:{index}"


def legacyIndex(name: str) -> tuple[str, int] | None:
    """C{('web', 0)} for C{'web:0'}; None when C{name} is not in the older spelling."""
    program, sep, index = name.rpartition(":")
    if not sep or not program or not index.isdigit():
        return None
    return program, int(index)

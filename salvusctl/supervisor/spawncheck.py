"""What makes a spawn fail for sure, found before the fork, in supervisord's words.

supervisord looks the command up before it forks, so a missing or non-executable program is a
spawn error at once (C{can't find command 'x'}), not a child that exits 127 and is retried until
FATAL.  Salvus does the same for the command and the working directory; the messages are
supervisord's, since C{supervisorctl status} prints them and tools match on them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence

__all__ = ["SpawnError", "CommandNotFound", "CommandNotExecutable", "checkSpawn"]


class SpawnError(Exception):
    """The spawn cannot succeed; the message is the instance's C{spawnerr}, verbatim."""


class CommandNotFound(SpawnError):
    """No such program (supervisord's C{NO_FILE} at C{startProcess})."""


class CommandNotExecutable(SpawnError):
    """The program is a directory, or not executable (supervisord's C{NOT_EXECUTABLE})."""


def _resolve(program: str, env: Mapping[str, str]) -> str:
    if "/" in program:
        return program
    for directory in (env.get("PATH") or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.exists(candidate):
            return candidate
    raise CommandNotFound(f"can't find command {program!r}")


def checkSpawn(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> None:
    """Raise L{SpawnError} when C{argv} cannot be executed in C{cwd}; None when it may be.

    Permission to run as another user is left to the exec: only what fails for every user is
    caught here.
    """
    if not argv or not argv[0]:
        raise CommandNotFound("command is empty")
    filename = _resolve(argv[0], env)
    try:
        st = os.stat(filename)
    except OSError:
        raise CommandNotFound(f"can't find command {filename!r}")
    if stat.S_ISDIR(st.st_mode):
        raise CommandNotExecutable(f"command at {filename!r} is a directory")
    if not stat.S_IMODE(st.st_mode) & 0o111:
        raise CommandNotExecutable(f"command at {filename!r} is not executable")
    if cwd is not None:
        try:
            if not stat.S_ISDIR(os.stat(cwd).st_mode):
                raise SpawnError(f"couldn't chdir to {cwd}: ENOTDIR")
        except OSError as e:
            raise SpawnError(f"couldn't chdir to {cwd}: {errno.errorcode.get(e.errno, e.errno)}")

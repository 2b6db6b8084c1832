"""Loading a host's C{.tac} (or C{.py}) file into a L{Host}, with one-line errors.

Kept apart from the services so that a bad file is reported before anything is built or bound.
"""

from __future__ import annotations

import os
import traceback

from salvusctl.errors import ConfigError
from salvusctl.host.declaring import Host, declaringOnly

__all__ = ["loadHost"]


def loadHost(path: str) -> Host:
    """Execute a host file and return the L{Host} it declares as C{host}.

    Any fault — a missing file, a syntax error, an exception while the file runs, no C{host} —
    becomes a L{ConfigError} naming the file and, where known, the line.  The file's own
    C{host.application()} builds nothing while it is read here (the caller builds), and the host
    remembers how to read the file again (C{host.source}) for a reload.
    """
    if not os.path.exists(path):
        raise ConfigError("no such config file", path)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config: {e}", path)
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise ConfigError(f"syntax error: {e.msg}", path, e.lineno)
    namespace = {"__file__": os.path.abspath(path), "__name__": "__salvus_config__"}
    cwd = os.getcwd()
    token = declaringOnly.set(True)
    try:
        exec(code, namespace)
    except ConfigError as e:
        if e.filename:
            raise
        raise ConfigError(e.message, path, _lineIn(path, e))
    except SystemExit:
        raise
    except Exception as e:
        raise ConfigError(f"{type(e).__name__}: {e}", path, _lineIn(path, e))
    finally:
        declaringOnly.reset(token)
        os.chdir(cwd)
    host = namespace.get("host")
    if not isinstance(host, Host):
        raise ConfigError("the config defines no `host = Host(...)`", path)
    absolute = os.path.abspath(path)
    host.source = lambda: loadHost(absolute)
    host.origin = {"config": absolute}
    return host


def _lineIn(path: str, error: BaseException) -> int | None:
    """The line of C{path} that was running when C{error} was raised."""
    target = os.path.abspath(path)
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == target:
            line = lineno
    return line

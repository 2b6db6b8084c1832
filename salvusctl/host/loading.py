"""Loading a host's C{.tac} (or C{.py}) file into a L{Host}, with one-line errors.

Kept apart from the services so that a bad file is reported before anything is built or bound.

L{main} is the child's side of L{salvusctl.host.reader}: C{python -m salvusctl.host.loading FILE}
loads a file and writes its model.  It sits with the loader, not with the reader, so the reader (the
running host's side) never imports the file loader, and the core has no import cycle.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.host.declaring import Host, declaringOnly
from salvusctl.host.model import describe

__all__ = ["loadHost", "main"]


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


def _importedSources(before: set[str], config: str) -> list[str]:
    """The config file and the source files it imported from outside the Python installation."""
    prefixes = tuple(os.path.join(os.path.realpath(p), "") for p in {sys.prefix, sys.base_prefix})
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "")
    found = [os.path.abspath(config)]
    for name, module in list(sys.modules.items()):
        if name in before:
            continue
        path = getattr(module, "__file__", None)
        if not path:
            continue
        real = os.path.realpath(path)
        if real.startswith(prefixes) or real.startswith(here):
            continue
        found.append(os.path.abspath(path))
    return found[:200]


def _result(stream, payload: dict[str, Any]) -> None:
    stream.write(json.dumps(payload, separators=(",", ":")))
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    """C{python -m salvusctl.host.loading FILE [--store URL]}: load FILE, validate it, write its model.

    The model (or C{{"error": "FILE:LINE: message"}}) goes to file descriptor 3 when it is open,
    so that whatever the config prints on stdout cannot be mistaken for it; else to stdout.
    Exit status 0 for a model, 2 for a config error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    store = None
    if "--store" in argv:
        at = argv.index("--store")
        store = argv[at + 1] if at + 1 < len(argv) else None
        del argv[at:at + 2]
    if len(argv) != 1:
        sys.stderr.write("usage: python -m salvusctl.host.loading FILE [--store URL]\n")
        return 64
    try:
        out = os.fdopen(3, "w", encoding="utf-8")
    except OSError:
        out = sys.stdout
    try:
        os.setsid()  # the reader kills the whole group on a timeout: anything the config started too
    except OSError:
        pass
    before = set(sys.modules)
    try:
        host = loadHost(argv[0])
        if store:
            host.store_url = store
        host.validate()
        model = describe(host, _importedSources(before, argv[0]))
    except ConfigError as e:
        _result(out, {"error": str(e)})
        return 2
    except Exception as e:
        _result(out, {"error": f"{os.path.abspath(argv[0])}: {type(e).__name__}: {e}"})
        return 2
    _result(out, {"model": model})
    return 0


if __name__ == "__main__":
    sys.exit(main())

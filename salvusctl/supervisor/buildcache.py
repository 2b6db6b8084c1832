"""Where a small C helper built from a source file beside the code is cached, and with what.

Both native spawn paths (the C{clone3} library and the spawn helper program) are compiled on first
use and kept under C{$XDG_CACHE_HOME/salvus} (default C{~/.cache/salvus}), named by a digest of the
source and the machine, so that a changed source or another architecture builds afresh and never
loads a stale binary.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from collections.abc import Callable

__all__ = ["cachedBuild"]


def cachedBuild(source: str, stem: str, present: Callable[[str], bool],
                suffix: str = "") -> tuple[str, str | None] | None:
    """(the cached build's path, the compiler to build it with, or None when C{present(path)}),
    or None when it cannot be had: no readable source, no C compiler, no cache directory."""
    try:
        with open(source, "rb") as f:
            text = f.read()
    except OSError:
        return None
    digest = hashlib.sha1(text + platform.machine().encode()).hexdigest()[:12]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(cache, "salvus", f"{stem}-{digest}{suffix}")
    if present(path):
        return path, None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError:
        return None
    return path, cc

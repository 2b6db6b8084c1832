"""The backup directory's layout and its manifests: everything a fresh host needs to restore.

::

    DESTINATION/
      index.json                   the good runs, newest last (a convenience; manifests rule)
      main-20261123T030000Z/
        manifest.json              written LAST, only for a good run: a run without it is partial
        db/postgresql-shop.pgdump  pg_dump -Fc
        db/mysql-wiki.sql          mysqldump --single-transaction
        files/uploads/...          rsync --link-dest snapshot (unchanged files hard-linked)
        checksums/uploads.json     {path: [size, sha256]} of that snapshot
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = [
    "MANIFEST",
    "INDEX",
    "FORMAT",
    "makeRunId",
    "runStarted",
    "dumpName",
    "writeJSON",
    "readManifest",
    "scanRuns",
    "writeIndex",
]

MANIFEST = "manifest.json"
INDEX = "index.json"
FORMAT = 1


def makeRunId(backup: str, now: float, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """C{NAME-YYYYmmddTHHMMSSZ}, with a C{-N} suffix when two runs start in one second."""
    base = f"{backup}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"
    run_id, n = base, 1
    while run_id in taken:
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def runStarted(run_id: str) -> float | None:
    """The start time a run id encodes (for directories with no manifest), or None."""
    import calendar
    import re

    match = re.search(r"-(\d{8}T\d{6}Z)(?:-\d+)?$", run_id)
    if not match:
        return None
    return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))


def dumpName(kind: str, key: str) -> str:
    return f"db/{key}.pgdump" if kind == "postgresql" else f"db/{key}.sql"


def writeJSON(path: str, data: Any) -> None:
    """Write atomically (temporary file, fsync, rename): a manifest is either whole or absent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def readManifest(run_dir: str) -> dict[str, Any] | None:
    """A run directory's manifest, or None when it has none (a partial run) or it is unreadable."""
    try:
        with open(os.path.join(run_dir, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def scanRuns(directory: str, backup: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a backup directory alone: (good manifests oldest first, ids of partial run dirs)."""
    good, partial = [], []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], []
    for name in names:
        full = os.path.join(directory, name)
        if not os.path.isdir(full) or runStarted(name) is None:
            continue
        if backup is not None and not name.startswith(backup + "-"):
            continue
        manifest = readManifest(full)
        if manifest is not None and manifest.get("outcome") == "ok" and manifest.get("run_id") == name:
            good.append(manifest)
        else:
            partial.append(name)
    good.sort(key=lambda m: (m["started"], m["run_id"]))
    return good, partial


def writeIndex(directory: str, manifests: list[dict[str, Any]]) -> None:
    """The directory's summary: one line per good run."""
    writeJSON(
        os.path.join(directory, INDEX),
        {
            "format": FORMAT,
            "runs": [
                {
                    "run_id": m["run_id"],
                    "backup": m["backup"],
                    "started": m["started"],
                    "ended": m["ended"],
                    "snapshot_size": m.get("snapshot_size", 0),
                    "dump_size": m.get("dump_size", 0),
                }
                for m in manifests
            ],
        },
    )

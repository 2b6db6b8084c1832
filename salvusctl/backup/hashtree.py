"""Checksums of every file in a tree: the per-snapshot manifest that verify compares against.

Run as a child process (C{python -m salvusctl.backup.hashtree DIR}) so hashing gigabytes never
blocks the reactor; prints one JSON object mapping each relative path to C{[size, sha256]}
(symlinks to C{["link", target]}).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

__all__ = ["hashTree", "compareTrees", "main"]

_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hashTree(root: str) -> dict[str, list]:
    """Map each file under C{root} (relative, C{/}-separated) to C{[size, sha256]}."""
    out: dict[str, list] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full):
                out[rel] = ["link", os.readlink(full)]
            elif os.path.isfile(full):
                out[rel] = [os.path.getsize(full), _sha256(full)]
    return out


def compareTrees(expected: dict[str, list], actual: dict[str, list]) -> list[str]:
    """Describe each difference between two hash maps (empty when they match)."""
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing file {rel}")
        elif rel not in expected:
            problems.append(f"unexpected file {rel}")
        elif list(expected[rel]) != list(actual[rel]):
            problems.append(f"checksum mismatch {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.stderr.write("usage: python -m salvusctl.backup.hashtree DIRECTORY\n")
        return 2
    json.dump(hashTree(args[0]), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Checksums of every file in a tree: the per-snapshot manifest that verify compares against.

Run as a child process (C{python hashtree.py DIR [BASE_DIR BASE_JSON]}, standard library only) so
hashing gigabytes never blocks the reactor; prints one JSON object mapping each relative path to
C{[size, sha256]} (symlinks to C{["link", target]}).  Given the previous snapshot and its checksums,
a file hard-linked to the previous snapshot (same inode: rsync --link-dest found it unchanged) keeps
its previous checksum instead of being read again, so an incremental run hashes only what changed.
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


def hashTree(root: str, base_root: str | None = None, base: dict[str, list] | None = None,
             stats: dict[str, int] | None = None) -> dict[str, list]:
    """Map each file under C{root} (relative, C{/}-separated) to C{[size, sha256]}.

    @param base_root: the previous snapshot; with C{base}, its checksums, reused for files that
        are the same inode in both trees.
    @param stats: if given, receives C{hashed} and C{reused} counts.
    """
    out: dict[str, list] = {}
    counts = stats if stats is not None else {}
    counts.setdefault("hashed", 0)
    counts.setdefault("reused", 0)
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full):
                out[rel] = ["link", os.readlink(full)]
            elif os.path.isfile(full):
                previous = base.get(rel) if base and base_root else None
                if previous is not None and previous[0] != "link" and _sameInode(
                        full, os.path.join(base_root, rel)):
                    out[rel] = list(previous)
                    counts["reused"] += 1
                else:
                    out[rel] = [os.path.getsize(full), _sha256(full)]
                    counts["hashed"] += 1
    return out


def _sameInode(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


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
    if len(args) not in (1, 3) or not os.path.isdir(args[0]):
        sys.stderr.write("usage: hashtree.py DIRECTORY [BASE_DIR BASE_JSON]\n")
        return 2
    base_root = base = None
    if len(args) == 3:
        try:
            with open(args[2], encoding="utf-8") as f:
                base = json.load(f)
            base_root = args[1]
        except (OSError, ValueError):
            base_root = base = None  # no usable base: hash everything
    json.dump(hashTree(args[0], base_root, base), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""rsync command lines and the parsing of what rsync prints.

Kept free of I/O: the job module runs these argv lists through the runner, and the tests check
the lines and the parsers directly.  A remote location is C{[user@]host:/path}, reached with
C{rsync -e SSH}; a local one is an absolute path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Location",
    "parseLocation",
    "RsyncStats",
    "parseStats",
    "Progress",
    "ProgressParser",
    "snapshotCommand",
    "copyCommand",
]


@dataclass(frozen=True)
class Location:
    """Where backups live: a local directory or a directory on a host reached over ssh."""

    path: str
    host: str | None = None
    ssh: str = "ssh"

    @property
    def remote(self) -> bool:
        return self.host is not None

    def join(self, *parts: str) -> str:
        """The path of C{parts} under this location, as rsync names it (C{host:path} when remote)."""
        path = "/".join([self.path.rstrip("/")] + [p.strip("/") for p in parts if p])
        return f"{self.host}:{path}" if self.remote else path

    def localPath(self, *parts: str) -> str:
        """The path on the machine that holds it (no host prefix)."""
        return "/".join([self.path.rstrip("/")] + [p.strip("/") for p in parts if p])

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" if self.remote else self.path


_REMOTE = re.compile(r"^(?P<host>(?:[^@/:\s]+@)?[^@/:\s]+):(?P<path>/.*)$")


def parseLocation(text: str, ssh: str = "ssh") -> Location:
    """Parse C{/abs/path} or C{[user@]host:/abs/path}; raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"backup destination must be a non-empty string, not {text!r}")
    match = _REMOTE.match(text)
    if match:
        return Location(path=match["path"], host=match["host"], ssh=ssh)
    if not text.startswith("/"):
        raise ValueError(
            f"backup destination {text!r} must be an absolute path or [user@]host:/absolute/path"
        )
    return Location(path=text)


@dataclass
class RsyncStats:
    """The figures of one rsync run (from C{--stats}).

    @ivar total_size: bytes of the whole snapshot (every file, linked or copied).
    @ivar transferred: bytes of file data that had to be copied (new or changed files).
    @ivar files: number of files (all kinds) in the snapshot.
    @ivar files_transferred: regular files copied rather than hard-linked.
    """

    total_size: int = 0
    transferred: int = 0
    files: int = 0
    files_transferred: int = 0
    bytes_sent: int = 0


_STAT_FIELDS = {
    "Number of files": "files",
    "Number of regular files transferred": "files_transferred",
    "Total file size": "total_size",
    "Total transferred file size": "transferred",
    "Total bytes sent": "bytes_sent",
}


def _number(text: str) -> int:
    match = re.match(r"\s*([\d,.]+)", text)
    if not match:
        return 0
    return int(match.group(1).replace(",", "").replace(".", ""))


def parseStats(output: str) -> RsyncStats:
    """Read C{--stats} lines out of rsync's output (progress lines around them are ignored)."""
    stats = RsyncStats()
    for line in re.split(r"[\r\n]+", output):
        key, sep, value = line.partition(":")
        if sep and key.strip() in _STAT_FIELDS:
            setattr(stats, _STAT_FIELDS[key.strip()], _number(value))
    return stats


@dataclass
class Progress:
    """One C{--info=progress2} line: bytes so far and the overall percent."""

    bytes: int
    percent: int
    to_check: int | None = None
    total_files: int | None = None


_PROGRESS = re.compile(
    r"^\s*(?P<bytes>[\d,]+)\s+(?P<percent>\d+)%\s+\S+\s+\S+"
    r"(?:\s+\(xfr#\d+,\s+(?:ir|to)-chk=(?P<tochk>\d+)/(?P<total>\d+)\))?"
)


class ProgressParser:
    """Feed rsync's stdout bytes in any chunking; get L{Progress} values out.

    rsync rewrites its progress line with C{\\r}, so both C{\\r} and C{\\n} end a line.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.text: list[str] = []
        self.latest: Progress | None = None

    def feed(self, data: bytes) -> list[Progress]:
        self._buffer += data
        parts = re.split(rb"[\r\n]", self._buffer)
        self._buffer = parts.pop()
        found = []
        for raw in parts:
            line = raw.decode("utf-8", "replace")
            progress = self._progress(line)
            if progress is not None:
                found.append(progress)
            elif line.strip():
                self.text.append(line)
        # rsync ends a progress line with the next one's \r: read a complete-looking tail now,
        # not a second later (it is parsed again, harmlessly, when its \r comes).
        tail = self._buffer.decode("utf-8", "replace")
        if tail.endswith(("  ", ")")):
            progress = self._progress(tail)
            if progress is not None:
                found.append(progress)
        return found

    def _progress(self, line: str) -> Progress | None:
        match = _PROGRESS.match(line)
        if not match:
            return None
        progress = Progress(
            bytes=_number(match["bytes"]),
            percent=int(match["percent"]),
            to_check=int(match["tochk"]) if match["tochk"] else None,
            total_files=int(match["total"]) if match["total"] else None,
        )
        self.latest = progress
        return progress

    def finish(self) -> str:
        """The non-progress text (the C{--stats} block), once the process has ended."""
        if self._buffer:
            self.feed(b"\n")
        return "\n".join(self.text)


def _sshOption(location: Location) -> list[str]:
    return ["-e", location.ssh] if location.remote else []


def snapshotCommand(
    source: str,
    destination: Location,
    subpath: str,
    link_dest: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The rsync line that copies C{source} into a new snapshot directory.

    @param link_dest: the previous good snapshot of the same source, as a path on the machine
        that holds the backups; unchanged files become hard links to it.
    """
    argv = [
        "rsync",
        "-a",
        "--delete",
        "--numeric-ids",
        "--stats",
        "--info=progress2",
        "--no-inc-recursive",
        "--mkpath",
    ]
    argv += _sshOption(destination)
    if link_dest:
        argv.append(f"--link-dest={link_dest}")
    argv += list(extra or [])
    argv += [source.rstrip("/") + "/", destination.join(subpath) + "/"]
    return argv


def copyCommand(source: str, target: str, ssh: str | None = None, delete: bool = True) -> list[str]:
    """A plain whole-tree copy (pushing dumps, pulling a run back for restore, restoring files)."""
    argv = ["rsync", "-a", "--numeric-ids", "--stats", "--mkpath"]
    if delete:
        argv.append("--delete")
    if ssh:
        argv += ["-e", ssh]
    return argv + [source.rstrip("/") + "/", target.rstrip("/") + "/"]

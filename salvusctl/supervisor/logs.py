"""Instance output: split into lines stamped with the time they were received, filtered by level,
written to rotating files, kept in a ring for C{tail}, pushed to followers and a store hook.

Nothing a child writes can hurt the supervisor: lines are capped (the rest of an over-long line is
counted and dropped, not buffered), bytes are decoded with C{errors='replace'}.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from salvusctl.supervisor.deploy import LEVELS

__all__ = ["LogLine", "LineSplitter", "RotatingFile", "InstanceLog", "LogSource", "detectLevel", "MAX_LINE"]

MAX_LINE = 64 * 1024

_LEVEL_RE = re.compile(
    r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|PANIC)\b", re.IGNORECASE
)
_LEVEL_NAMES = {
    "debug": "debug", "info": "info", "notice": "info", "warn": "warning", "warning": "warning",
    "error": "error", "err": "error", "crit": "critical", "critical": "critical", "fatal": "critical",
    "panic": "critical",
}


def detectLevel(text: str, default: str) -> str:
    """A line's level from a level word near its start (C{ERROR}, C{[warn]} …), else C{default}."""
    m = _LEVEL_RE.search(text, 0, 80)
    return _LEVEL_NAMES[m.group(1).lower()] if m else default


@dataclass(frozen=True)
class LogLine:
    """One captured line.  C{time} is when Salvus received it (not when it was stored)."""

    time: float
    instance: str
    stream: str
    level: str
    text: str
    truncated: int = 0

    def format(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time))
        frac = int((self.time % 1) * 1_000_000)
        tail = f" [truncated {self.truncated} bytes]" if self.truncated else ""
        return f"{stamp}.{frac:06d}Z {self.level.upper()[:4]} {self.text}{tail}\n"


class LineSplitter:
    """Bytes in, complete lines out; at most C{maxLine} bytes of one line are ever held."""

    def __init__(self, deliver: Callable[[bytes, int], None], maxLine: int = MAX_LINE):
        self.deliver = deliver
        self.maxLine = maxLine
        self._buf = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> None:
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            room = self.maxLine - len(self._buf)
            take = min(room, end - start)
            if take > 0:
                self._buf += data[start:start + take]
            self._dropped += (end - start) - max(take, 0)
            if nl < 0:
                break
            self._emit()
            start = nl + 1

    def _emit(self) -> None:
        line, dropped = bytes(self._buf), self._dropped
        self._buf.clear()
        self._dropped = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        self.deliver(line, dropped)

    def flush(self) -> None:
        """Deliver a last line that had no newline (the child exited)."""
        if self._buf or self._dropped:
            self._emit()


class RotatingFile:
    """An append-only file rotated by size and by age, keeping C{backups} old files (C{.1} newest).

    @param now: the clock (C{reactor.seconds}); age rotation is checked on each write.
    """

    def __init__(self, path: str, maxBytes: int, backups: int, rotateSeconds: float | None,
                 now: Callable[[], float]):
        self.path = path
        self.maxBytes = maxBytes
        self.backups = backups
        self.rotateSeconds = rotateSeconds
        self.now = now
        self._f = None
        self._size = 0
        self._opened = 0.0

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._f = open(self.path, "ab")
        self._size = self._f.tell()
        self._opened = self.now()

    def write(self, data: bytes) -> None:
        if self._f is None:
            self._open()
        if self._size and (
            (self.maxBytes and self._size + len(data) > self.maxBytes)
            or (self.rotateSeconds and self.now() - self._opened >= self.rotateSeconds)
        ):
            self.rotate()
        self._f.write(data)
        self._size += len(data)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def rotate(self) -> None:
        """Shift C{path.N} to C{path.N+1}, drop the oldest, start a fresh C{path}."""
        self.close()
        if self.backups <= 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            if os.path.exists(self.path):
                os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class InstanceLog:
    """Both streams of one instance: files, a tail ring, followers and the store hook.

    @param storeHook: called with each L{LogLine} at or above C{storeLevel} (the monitor plugs the
        store in here); an exception it raises is logged, never propagated to the child's pipe.
    """

    def __init__(self, name: str, logDir: str, now: Callable[[], float], fileLevel: str = "debug",
                 storeLevel: str = "info", maxBytes: int = 50 * 1024 * 1024, backups: int = 10,
                 rotateSeconds: float | None = None, ringSize: int = 1000,
                 storeHook: Callable[[LogLine], Any] | None = None, maxLine: int = MAX_LINE,
                 onHookError: Callable[[BaseException], None] | None = None):
        self.name = name
        self.now = now
        self.fileLevel = LEVELS[fileLevel]
        self.storeLevel = LEVELS[storeLevel]
        self.storeHook = storeHook
        self.onHookError = onHookError
        safe = name.replace(":", "-")
        self.paths = {s: os.path.join(logDir, f"{safe}.{s}.log") for s in ("stdout", "stderr")}
        self.files = {
            s: RotatingFile(p, maxBytes, backups, rotateSeconds, now) for s, p in self.paths.items()
        }
        self.rings: dict[str, deque[LogLine]] = {s: deque(maxlen=ringSize) for s in self.paths}
        self.followers: dict[str, list[Callable[[LogLine], Any]]] = {s: [] for s in self.paths}
        self.maxLine = maxLine
        self.defaults = {"stdout": "info", "stderr": "info"}
        self._default = self.source()

    def source(self, onLine: Callable[[LogLine], Any] | None = None) -> LogSource:
        """A new writer (one per process): its own line buffers, so the unfinished last line of a
        process that is still draining never merges with its successor's output.  C{onLine} sees
        each of I{this process's} lines (a readiness pattern must not match its predecessor's)."""
        return LogSource(self, onLine)

    def received(self, stream: str, data: bytes) -> None:
        """Bytes from the child's pipe; stamps and files every complete line."""
        self._default.received(stream, data)

    def ended(self) -> None:
        """The child exited: deliver unterminated last lines."""
        self._default.ended()

    def _line(self, stream: str, raw: bytes, dropped: int, stamp: float) -> LogLine:
        text = raw.decode("utf-8", "replace")
        level = detectLevel(text, self.defaults[stream])
        line = LogLine(stamp, self.name, stream, level, text, dropped)
        self.rings[stream].append(line)
        rank = LEVELS[level]
        if rank >= self.fileLevel:
            self.files[stream].write(line.format().encode("utf-8", "replace"))
        if self.storeHook is not None and rank >= self.storeLevel:
            try:
                self.storeHook(line)
            except Exception as e:
                if self.onHookError is not None:
                    self.onHookError(e)
        for follower in list(self.followers[stream]):
            try:
                follower(line)
            except Exception as e:
                if self.onHookError is not None:
                    self.onHookError(e)
        return line

    def tail(self, lines: int = 100, stream: str = "stdout") -> list[str]:
        """The last C{lines} lines received on C{stream} (this run of Salvus), oldest first."""
        if stream not in self.rings:
            raise KeyError(f"unknown stream {stream!r} (stdout or stderr)")
        ring = self.rings[stream]
        if lines <= 0:
            return []
        return [entry.text for entry in list(ring)[-lines:]]

    def follow(self, callback: Callable[[LogLine], Any], stream: str = "stdout") -> Callable[[], None]:
        """Call C{callback(LogLine)} for each new line; returns the function that stops following."""
        if stream not in self.followers:
            raise KeyError(f"unknown stream {stream!r} (stdout or stderr)")
        self.followers[stream].append(callback)

        def cancel() -> None:
            if callback in self.followers[stream]:
                self.followers[stream].remove(callback)

        return cancel

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class LogSource:
    """One process's two pipes feeding an L{InstanceLog}."""

    def __init__(self, log: InstanceLog, onLine: Callable[[LogLine], Any] | None = None):
        self.log = log
        self.onLine = onLine
        self._stamp = 0.0
        self.splitters = {
            s: LineSplitter(lambda line, dropped, s=s: self._line(s, line, dropped), log.maxLine)
            for s in log.paths
        }

    def _line(self, stream: str, raw: bytes, dropped: int) -> None:
        line = self.log._line(stream, raw, dropped, self._stamp)
        if self.onLine is not None:
            self.onLine(line)

    def received(self, stream: str, data: bytes) -> None:
        self._stamp = self.log.now()
        self.splitters[stream].feed(data)
        self.log.files[stream].flush()

    def ended(self) -> None:
        self._stamp = self.log.now()
        for stream, splitter in self.splitters.items():
            splitter.flush()
            self.log.files[stream].flush()

"""Instance output: split into lines stamped with the time they were received, filtered by level,
written to rotating files, kept in a ring bounded by bytes for C{tail}, pushed to followers and,
repeats rate-limited, to a store hook.

The log files hold exactly the bytes the program wrote, line by line, as supervisord's do (tools
that parse a program's own log format read them, and C{supervisorctl tail} shows them): the
receive time and the detected level of each line go beside it, in the L{LogLine} records the
store, the pages and the followers get, never into the stream.

Nothing a child writes can hurt the supervisor: lines are capped (the rest of an over-long line is
counted and dropped, not buffered), bytes are decoded with C{errors='replace'}.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from typing import Any, NamedTuple

from salvusctl.supervisor.deploy import LEVELS

__all__ = ["LogLine", "LineSplitter", "RotatingFile", "RepeatLimiter", "TailRing", "InstanceLog", "LogSource",
           "detectLevel", "MAX_LINE", "TAIL_BYTES"]

MAX_LINE = 64 * 1024
#: What each stream's tail ring may hold by default (the text of its lines).
TAIL_BYTES = 1024 * 1024
#: What an entry of the tail ring costs beyond its bytes (the bytes object's header, the ring's
#: slot and tuple), for the byte bound: a ring of one-line entries is bounded too.
_ENTRY_OVERHEAD = 112

_LEVEL_RE = re.compile(
    r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|PANIC)\b", re.IGNORECASE
)
_LEVEL_NAMES = {
    "debug": "debug", "info": "info", "notice": "info", "warn": "warning", "warning": "warning",
    "error": "error", "err": "error", "crit": "critical", "critical": "critical", "fatal": "critical",
    "panic": "critical",
}


def _levelOf(word: str) -> str | None:
    """The level a matched word names.  Case folding matches a few non-ASCII spellings: C{ınfo}
    (dotless i) upper-cases to INFO and is info; C{İNFO} (dotted capital I) names none."""
    return _LEVEL_NAMES.get(word.lower()) or _LEVEL_NAMES.get(word.upper().lower())


def detectLevel(text: str, default: str) -> str:
    """A line's level from a level word near its start (C{ERROR}, C{[warn]} …), else C{default}."""
    m = _LEVEL_RE.search(text, 0, 80)
    return (_levelOf(m.group(1)) or default) if m else default


_LINE_LEVEL_RE = re.compile(
    r"^[^\n]{0,79}?\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|PANIC)\b",
    re.IGNORECASE | re.MULTILINE,
)


_WORDS = ("DEBUG", "INFO", "NOTICE", "WARN", "ERR", "CRIT", "FATAL", "PANIC")


_WORD_LETTERS = frozenset(b"".join(w.encode() for w in _WORDS))
#: For L{mayHaveLevel}: every byte but the letters of the level words (either case) is deleted,
#: lower case is made upper.
_LETTERS_ONLY = (bytes.maketrans(bytes(range(97, 123)), bytes(range(65, 91))),
                 bytes(b for b in range(256) if b not in _WORD_LETTERS and b - 32 not in _WORD_LETTERS))
_BYTE_WORDS = tuple(w.encode() for w in _WORDS)
#: {a file level: the words (of L{_WORDS}) that may name a level below it}.  A word is a prefix
#: of the longer ones it may begin (WARN of WARNING).
_WORDS_BELOW = {rank: tuple(w for w in _WORDS
                            if any(LEVELS[level] < rank for word, level in _LEVEL_NAMES.items()
                                   if word.upper().startswith(w)))
                for rank in LEVELS.values()}


_BYTE_WORDS_BELOW = {rank: tuple(w.encode() for w in words) for rank, words in _WORDS_BELOW.items()}


def _mayHaveWords(data: bytes, start: int, end: int, words: tuple[bytes, ...]) -> bool:
    """False only when no line of C{data[start:end]} (whole lines) can hold one of C{words}
    (upper case) within its first 80 characters: then every line's level is the default, and
    the chunk is written and kept without being decoded or split.

    Long lines: their first 81 bytes only, found by one C{find} a line (a chunk of 4 KiB lines
    is 32 steps, not a copy of its text); every head ASCII, bytes are characters.  Short ones:
    L{mayHaveLevel}'s letter filter on the whole object (bytes around the lines can only add
    false alarms, which the full scan then settles)."""
    sample = min(end, start + 4 * LONG_LINES)
    if data.count(b"\n", start, sample) * LONG_LINES < sample - start:  # long lines (a sample)
        heads = []
        find = data.find
        pos = start
        while pos < end:
            nl = find(b"\n", pos, end)
            heads.append(data[pos:min(pos + 81, nl)])
            pos = nl + 1
        joined = b"\n".join(heads)
        if not joined.isascii():
            return True
        joined = joined.upper()
        return any(word in joined for word in words)
    if not data.isascii():
        return True
    letters = data.translate(*_LETTERS_ONLY)
    return any(word in letters for word in words)


def mayHaveLevel(raw: bytes) -> bool:
    """False only when no line of C{raw} (ASCII, or else always True) can have a level word.

    Deleting every byte that is not a letter of a level word keeps each word that was there
    whole (its letters were next to each other), so one C{bytes.translate} and the substring
    searches on what is left, much shorter than the chunk, rule out most chunks of a
    flood without level words at a fraction of the cost of searching the chunk itself.  Non-ASCII
    text may hold letters that match under case folding (C{ı} upper-cases to C{I}): it is
    never ruled out here."""
    if not raw.isascii():
        return True
    letters = raw.translate(*_LETTERS_ONLY)
    return any(word in letters for word in _BYTE_WORDS)


#: For L{_findLevels}: the words found by substring search, and the longer word each may begin.
_LONGER = {"WARN": "WARNING", "ERR": "ERROR", "CRIT": "CRITICAL"}


def _isWord(ch: str) -> bool:
    """C{\\w} of C{re} for one character: what a word boundary looks at."""
    return ch.isalnum() or ch == "_"


def _findLevels(upper: str, rows: bool = False) -> dict[int, str]:
    """L{detectLevels} on an upper-cased chunk by substring search instead of the regex.

    Each level word is looked for with C{str.find} (a C scan much faster than the regex trying
    eleven alternatives at every position of every line); only the hits, one or two a line at
    most in real logs, cost a Python step: their word boundaries and line start are checked
    here.  Per line the leftmost whole word wins, and counts only when it ends within the
    line's first 80 characters: what C{_LINE_LEVEL_RE} finds.

    @param rows: C{upper} is made of rows of C{_ROW} characters (see L{_heads}): the keys are
        row numbers, not offsets."""
    best: dict[int, tuple[int, str]] = {}
    find, rfind, n = upper.find, upper.rfind, len(upper)
    for word in _WORDS:
        size = len(word)
        longer = _LONGER.get(word)
        at = find(word)
        while at >= 0:
            nxt = at + size
            if at == 0 or not _isWord(upper[at - 1]):
                found = None
                if nxt >= n or not _isWord(upper[nxt]):
                    found = word
                elif longer is not None and upper.startswith(longer[size:], nxt):
                    end = at + len(longer)
                    if end >= n or not _isWord(upper[end]):
                        found, nxt = longer, end
                if found is not None:
                    if rows:
                        key, start = divmod(at, _ROW)
                        start = at - start
                    else:
                        key = start = rfind("\n", 0, at) + 1
                    have = best.get(key)
                    if have is None or at < have[0]:
                        best[key] = (at, found if nxt - start <= 80 else "")
            at = find(word, at + 1)
    names = _LEVEL_NAMES
    return {key: names[word.lower()] for key, (_, word) in best.items() if word}


#: A row of L{_heads}: a line's first 81 characters (a word ending at 80 and the character after
#: it), padded with spaces, and the newline.
_ROW = 82


def _heads(lines: list[str]) -> str:
    """The first 81 characters of each line, padded to rows of one width: for long lines the
    words are looked for in the heads only, not in all the text.

    Cutting a line can make a word of what was the start of a longer one (C{ERRX} cut after
    C{ERR}), but only where the cut is, past the 80th character, where no word counts."""
    return "\n".join([t[:81].ljust(81) for t in lines])


#: Lines longer than this on average: L{detectLevels} reads their heads only.
LONG_LINES = 256


def detectLevels(text: str, default: str, lines: list[str] | None = None,
                 words: tuple[str, ...] = _WORDS) -> dict[int, str] | None:
    """{offset of a line in C{text}: its level} for the lines of C{text} (joined by newlines)
    that have a level word within their first 80 characters, None when no line has one.

    One pass for a whole chunk: a chunk without any level word (most floods) costs one
    C{upper()} and a few substring searches, not a regex over every line.

    @param lines: C{text.split("\\n")}, when the caller has it.
    @param words: None is returned, without a scan, when none of these is in the text: the
        caller that only needs to know of some levels names their words."""
    if lines is None:
        lines = text.split("\n")
    if text.isascii() and len(text) > LONG_LINES * len(lines):  # ASCII: upper() is 1:1
        heads = _heads(lines).upper()
        if not any(word in heads for word in words):
            return None
        found = _findLevels(heads, rows=True)
        if not found:
            return None
        starts = [0, *accumulate(map(len, lines))]
        return {starts[row] + row: level for row, level in found.items()}
    upper = text.upper()
    if not any(word in upper for word in words):
        return None
    if len(upper) == len(text):  # the upper copy maps 1:1 onto the text
        return _findLevels(upper) or None
    found = _LINE_LEVEL_RE.finditer(text)  # upper() changed lengths (ß → SS): offsets differ
    names = _LEVEL_NAMES
    levels = {m.start(): names.get((word := m.group(1)).lower()) or _levelOf(word)
              for m in found if m.end(1) - m.start() <= 80}
    if None in levels.values():  # a word that names no level (İNFO): as if it were not there
        levels = {at: level for at, level in levels.items() if level}
    return levels or None


_stampCache: list = [None, ""]


def _stamp(t: float) -> str:
    """C{2026-11-23T17:00:00.123456Z}; the seconds part is formatted once per second."""
    second = int(t)
    if _stampCache[0] != second:
        _stampCache[0] = second
        _stampCache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_stampCache[1]}.{int((t % 1) * 1_000_000):06d}Z"


class LogLine(NamedTuple):
    """One captured line.  C{time} is when Salvus received it (not when it was stored).

    A named tuple: a flood of lines makes one of these per line, and a tuple is the cheapest
    immutable record Python has."""

    time: float
    instance: str
    stream: str
    level: str
    text: str
    truncated: int = 0

    def format(self) -> str:
        tail = f" [truncated {self.truncated} bytes]" if self.truncated else ""
        return f"{_stamp(self.time)} {self.level.upper()[:4]} {self.text}{tail}\n"


def _overCap(data: bytes, start: int, end: int, cap: int) -> bool:
    """Whether a line of C{data[start:end]} (lines split by newlines) is longer than C{cap}.

    Each step looks for the last newline within C{cap + 1} bytes of the current line start:
    none means the line there is over the cap; one moves past every line before it.  A chunk
    of short lines costs one C{rfind} per C{cap} bytes, not a step per line."""
    pos = start
    rfind = data.rfind
    while end - pos > cap:
        nl = rfind(b"\n", pos, pos + cap + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


class LineSplitter:
    """Bytes in, complete lines out; at most C{maxLine} bytes of one line are ever held.

    @param deliver: C{deliver(line, dropped)} for each line.
    @param deliverMany: when given, called instead once per chunk with every complete line of
        it, C{deliverMany(body, dropped)}: C{body} the lines joined by newlines (without the
        last one), C{dropped} None, or the bytes cut from each line.  A chunk of a thousand
        lines is not split into a thousand objects here: its receiver splits it once, as text.
    @param deliverChunk: when given (with C{deliverMany}), the lines that need no cutting (none
        over the cap, no CR) go to it instead, as they came and uncopied:
        C{deliverChunk(pieces)}, each piece C{(data, start, end)} with C{data[start:end]} whole
        lines, each ending in a newline.  A read of 128 KiB is one or two pieces: the start of a
        line held from the previous read, completed, and the read's own complete lines.
    """

    def __init__(self, deliver: Callable[[bytes, int], None], maxLine: int = MAX_LINE,
                 deliverMany: Callable[[bytes, list[int] | None], None] | None = None,
                 deliverChunk: Callable[[list[tuple[bytes, int, int]]], None] | None = None):
        self.deliver = deliver
        self.deliverMany = deliverMany
        self.deliverChunk = deliverChunk
        self.maxLine = maxLine
        self._buf = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> None:
        if self.deliverMany is not None:
            self._feedMany(data)
            return
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

    def _hold(self, data: bytes) -> None:
        """Keep the start of an unfinished line, at most C{maxLine} bytes of it."""
        room = self.maxLine - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        self._dropped += max(0, len(data) - max(room, 0))

    def _feedMany(self, data: bytes) -> None:
        last = data.rfind(b"\n")
        if last < 0:
            self._hold(data)
            return
        chunk = self.deliverChunk
        if chunk is None:
            self._feedJoined(data, last)
            return
        cap = self.maxLine
        pieces: list[tuple[bytes, int, int]] = []
        start = 0
        if self._buf or self._dropped:
            # The held start of a line and its end in this read: one line, copied once (it is
            # short, or at most the cap).
            nl = data.find(b"\n")
            if not self._dropped and len(self._buf) + nl <= cap and data.find(b"\r", 0, nl) < 0 \
                    and not self._buf.endswith(b"\r"):
                line = b"".join((self._buf, memoryview(data)[:nl + 1]))
                self._buf = bytearray()
                pieces.append((line, 0, len(line)))
            else:
                self._deliverCut(data[:nl])
            start = nl + 1
        if start <= last:
            if data.find(b"\r", start, last) < 0 and not _overCap(data, start, last, cap):
                pieces.append((data, start, last + 1))
            else:
                if pieces:
                    chunk(pieces)
                    pieces = []
                self._deliverCut(data[start:last])
        if pieces:
            chunk(pieces)
        if last + 1 < len(data):
            self._hold(data[last + 1:])

    def _feedJoined(self, data: bytes, last: int) -> None:
        """L{_feedMany} without C{deliverChunk}: the complete lines joined, to C{deliverMany}."""
        if self._buf and not self._dropped:
            # The held start of a line (under the cap) joins the chunk: one copy, not a split.
            last += len(self._buf)
            data = bytes(self._buf) + data
            self._buf = bytearray()
        if (not self._buf and not self._dropped and data.find(b"\r", 0, last) < 0
                and not _overCap(data, 0, last, self.maxLine)):
            # No line is over the cap, none ends in CR, none continues a held one: the chunk's
            # complete lines go as they came, not split here.
            self.deliverMany(data[:last], None)
        else:
            self._deliverCut(data[:last])
        if last + 1 < len(data):
            self._hold(data[last + 1:])

    def _deliverCut(self, body: bytes) -> None:
        """C{body}'s lines joined to the held start of the first one, each capped, CRs cut."""
        lines = body.split(b"\n")
        cap = self.maxLine
        dropped: list[int] | None = None
        if self._buf or self._dropped:
            held = self._buf
            self._hold(lines[0])
            lines[0], first = bytes(held), self._dropped
            self._buf = bytearray()
            self._dropped = 0
            if first:
                dropped = [0] * len(lines)
                dropped[0] = first
        if len(body) > cap and max(map(len, lines)) > cap:
            for i, line in enumerate(lines):
                if len(line) > cap:
                    if dropped is None:
                        dropped = [0] * len(lines)
                    dropped[i] += len(line) - cap
                    lines[i] = line[:cap]
        if b"\r" in body:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self.deliverMany(b"\n".join(lines), dropped)

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

    def truncate(self) -> None:
        """Empty the current file (its rotated backups stay), so the next write starts it again
        and size rotation counts from zero."""
        if self._f is not None:
            self._f.flush()
            self._f.truncate(0)
        elif os.path.exists(self.path):
            with open(self.path, "r+b") as f:
                f.truncate(0)
        self._size = 0

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



class RepeatLimiter:
    """Keeps a flood of identical lines out of the store without losing what they said.

    Within each C{window} seconds, the first occurrence of a line (same stream, level and text)
    is stored; later ones are only counted.  When the window ends, one record per repeated line
    says how many more times it came (C{"<text> [repeated N more times in 60s]"}), so the store
    gets at most two rows per distinct line per window, however fast a child repeats itself, and
    every distinct line is stored.  Memory is bounded: at most C{maxKeys} lines are tracked per
    window and C{maxBytes} of repeated text is kept; past either, lines are stored as they come
    (never dropped).

    @param emit: receives each line to store, summaries included.
    @param callLater: schedules the end of a window (C{reactor.callLater}); without one, a
        window's summaries go out with the first line after it, or at L{flush}.
    """

    def __init__(self, emit: Callable[[LogLine], None], window: float, now: Callable[[], float],
                 callLater: Callable[..., Any] | None = None, maxKeys: int = 1024,
                 maxBytes: int = 256 * 1024):
        self.emit = emit
        self.window = window
        self.now = now
        self.callLater = callLater
        self.maxKeys = maxKeys
        self.maxBytes = maxBytes
        self.suppressed = 0  # total repeats counted (not stored as rows), for the host's metrics
        self._start: float | None = None
        self._seen: dict[tuple[str, str, str], int] = {}
        self._repeated: dict[tuple[str, str, str], list] = {}  # key -> [first line, count]
        self._kept = 0
        self._timer: Any = None

    def offer(self, line: LogLine) -> None:
        if self.window <= 0:
            self.emit(line)
            return
        now = self.now()
        if self._start is None or now - self._start >= self.window:
            self.flush()
            self._start = now
        key = (line.stream, line.level, line.text)
        if key not in self._seen:
            if len(self._seen) < self.maxKeys:
                self._seen[key] = 1
            self.emit(line)
            return
        entry = self._repeated.get(key)
        if entry is None:
            if self._kept + len(line.text) > self.maxBytes:
                self.emit(line)  # no room to remember its text: store it, lose nothing
                return
            self._kept += len(line.text)
            entry = self._repeated[key] = [line, 0]
        entry[1] += 1
        self.suppressed += 1
        if self._timer is None and self.callLater is not None:
            self._timer = self.callLater(max(0.0, self._start + self.window - now), self._timerFired)

    def _timerFired(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """End the window: one summary record per repeated line, then forget the window."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        repeated, self._repeated = self._repeated, {}
        self._seen = {}
        self._kept = 0
        elapsed = self.now() - self._start if self._start is not None else 0.0
        self._start = None
        for first, count in repeated.values():
            self.emit(LogLine(self.now(), first.instance, first.stream, first.level,
                              f"{first.text} [repeated {count} more times in {elapsed:.0f}s]"))

class TailRing:
    """A stream's newest lines for C{tail}, at most C{maxLines} of them and C{maxBytes} of memory,
    kept as the chunks they came in, counted and decoded only when a tail asks.

    A read of a flood is one entry here (the bytes object the pipe gave, and where its complete
    lines are), not a thousand strings, and adding one costs no scan of it: the same for lines
    of 24 bytes or of 4 KiB.  What an entry costs is the whole object it keeps alive, so that is
    what the byte bound counts; an entry using less than half of its object keeps a copy of its
    part instead.  The newest line is always kept (it is at most the splitter's cap).  The line
    bound is applied when the lines are read: the ring serves at most the newest C{maxLines}."""

    def __init__(self, maxLines: int, maxBytes: int):
        self.maxLines = maxLines
        self.maxBytes = maxBytes
        #: [data, start, end, lines or None until counted]
        self._chunks: deque[list] = deque()
        self._bytes = 0  # the size of the objects the entries keep alive
        self._dropped = False

    def add(self, data: bytes, start: int, end: int, lines: int | None = None) -> None:
        """C{data[start:end]}: whole lines, each ending in a newline (C{lines} of them, if known)."""
        if end - start > self.maxBytes:
            # Only the newest lines that fit (at least the newest one) are kept, as a copy.
            cut = data.find(b"\n", end - self.maxBytes - 1, end - 1) + 1
            if cut <= 0:
                cut = max(start, data.rfind(b"\n", start, end - 1) + 1)
            data, start, end, lines = data[cut:end], 0, end - cut, None
            self._dropped = True
        elif (end - start) * 2 < len(data):
            data, start, end = data[start:end], 0, end - start
        chunks = self._chunks
        chunks.append([data, start, end, lines])
        self._bytes += len(data) + _ENTRY_OVERHEAD
        while self._bytes > self.maxBytes and len(chunks) > 1:
            self._bytes -= len(chunks.popleft()[0]) + _ENTRY_OVERHEAD
            self._dropped = True

    def _count(self, entry: list) -> int:
        if entry[3] is None:
            entry[3] = entry[0].count(b"\n", entry[1], entry[2])
        return entry[3]

    def _held(self) -> tuple[int, int]:
        """(index of the oldest entry served, lines of it not served): the newest entries
        holding C{maxLines} lines, counted from the newest until they do."""
        need = self.maxLines
        for index in range(len(self._chunks) - 1, -1, -1):
            lines = self._count(self._chunks[index])
            if lines >= need:
                return index, lines - need
            need -= lines
        return 0, 0

    def _texts(self, index: int, skip: int = 0) -> list[str]:
        data, start, end, _lines = self._chunks[index]
        texts = data[start:end].decode("utf-8", "replace").split("\n")
        texts.pop()  # after the last newline
        if skip:
            del texts[:skip]
        return texts

    def last(self, n: int) -> list[str]:
        """The newest C{n} lines (fewer if fewer are served), oldest first: only the entries that
        hold them are decoded."""
        n = min(n, self.maxLines)
        if n <= 0:
            return []
        got: list[list[str]] = []
        have = 0
        for index in range(len(self._chunks) - 1, -1, -1):
            if have >= n:
                break
            texts = self._texts(index)
            got.append(texts)
            have += len(texts)
        out = [text for texts in reversed(got) for text in texts]
        return out[-n:]

    @property
    def evicted(self) -> bool:
        """Whether lines received since the last clear are no longer served (a tail may then
        read older ones from the file)."""
        if self._dropped:
            return True
        index, skip = self._held()
        return index > 0 or skip > 0

    def __len__(self) -> int:
        index, skip = self._held()
        return sum(self._count(self._chunks[i]) for i in range(index, len(self._chunks))) - skip

    def __iter__(self):
        index, skip = self._held()
        for i in range(index, len(self._chunks)):
            yield from self._texts(i, skip if i == index else 0)

    def heldBytes(self) -> int:
        """What the entries keep alive, in bytes (the figure the byte bound holds)."""
        return self._bytes

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0
        self._dropped = False


class InstanceLog:
    """Both streams of one instance: files, a tail ring, followers and the store hook.

    @param storeHook: called with each L{LogLine} at or above C{storeLevel} (the monitor plugs the
        store in here); an exception it raises is logged, never propagated to the child's pipe.
        Repeats of one line within C{repeatWindow} seconds reach it as one summary record
        (L{RepeatLimiter}); 0 sends every line.
    @param tailBytes: what the tail ring of each stream may hold (the text of its lines), so the
        memory a chatty instance costs does not depend on its line length; older lines are read
        back from the log file (at most C{tailBytes} of it) when a tail asks for more.
    """

    def __init__(self, name: str, logDir: str, now: Callable[[], float], fileLevel: str = "debug",
                 storeLevel: str = "info", maxBytes: int = 50 * 1024 * 1024, backups: int = 10,
                 rotateSeconds: float | None = None, ringSize: int = 1000,
                 storeHook: Callable[[LogLine], Any] | None = None, maxLine: int = MAX_LINE,
                 onHookError: Callable[[BaseException], None] | None = None,
                 repeatWindow: float = 60.0, callLater: Callable[..., Any] | None = None,
                 tailBytes: int = TAIL_BYTES):
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
        self.ringSize = ringSize
        self.tailBytes = tailBytes
        self.rings = {s: TailRing(ringSize, tailBytes) for s in self.paths}
        self.repeats = RepeatLimiter(self._store, repeatWindow, now, callLater)
        self.followers: dict[str, list[Callable[[LogLine], Any]]] = {s: [] for s in self.paths}
        # Followers that take the bytes as written (see L{follow}): no record is made for them.
        self.byteFollowers: dict[str, list[Any]] = {s: [] for s in self.paths}
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
        data = raw + b"\n"
        self.rings[stream].add(data, 0, len(data), 1)
        rank = LEVELS[level]
        if rank >= self.fileLevel:
            self.files[stream].write(data)
        if self.storeHook is not None and rank >= self.storeLevel:
            self.repeats.offer(line)
        for follower in list(self.followers[stream]):
            try:
                follower(line)
            except Exception as e:
                if self.onHookError is not None:
                    self.onHookError(e)
        if self.byteFollowers[stream]:
            self._toBytes(stream, data, 1)
        return line

    def _toBytes(self, stream: str, data: bytes, count: int) -> None:
        """Hand C{count} whole lines, as written, to each byte follower of C{stream}."""
        for follower in list(self.byteFollowers[stream]):
            try:
                follower.chunk(data, count)
            except Exception as e:
                if self.onHookError is not None:
                    self.onHookError(e)

    def _chunk(self, stream: str, pieces: list[tuple[bytes, int, int]], stamp: float,
               want: bool = False) -> list[LogLine] | None:
        """Whole lines as they came from the pipe (see L{LineSplitter}'s C{deliverChunk}).

        When nobody takes records and no line can hold a level word that changes what the file
        keeps, the pieces go to the file and to the tail ring as they are: no decode, no split,
        no copy, whatever the line length.  Otherwise they are joined for L{_lines}."""
        if not (want or self.storeHook is not None or self.followers[stream]):
            default = LEVELS[self.defaults[stream]]
            words = _BYTE_WORDS if default < self.fileLevel else _BYTE_WORDS_BELOW[self.fileLevel]
            if not words or not any(_mayHaveWords(data, start, end, words) for data, start, end in pieces):
                ring, file = self.rings[stream], self.files[stream]
                keep = default >= self.fileLevel
                for data, start, end in pieces:
                    ring.add(data, start, end)
                    if keep:
                        file.write(data if start == 0 and end == len(data) else memoryview(data)[start:end])
                if self.byteFollowers[stream]:
                    whole = b"".join([memoryview(data)[start:end] for data, start, end in pieces])
                    self._toBytes(stream, whole, whole.count(b"\n"))
                return None
        if len(pieces) == 1 and pieces[0][1] == 0 and pieces[0][2] == len(pieces[0][0]):
            raw = pieces[0][0]
        else:
            raw = b"".join([memoryview(data)[start:end] for data, start, end in pieces])
        return self._lines(stream, raw, None, stamp, want, ended=True)

    def _lines(self, stream: str, raw: bytes, dropped: list[int] | None, stamp: float,
               want: bool = False, ended: bool = False) -> list[LogLine] | None:
        """A chunk's complete lines at once (C{raw}: joined by newlines, with one after the last
        when C{ended}): one decode, one level scan, one file write.

        L{LogLine} records are made only when someone takes them (the store hook, a follower, or
        C{want}: a readiness pattern); the tail ring keeps the bytes."""
        joined = raw.decode("utf-8", "replace")
        texts = joined.split("\n")
        if ended:
            texts.pop()
        default = self.defaults[stream]
        name = self.name
        fileLevel, storeLevel = self.fileLevel, self.storeLevel
        followers = self.followers[stream]
        need = want or self.storeHook is not None or bool(followers)
        # The levels are looked for only when something depends on them: records someone takes,
        # or a file level that some line's level could fall below; then only the words of those
        # levels can change what the file keeps.
        levels = None
        if need or LEVELS[default] < fileLevel:
            words = _WORDS
        else:
            words = _WORDS_BELOW[fileLevel]
        if words and (len(raw) > LONG_LINES * len(texts) or mayHaveLevel(raw)):
            levels = detectLevels(joined, default, texts, words)
        lines: list[LogLine] | None = None
        if levels is None:
            out = b""
            if LEVELS[default] >= fileLevel:
                out = raw if ended else raw + b"\n"
            if need:
                lines = [LogLine(stamp, name, stream, default, text, dropped[i] if dropped else 0)
                         for i, text in enumerate(texts)]
        else:
            lines = [] if need else None
            parts = []
            rawLines = raw.split(b"\n")  # as many as texts: 0x0A never decodes into anything else
            if ended:
                rawLines.pop()
            pos = 0
            for i, text in enumerate(texts):
                level = levels.get(pos, default)
                cut = dropped[i] if dropped else 0
                if lines is not None:
                    lines.append(LogLine(stamp, name, stream, level, text, cut))
                pos += len(text) + 1
                if LEVELS[level] >= fileLevel:
                    parts.append(rawLines[i])
            out = b"\n".join(parts) + b"\n" if parts else b""
        kept = raw if ended else raw + b"\n"
        self.rings[stream].add(kept, 0, len(kept), len(texts))
        if out:
            self.files[stream].write(out)
        if self.byteFollowers[stream]:
            self._toBytes(stream, kept, len(texts))
        if lines is None:
            return None
        if self.storeHook is not None:
            offer = self.repeats.offer
            for line in lines:
                if LEVELS[line.level] >= storeLevel:
                    offer(line)
        if followers:
            for follower in list(followers):
                # A follower with a C{lines} method takes the chunk's lines in one call (one
                # formatted block shared by every such follower); others get one call a line.
                many = getattr(follower, "lines", None)
                try:
                    if many is not None:
                        many(lines)
                    else:
                        for line in lines:
                            follower(line)
                except Exception as e:
                    if self.onHookError is not None:
                        self.onHookError(e)
        return lines

    def _store(self, line: LogLine) -> None:
        try:
            self.storeHook(line)
        except Exception as e:
            if self.onHookError is not None:
                self.onHookError(e)

    def tail(self, lines: int = 100, stream: str = "stdout") -> list[str]:
        """The last C{lines} lines received on C{stream} (this run of Salvus), oldest first.

        When the ring has let lines go (its byte bound) and holds fewer than asked, the lines
        come from the end of the log file instead, reading at most C{tailBytes} of it."""
        if stream not in self.rings:
            raise KeyError(f"unknown stream {stream!r} (stdout or stderr)")
        if lines <= 0:
            return []
        ring = self.rings[stream]
        kept = ring.last(lines)
        if len(kept) >= lines or not ring.evicted:
            return kept
        older = self._fileTail(stream, lines)
        return older if len(older) > len(kept) else kept

    def _fileTail(self, stream: str, lines: int) -> list[str]:
        self.files[stream].flush()
        try:
            with open(self.paths[stream], "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - max(self.tailBytes, 64 * 1024))
                f.seek(start)
                data = f.read(size - start)
        except OSError:
            return []
        rows = data.split(b"\n")
        if start > 0:
            rows = rows[1:]  # the first one is cut
        texts = [row.decode("utf-8", "replace") for row in rows if row]
        return texts[-lines:]

    def clear(self) -> None:
        """Empty both streams: the log files and the tail rings (supervisord's
        C{clearProcessLogs}); followers keep following the lines written from now on."""
        for stream in self.paths:
            self.files[stream].truncate()
            self.rings[stream].clear()

    def follow(self, callback: Callable[[LogLine], Any], stream: str = "stdout") -> Callable[[], None]:
        """Call C{callback(LogLine)} for each new line; returns the function that stops following.

        A C{callback} that also has a C{lines(list_of_LogLine)} method is given each chunk's lines
        in one call instead; one with a C{chunk(data, count)} method is given the bytes as the
        program wrote them (C{count} whole lines, as the log file and the tail hold them) and
        no record is made for it (what C{supervisorctl tail -f} reads:
        L{salvusctl.admin.logstream.RawLogStream}).  With 20 C{tail -f} followers of a
        flooding program, a call and a record per line per follower were most of the
        supervisor's CPU per logged line."""
        if stream not in self.followers:
            raise KeyError(f"unknown stream {stream!r} (stdout or stderr)")
        table = self.byteFollowers if callable(getattr(callback, "chunk", None)) else self.followers
        table[stream].append(callback)

        def cancel() -> None:
            if callback in table[stream]:
                table[stream].remove(callback)

        return cancel

    def flushRepeats(self) -> None:
        """End the repeat window now: each line counted in it reaches the store hook as its
        summary (what a store about to close must still be given)."""
        if self.storeHook is not None:
            self.repeats.flush()

    def close(self) -> None:
        self.flushRepeats()
        for f in self.files.values():
            f.close()


class LogSource:
    """One process's two pipes feeding an L{InstanceLog}."""

    def __init__(self, log: InstanceLog, onLine: Callable[[LogLine], Any] | None = None):
        self.log = log
        self.onLine = onLine
        self._stamp = 0.0
        self.splitters = {
            s: LineSplitter(lambda line, dropped, s=s: self._line(s, line, dropped), log.maxLine,
                            lambda lines, dropped, s=s: self._lines(s, lines, dropped),
                            lambda pieces, s=s: self._chunk(s, pieces))
            for s in log.paths
        }

    def _line(self, stream: str, raw: bytes, dropped: int) -> None:
        line = self.log._line(stream, raw, dropped, self._stamp)
        if self.onLine is not None:
            self.onLine(line)

    def _lines(self, stream: str, raw: bytes, dropped: list[int] | None) -> None:
        lines = self.log._lines(stream, raw, dropped, self._stamp, self.onLine is not None)
        for line in lines or ():
            if self.onLine is None:
                break
            self.onLine(line)

    def _chunk(self, stream: str, pieces: list[tuple[bytes, int, int]]) -> None:
        lines = self.log._chunk(stream, pieces, self._stamp, self.onLine is not None)
        for line in lines or ():
            if self.onLine is None:
                break
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

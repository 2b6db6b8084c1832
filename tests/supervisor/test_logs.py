"""Log capture: line splitting with a cap, receive-time stamps, level filters, rotation, tail/follow."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.supervisor.logs import InstanceLog, LineSplitter, RepeatLimiter, RotatingFile, detectLevel
from tests.supervisor import scratch


class SplitterTests(SynchronousTestCase):
    def split(self, chunks, maxLine=16):
        out = []
        s = LineSplitter(lambda line, dropped: out.append((line, dropped)), maxLine)
        for c in chunks:
            s.feed(c)
        s.flush()
        return out

    def test_lines_across_chunks(self):
        self.assertEqual(self.split([b"ab", b"c\nde", b"f\r\n\ng"]),
                         [(b"abc", 0), (b"def", 0), (b"", 0), (b"g", 0)])

    def test_long_line_is_capped_not_buffered(self):
        """A 10 MB line keeps at most maxLine bytes in memory; the rest is counted."""
        out = []
        s = LineSplitter(lambda line, dropped: out.append((len(line), dropped)), 1024)
        chunk = b"x" * 65536
        for _ in range(160):
            s.feed(chunk)
            self.assertLessEqual(len(s._buf), 1024)
        s.feed(b"\nnext\n")
        self.assertEqual(out, [(1024, 160 * 65536 - 1024), (4, 0)])


class LevelTests(SynchronousTestCase):
    def test_detect(self):
        self.assertEqual(detectLevel("2024 [error] boom", "info"), "error")
        self.assertEqual(detectLevel("WARNING: low disk", "info"), "warning")
        self.assertEqual(detectLevel("plain", "info"), "info")
        self.assertEqual(detectLevel("x" * 100 + " ERROR late", "info"), "info")


class InstanceLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000.25)
        self.dir = scratch(self)
        self.stored = []

    def make(self, **kw) -> InstanceLog:
        kw.setdefault("storeHook", self.stored.append)
        return InstanceLog("web:0", self.dir, self.clock.seconds, **kw)

    def test_receive_time_and_file(self):
        """Each line carries the time it was received (in the store's record); the file holds
        exactly what the program wrote, as supervisord's does: no time or level injected."""
        log = self.make()
        log.received("stdout", b"hello\nwor")
        self.clock.advance(2)
        log.received("stdout", b"ld\n")
        self.assertEqual([round(x.time, 2) for x in self.stored], [1700000000.25, 1700000002.25])
        with open(log.paths["stdout"]) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, ["hello", "world"])
        self.assertEqual([x.level for x in self.stored], ["info", "info"])

    def test_file_holds_the_programs_bytes(self):
        """Undecodable bytes, level words and over-long lines reach the file as written (the
        over-long line cut at the cap, its cut counted in the store's record)."""
        log = self.make(maxLine=16)
        log.received("stdout", b"\xff\xfe raw\nERROR: disk\n" + b"x" * 40 + b"\n")
        with open(log.paths["stdout"], "rb") as f:
            data = f.read()
        self.assertEqual(data, b"\xff\xfe raw\nERROR: disk\n" + b"x" * 16 + b"\n")
        self.assertEqual([x.level for x in self.stored][:2], ["info", "error"])

    def test_binary_garbage(self):
        """Invalid UTF-8 and NULs are replaced, never raised."""
        log = self.make()
        log.received("stderr", bytes(b for b in range(256) if b != 10) + b"\n")
        self.assertEqual(len(log.tail(5, "stderr")), 1)
        self.assertIn("\ufffd", log.tail(5, "stderr")[0])

    def test_level_filters(self):
        """The file keeps warning+; the store gets error+ only."""
        log = self.make(fileLevel="warning", storeLevel="error")
        log.received("stdout", b"INFO chatter\nWARNING careful\nERROR broken\n")
        with open(log.paths["stdout"]) as f:
            text = f.read()
        self.assertNotIn("chatter", text)
        self.assertIn("careful", text)
        self.assertEqual([x.text for x in self.stored], ["ERROR broken"])
        self.assertEqual(len(log.tail(10)), 3)

    def test_hook_errors_do_not_break_capture(self):
        errors = []

        def bad(line):
            raise RuntimeError("store down")

        log = self.make(storeHook=bad, onHookError=errors.append)
        log.received("stdout", b"a\nb\n")
        self.assertEqual(log.tail(2), ["a", "b"])
        self.assertEqual(len(errors), 2)

    def test_tail_and_follow(self):
        log = self.make(ringSize=5)
        seen = []
        stop = log.follow(lambda line: seen.append(line.text))
        log.received("stdout", b"".join(b"%d\n" % i for i in range(10)))
        self.assertEqual(log.tail(3), ["7", "8", "9"])
        # the ring kept 5; older lines come back from the log file
        self.assertEqual(log.tail(100), [str(i) for i in range(10)])
        self.assertEqual(len(seen), 10)
        stop()
        log.received("stdout", b"more\n")
        self.assertEqual(len(seen), 10)
        self.assertRaises(KeyError, log.tail, 1, "stdin")

    def test_generations_do_not_mix(self):
        """An old process's unfinished line never merges with its successor's output."""
        log = self.make()
        old, new = log.source(), log.source()
        old.received("stdout", b"half of a")
        new.received("stdout", b"fresh\n")
        old.received("stdout", b" line\n")
        self.assertEqual(log.tail(2), ["fresh", "half of a line"])

    def test_unterminated_last_line(self):
        log = self.make()
        log.received("stdout", b"no newline")
        log.ended()
        self.assertEqual(log.tail(1), ["no newline"])


class RotationTests(SynchronousTestCase):
    def test_size_rotation_keeps_count(self):
        clock = Clock()
        path = os.path.join(scratch(self), "a.log")
        f = RotatingFile(path, maxBytes=100, backups=2, rotateSeconds=None, now=clock.seconds)
        for i in range(10):
            f.write(b"%02d" % i + b"x" * 48)
        f.close()
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["a.log", "a.log.1", "a.log.2"])
        with open(path, "rb") as fh:
            self.assertTrue(fh.read().startswith(b"08"))
        with open(path + ".2", "rb") as fh:
            self.assertTrue(fh.read().startswith(b"04"))

    def test_truncate_empties_and_size_counts_from_zero(self):
        """A cleared log (clearProcessLogs) is empty, appends start it again, and the size
        rotation counts from the truncation, not from what the file held before."""
        clock = Clock()
        path = os.path.join(scratch(self), "a.log")
        f = RotatingFile(path, maxBytes=100, backups=2, rotateSeconds=None, now=clock.seconds)
        f.write(b"x" * 90)
        f.truncate()
        f.write(b"y" * 60)
        f.flush()
        self.assertEqual(os.listdir(os.path.dirname(path)), ["a.log"])  # no rotation: 60 < 100
        with open(path, "rb") as fh:
            self.assertEqual(fh.read(), b"y" * 60)
        f.close()
        f.truncate()  # closed: the file on disk is emptied
        self.assertEqual(os.path.getsize(path), 0)

    def test_time_rotation(self):
        clock = Clock()
        path = os.path.join(scratch(self), "a.log")
        f = RotatingFile(path, maxBytes=0, backups=3, rotateSeconds=3600, now=clock.seconds)
        f.write(b"first\n")
        clock.advance(3599)
        f.write(b"same hour\n")
        clock.advance(1)
        f.write(b"next hour\n")
        f.close()
        with open(path + ".1") as fh:
            self.assertEqual(fh.read(), "first\nsame hour\n")
        with open(path) as fh:
            self.assertEqual(fh.read(), "next hour\n")


class RepeatLimitTests(SynchronousTestCase):
    """A flood of one line reaches the store once plus a count; distinct lines all reach it."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.stored = []
        self.log = InstanceLog("web:0", scratch(self), self.clock.seconds, storeHook=self.stored.append,
                               repeatWindow=60, callLater=self.clock.callLater)

    def texts(self):
        return [line.text for line in self.stored]

    def test_flood_stored_once_with_a_count(self):
        """10,000 identical lines between two others: three rows, then one summary when the
        window ends; the file still has every line."""
        self.log.received("stdout", b"first\n" + b"Traceback: connection reset\n" * 10000 + b"last\n")
        self.assertEqual(self.texts(), ["first", "Traceback: connection reset", "last"])
        self.clock.advance(60)
        self.assertEqual(self.texts()[3:], ["Traceback: connection reset [repeated 9999 more times in 60s]"])
        self.assertEqual(self.log.repeats.suppressed, 9999)
        with open(self.log.paths["stdout"]) as f:
            self.assertEqual(sum(1 for _ in f), 10002)

    def test_rows_per_window_are_bounded(self):
        """A multi-line traceback repeated every 2 s for 10 minutes: each of its lines is stored
        once per window plus one summary, not 300 times."""
        trace = b"Traceback (most recent call last):\n  File x, line 1\nConnectionResetError: 104\n"
        for _ in range(300):
            self.log.received("stderr", trace)
            self.clock.advance(2)
        self.assertLessEqual(len(self.stored), 10 * 3 * 2 + 3)
        counted = sum(int(t.split("[repeated ")[1].split()[0]) for t in self.texts() if "[repeated" in t)
        plain = sum(1 for t in self.texts() if "[repeated" not in t)
        self.assertEqual(plain + counted, 900)

    def test_distinct_lines_all_stored(self):
        """Lines that differ are never held back, and levels and streams count as different."""
        self.log.received("stdout", b"".join(b"request %d\n" % i for i in range(5000)))
        self.log.received("stderr", b"request 1\n")
        self.log.received("stdout", b"ERROR request 1\n")
        self.assertEqual(len(self.stored), 5002)

    def test_memory_bounded(self):
        """Only maxKeys lines are tracked and maxBytes of repeated text kept; past that, lines are
        stored as they come rather than dropped."""
        out = []
        limiter = RepeatLimiter(out.append, 60, self.clock.seconds, maxKeys=10, maxBytes=100)
        from salvusctl.supervisor.logs import LogLine

        def line(text):
            return LogLine(0, "w:0", "stdout", "info", text)

        for i in range(20):
            limiter.offer(line(f"k{i}"))
        for i in range(20):
            limiter.offer(line(f"k{i}"))
        self.assertEqual(len(limiter._seen), 10)
        self.assertEqual(len(out), 30)  # 10 tracked repeats counted, 10 untracked stored again
        limiter.offer(line("k0" + "x" * 200))
        limiter.offer(line("k0" + "x" * 200))  # too long to remember: stored
        self.assertEqual(len(out), 32)
        limiter.flush()
        self.assertEqual(len(out), 42)

    def test_window_zero_stores_everything(self):
        log = InstanceLog("web:0", scratch(self), self.clock.seconds, storeHook=self.stored.append,
                          repeatWindow=0)
        log.received("stdout", b"same\n" * 100)
        self.assertEqual(len(self.stored), 100)

    def test_close_flushes_the_count(self):
        self.log.received("stdout", b"same\n" * 3)
        self.log.close()
        self.assertEqual(self.texts(), ["same", "same [repeated 2 more times in 0s]"])


class TailBytesTests(SynchronousTestCase):
    """The tail ring is bounded by bytes, whatever the line length."""

    def test_long_lines_bounded_and_read_back_from_the_file(self):
        clock = Clock()
        log = InstanceLog("web:0", scratch(self), clock.seconds, tailBytes=256 * 1024)
        line = b"y" * 60000 + b"\n"
        log.received("stdout", line * 200)
        self.assertLessEqual(sum(map(len, log.rings["stdout"])), 256 * 1024)
        self.assertLessEqual(len(log.rings["stdout"]), 5)
        got = log.tail(100)
        self.assertEqual(set(got), {"y" * 60000})
        self.assertLessEqual(len(got) * 60000, 256 * 1024 + 60000)
        self.assertGreaterEqual(len(got), len(log.rings["stdout"]))

    def test_short_lines_keep_the_line_count(self):
        log = InstanceLog("web:0", scratch(self), Clock().seconds)
        log.received("stdout", b"".join(b"line %d\n" % i for i in range(3000)))
        self.assertEqual(len(log.rings["stdout"]), 1000)
        self.assertEqual(log.tail(2), ["line 2998", "line 2999"])


class TailRingTests(SynchronousTestCase):
    """The ring keeps chunks, not lines: bounds, and what it serves, seen from outside."""

    def test_line_bound_served_from_the_newest(self):
        from salvusctl.supervisor.logs import TailRing

        ring = TailRing(maxLines=5, maxBytes=10**6)
        data = b"".join(b"%d\n" % i for i in range(8))
        ring.add(b"junk" + data, 4, 4 + len(data))
        self.assertEqual(list(ring), ["3", "4", "5", "6", "7"])
        self.assertEqual(len(ring), 5)
        self.assertTrue(ring.evicted)
        self.assertEqual(ring.last(2), ["6", "7"])
        self.assertEqual(ring.last(100), ["3", "4", "5", "6", "7"])

    def test_byte_bound_keeps_whole_entries_and_the_newest_line(self):
        from salvusctl.supervisor.logs import TailRing

        ring = TailRing(maxLines=10**6, maxBytes=4096)
        for i in range(10):
            ring.add(b"%d" % i + b"a" * 998 + b"\n", 0, 1000)
        self.assertLessEqual(ring.heldBytes(), 4096)
        self.assertEqual([t[0] for t in ring], ["7", "8", "9"])
        ring.add(b"c\n" + b"b" * 9999 + b"\n", 0, 10002)  # a line over the bound: it alone is kept
        self.assertEqual(ring.last(5), ["b" * 9999])
        ring.clear()
        self.assertFalse(ring.evicted)
        self.assertEqual(ring.last(5), [])

    def test_an_entry_using_little_of_its_object_keeps_a_copy(self):
        """A read whose complete lines are a few bytes of it does not keep the whole read alive."""
        from salvusctl.supervisor.logs import TailRing

        ring = TailRing(maxLines=100, maxBytes=10**6)
        big = b"ok\n" + b"x" * 100000
        ring.add(big, 0, 3)
        self.assertLess(ring.heldBytes(), 1000)
        self.assertEqual(list(ring), ["ok"])


class BatchPathTests(SynchronousTestCase):
    """A chunk's lines are handled at once (one decode, one level scan, one write); what comes out
    is what the line-by-line path gives, whatever the chunking."""

    def test_same_lines_levels_and_file_as_line_by_line(self):
        self._compare([b"plain line", b"2026 [error] boom", b"WARNING: disk", b"x" * 300 + b" ERROR late",
                       b"crlf line\r", b"\xff\xfe garbage \xc3", b"", b"stra\xc3\x9fe INFO upper grows",
                       b"y" * 5000, b"debug: quiet", b"CRIT at the end"])

    def test_chunks_without_level_words(self):
        """Mostly level-free chunks (ruled out without a scan of their text), letters of level
        words apart or in other words (kept by the pre-check, refused by the scan), a dotless i
        that upper-cases to INFO (a KeyError once), a dotted capital I that names no level, CRs,
        over-long lines and held line starts: the same output."""
        self._compare([b"%099d" % i for i in range(40)]
                      + [b"e1r2r3 no word", b"terror is a word", b"FaTaLiTy",
                         b"\xc4\xb1nfo dotless", b"\xc4\xb0NFO dotted",
                         b"stra\xc3\x9fe \xc4\xb1nfo", b"stra\xc3\x9fe \xc4\xb0NFO",
                         b"cr line\r", b"z" * 5000, b"0" * 10, b"", b"w-a-r-n", b"info tail"], seed=11)

    def test_level_word_edges(self):
        """The substring search finds what the regex found: a word at the start or the end of a
        line or of the chunk, any case, never inside a longer word (INFORMATION, ERRORS, _INFO),
        WARN/WARNING, ERR/ERROR and CRIT/CRITICAL told apart, the leftmost word of a line
        deciding, and only when it ends within the first 80 characters."""
        from salvusctl.supervisor.logs import detectLevels

        text = "\n".join(["INFO at start", "at the end ERROR", "mixed WaRnInG case", "INFORMATION only",
                          "ERRORS and _INFO and INFO_ and xDEBUG", "Err: short", "CRITICALITY crit",
                          "warnings WARN", "debug then error", "x" * 76 + " ERR", "x" * 77 + " ERR",
                          "x" * 75 + " ERROR then INFO", "", "[fatal] panic", "notice"])
        lines = text.split("\n")
        starts = [sum(len(t) + 1 for t in lines[:i]) for i in range(len(lines))]
        expect = {0: "info", 1: "error", 2: "warning", 5: "error", 6: "critical", 7: "warning",
                  8: "debug", 9: "error", 13: "critical", 14: "info"}
        self.assertEqual(detectLevels(text, "info"), {starts[i]: lv for i, lv in expect.items()})
        self.assertIsNone(detectLevels("INFORMATION\nERRORS\nWARNINGS", "info"))
        # Long lines (only their first 81 characters are searched): the same levels, and a word
        # cut at the 81st character (ERRX, ERROR) is none.
        long = [t + " " + "y" * 600 for t in lines] + ["x" * 77 + " ERRX INFO", "x" * 78 + " ERROR"]
        text = "\n".join(long)
        starts = [sum(len(t) + 1 for t in long[:i]) for i in range(len(long))]
        self.assertEqual(detectLevels(text, "info"), {starts[i]: lv for i, lv in expect.items()})
        self.assertIsNone(detectLevels("y" * 900 + " ERROR\n" + "z" * 80 + "INFO", "info"))

    def test_level_filters_by_file_level_without_records(self):
        """No follower nor store: the levels still decide what a file above debug keeps."""
        self._compare([b"plain", b"2026 [error] boom", b"debug: quiet", b"WARNING x", b"INFORMATION"],
                      follow=False, fileLevel="warning")

    def test_long_lines_and_file_level(self):
        """Lines of 4 KiB (their heads searched), a debug word deciding what a file at info keeps."""
        self._compare([b"y" * 4000, b"INFO " + b"y" * 4000, b"debug " + b"z" * 3000, b"x" * 79 + b"ERROR",
                       b"ok DEBUG", b"WARN then DEBUG " + b"y" * 500], seed=5)
        self._compare([b"y" * 4000, b"INFO " + b"y" * 4000, b"debug " + b"z" * 3000, b"ok DEBUG",
                       b"WARN then DEBUG " + b"y" * 500, b"plain"], seed=5, follow=False, fileLevel="info")

    def test_chunks_as_they_came(self):
        """Nobody takes records and the file keeps every level: lines go to the file and the
        tail ring as the pipe gave them, never decoded, yet the ring serves the same texts and
        the file the same bytes as line by line, CRs, over-long lines and held starts included."""
        pieces = [b"%099d" % i for i in range(40)] + [b"ERROR x", b"cr line\r", b"z" * 5000, b"",
                                                      b"\xff\xfe raw", b"y" * 300]
        self._compare(pieces, seed=3, follow=False)
        self._compare([b"y" * 4000, b"x" * 600, b"INFO " + b"w" * 3000], seed=4, follow=False)

    def test_chunks_at_a_file_level_with_words_below_it(self):
        """A file at info, 4 KiB lines whose heads hold no debug word: written whole; one that
        does sends its chunk to the level scan, which leaves that line out of the file."""
        self._compare([b"2026 INFO " + b"y" * 4000, b"plain " + b"x" * 4000],
                      seed=9, follow=False, fileLevel="info")
        self._compare([b"2026 INFO " + b"y" * 4000, b"DEBUG " + b"x" * 4000, b"z" * 90],
                      seed=9, follow=False, fileLevel="info")

    def test_mayHaveLevel(self):
        from salvusctl.supervisor.logs import mayHaveLevel

        self.assertFalse(mayHaveLevel(b"0123 456\n789 -- ok\n"))
        self.assertTrue(mayHaveLevel(b"12 [Error] x"))
        self.assertTrue(mayHaveLevel(b"e1r2r"))  # a false alarm is allowed: the scan decides
        self.assertTrue(mayHaveLevel("\u0131nfo".encode()))  # non-ASCII: never ruled out

    def _compare(self, pieces, seed=7, follow=True, **kw):
        import random

        rng = random.Random(seed)
        stream = b"".join(rng.choice(pieces) + b"\n" for _ in range(3000)) + b"unfinished"
        clock = Clock()
        batch = InstanceLog("w:0", scratch(self), clock.seconds, maxLine=4096, ringSize=10**6,
                            tailBytes=10**9, **kw)
        single = InstanceLog("w:0", scratch(self), clock.seconds, maxLine=4096, ringSize=10**6,
                             tailBytes=10**9, **kw)
        for splitter in single._default.splitters.values():
            splitter.deliverMany = None  # the line-by-line path
        got: dict[str, list] = {"batch": [], "single": []}
        if follow:  # records someone takes: the levels are detected and must agree
            batch.follow(lambda line: got["batch"].append((line.level, line.text)))
            single.follow(lambda line: got["single"].append((line.level, line.text)))
        pos = 0
        while pos < len(stream):
            n = rng.randint(1, 9000)
            batch.received("stdout", stream[pos:pos + n])
            single.received("stdout", stream[pos:pos + n])
            pos += n
            clock.advance(0.37)
        batch.ended()
        single.ended()
        self.assertEqual(list(batch.rings["stdout"]), list(single.rings["stdout"]))
        self.assertEqual(len(batch.rings["stdout"]), 3001)
        self.assertEqual(got["batch"], got["single"])
        if follow:
            self.assertEqual(len(got["batch"]), 3001)
        with open(batch.paths["stdout"], "rb") as a, open(single.paths["stdout"], "rb") as b:
            self.assertEqual(a.read(), b.read())

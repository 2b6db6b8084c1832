"""LogStream: a follower's response takes pushed lines, and a slow client costs no memory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.logstream import LogStream
from salvusctl.supervisor.logs import LogLine


class _Request:
    """What LogStream uses of a twisted.web request."""

    def __init__(self):
        self.written: list[bytes] = []
        self.producer = None
        self.channel = object()
        self.finished: defer.Deferred = defer.Deferred()

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def notifyFinish(self):
        return self.finished


class LogStreamTests(SynchronousTestCase):
    def setUp(self):
        self.request = _Request()
        self.push = []
        self.cancelled = []

        def follow(callback):
            self.push.append(callback)
            return lambda: self.cancelled.append(True)

        self.stream = LogStream(self.request, b"last bytes\n", follow)

    def line(self, text):
        return LogLine(1_700_000_000.5, "w:0", "stdout", "info", text)

    def test_firstThenPushedLinesAsTheFileShowsThem(self):
        self.push[0](self.line("hello"))
        self.assertEqual(self.request.written[0], b"last bytes\n")
        self.assertEqual(self.request.written[1], b"2023-11-14T22:13:20.500000Z INFO hello\n")

    def test_slowClientSkipsLinesAndIsToldHowMany(self):
        """While the transport's buffer is full (pauseProducing), lines are counted, not queued;
        when it drains, one marker says how many were skipped."""
        self.stream.pauseProducing()
        for i in range(10000):
            self.push[0](self.line(f"line {i}"))
        self.assertEqual(len(self.request.written), 1)
        self.stream.resumeProducing()
        self.assertEqual(self.request.written[-1], b"[10000 lines skipped: the client read too slowly]\n")
        self.push[0](self.line("after"))
        self.assertTrue(self.request.written[-1].endswith(b"INFO after\n"))

    def test_clientGoneStopsFollowing(self):
        self.request.finished.callback(None)
        self.assertEqual(self.cancelled, [True])
        self.assertEqual(self.successResultOf(self.stream.done), b"")
        self.assertIsNone(self.request.producer)
        self.push[0](self.line("late"))
        self.assertEqual(len(self.request.written), 1)


class GatheredWritesTests(SynchronousTestCase):
    """With a clock, the lines of each 0.1 s go out as one write (one socket send per follower),
    in order, and nothing is held once the client pauses or goes."""

    def setUp(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.request = _Request()
        self.push = []
        self.stream = LogStream(self.request, b"first\n", lambda cb: self.push.append(cb) or (lambda: None),
                                self.clock)

    def line(self, text):
        return LogLine(1_700_000_000.5, "w:0", "stdout", "info", text)

    def test_linesOfOneIntervalAreOneWrite(self):
        for i in range(100):
            self.push[0](self.line(f"n{i}"))
        self.assertEqual(self.request.written, [b"first\n"])
        self.clock.advance(0.1)
        self.assertEqual(len(self.request.written), 2)
        self.assertEqual(self.request.written[1],
                         b"".join(b"2023-11-14T22:13:20.500000Z INFO n%d\n" % i for i in range(100)))
        self.push[0](self.line("later"))
        self.clock.advance(0.1)
        self.assertEqual(self.request.written[2], b"2023-11-14T22:13:20.500000Z INFO later\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pauseCountsGatheredLinesAsSkipped(self):
        for i in range(5):
            self.push[0](self.line(f"n{i}"))
        self.stream.pauseProducing()
        self.push[0](self.line("while paused"))
        self.clock.advance(0.1)
        self.assertEqual(self.request.written, [b"first\n"])
        self.stream.resumeProducing()
        self.assertEqual(self.request.written[-1], b"[6 lines skipped: the client read too slowly]\n")

    def test_clientGoneCancelsTheTimer(self):
        self.push[0](self.line("x"))
        self.request.finished.callback(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.request.written, [b"first\n"])


class FormatOnceTests(SynchronousTestCase):
    def test_oneLinePushedToManyFollowersIsFormattedOnce(self):
        """Twenty followers of one log: each pushed line is formatted once, not twenty times."""

        class Counted:
            calls = 0

            def format(self):
                Counted.calls += 1
                return "a line\n"

        requests = [_Request() for _ in range(20)]
        pushes = []
        for request in requests:
            LogStream(request, b"", lambda cb: pushes.append(cb) or (lambda: None))
        line = Counted()
        for push in pushes:
            push(line)
        self.assertEqual(Counted.calls, 1)
        self.assertEqual({r.written[-1] for r in requests}, {b"a line\n"})


class ChunkFollowersTests(SynchronousTestCase):
    """Followers of a real L{InstanceLog}: a chunk of lines reaches each L{LogStream} in one
    call, formatted once for all of them, with the same bytes a line-at-a-time follower gets."""

    def setUp(self):
        from twisted.internet.task import Clock

        from salvusctl.supervisor.logs import InstanceLog
        from tests.supervisor import scratch

        directory = scratch(self)
        self.clock = Clock()
        self.clock.advance(1_700_000_000.5)
        self.log = InstanceLog("w", directory, self.clock.seconds)

    def test_chunkIsOneCallPerFollowerAndTheSameBytes(self):
        calls = []
        requests = [_Request() for _ in range(20)]
        streams = [LogStream(r, b"", self.log.follow) for r in requests]
        for stream in streams:
            original = stream.lines
            stream.lines = lambda lines, _o=original: calls.append(len(lines)) or _o(lines)
        perLine = []
        self.log.follow(perLine.append)
        self.log.received("stdout", b"".join(b"line %d\n" % i for i in range(50)))
        self.assertEqual(calls, [50] * 20)
        expected = b"".join(line.format().encode() for line in perLine)
        self.assertEqual(len(perLine), 50)
        self.assertEqual({r.written[-1] for r in requests}, {expected})
        # Formatted once: every follower was handed the very same bytes object.
        self.assertEqual(len({id(r.written[-1]) for r in requests}), 1)

    def test_pausedFollowerCountsAChunksLines(self):
        request = _Request()
        stream = LogStream(request, b"", self.log.follow, self.clock)
        self.log.received("stdout", b"a\nb\nc\n")
        stream.pauseProducing()
        self.log.received("stdout", b"d\ne\n")
        self.clock.advance(0.1)
        stream.resumeProducing()
        self.assertEqual(request.written, [b"[5 lines skipped: the client read too slowly]\n"])

    def test_rawFollowersShareTheBytesAsWritten(self):
        """C{tail -f} followers (L{RawLogStream}) get the program's bytes, exactly as the log file
        holds them, one shared object per chunk, and no line record is made for them."""
        from salvusctl.admin.logstream import RawLogStream

        made = []
        original = self.log._lines
        self.log._lines = lambda *a, **kw: made.append(1) or original(*a, **kw)
        requests = [_Request() for _ in range(20)]
        for request in requests:
            RawLogStream(request, b"", self.log.follow)
        data = b"".join(b"line %d \xff\n" % i for i in range(50))
        self.log.received("stdout", data)
        self.assertEqual(made, [])
        self.assertEqual({r.written[-1] for r in requests}, {data})
        self.assertEqual(len({id(r.written[-1]) for r in requests}), 1)
        with open(self.log.paths["stdout"], "rb") as f:
            self.assertEqual(f.read(), data)

    def test_rawFollowerOfAFakeThatPushesLines(self):
        """A supervisor that pushes L{LogLine}s one at a time: each line's text, no time or level."""
        from salvusctl.admin.logstream import RawLogStream

        request = _Request()
        pushed = []
        RawLogStream(request, b"", lambda cb: pushed.append(cb) or (lambda: None))
        pushed[0](LogLine(1_700_000_000.5, "w", "stdout", "warn", "careful"))
        self.assertEqual(request.written, [b"careful\n"])

    def test_pausedRawFollowerCountsLines(self):
        from salvusctl.admin.logstream import RawLogStream

        request = _Request()
        stream = RawLogStream(request, b"", self.log.follow, self.clock)
        self.log.received("stdout", b"a\nb\nc\n")
        stream.pauseProducing()
        self.log.received("stdout", b"d\ne\n")
        self.clock.advance(0.1)
        stream.resumeProducing()
        self.assertEqual(request.written, [b"[5 lines skipped: the client read too slowly]\n"])

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

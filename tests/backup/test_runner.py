"""The process runner: real children, never blocking the reactor."""

from __future__ import annotations

import hashlib
import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.backup.runner import ProcessFailed, checkResult, runProcess

from .helpers import tempPath


class RunnerTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_exitStatusAndStderrTail(self):
        """A non-zero exit is a result (not an error) until checkResult says so, naming the
        program, the status and the last stderr lines."""
        result = yield runProcess(reactor, ["sh", "-c", "echo out; echo bad thing >&2; exit 3"]).finished
        self.assertEqual((result.exitCode, result.signal, result.stdout), (3, None, b"out\n"))
        with self.assertRaises(ProcessFailed) as cm:
            checkResult(result)
        self.assertEqual(str(cm.exception), "sh failed (exit 3); bad thing")

    @inlineCallbacks
    def test_stdoutToFileIsHashedOnTheWay(self):
        """A dump streamed to a file gets its sha256 and size without a second read."""
        path = tempPath(self, "out.bin")
        result = yield runProcess(reactor, ["sh", "-c", "head -c 100000 /dev/zero"], stdoutPath=path).finished
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual((result.size, len(data)), (100000, 100000))
        self.assertEqual(result.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(result.stdout, b"")

    @inlineCallbacks
    def test_killReportsTheSignal(self):
        handle = runProcess(reactor, ["sleep", "30"])
        self.assertIsNotNone(handle.pid)
        handle.kill(signal.SIGKILL)
        result = yield handle.finished
        self.assertEqual((result.exitCode, result.signal), (None, signal.SIGKILL))
        self.assertIn("signal 9", result.describe())
        handle.kill()  # after exit: a no-op

    @inlineCallbacks
    def test_missingProgramFailsClearly(self):
        failure = yield self.assertFailure(runProcess(reactor, ["no-such-program-xyz"]).finished,
                                           FileNotFoundError)
        self.assertIn("no-such-program-xyz", str(failure))

    @inlineCallbacks
    def test_environmentAndDirectory(self):
        """Passwords travel in the environment; the child runs where it is told."""
        where = tempPath(self, "cwd")
        os.makedirs(where)
        result = yield runProcess(reactor, ["sh", "-c", 'echo "$PGPASSWORD"; pwd'], env={"PGPASSWORD": "s3"},
                                  path=where).finished
        self.assertEqual(result.stdout.decode().split(), ["s3", os.path.realpath(where)])

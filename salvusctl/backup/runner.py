"""Run one external program (rsync, pg_dump, mysql …) without blocking the reactor.

Every program the backup service uses goes through L{runProcess}: C{reactor.spawnProcess} with a
small C{ProcessProtocol} that streams the child's stdout into a file or a callback, keeps the tail
of stderr for the error message, and fires a Deferred with a L{ProcessResult}.  The running
L{ProcessHandle} lets the caller kill the child (a stopped service, a test that interrupts a run).
"""

from __future__ import annotations

import hashlib
import os
import signal as signalmodule
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet import error, protocol
from twisted.internet.defer import Deferred

__all__ = ["ProcessResult", "ProcessFailed", "ProcessHandle", "runProcess", "checkResult"]

_STDERR_TAIL = 16384


@dataclass
class ProcessResult:
    """What a finished child left behind.

    @ivar exitCode: the exit status, or None when a signal ended it.
    @ivar signal: the signal number that ended it, or None.
    @ivar stdout: captured stdout (empty when it went to a file or a callback).
    @ivar stderr: the last bytes of stderr (bounded), for the run log.
    @ivar sha256: hex digest of stdout when it was written to a file.
    @ivar size: bytes of stdout seen.
    """

    argv: list[str]
    exitCode: int | None
    signal: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    sha256: str | None = None
    size: int = 0

    @property
    def ok(self) -> bool:
        return self.exitCode == 0 and self.signal is None

    def describe(self) -> str:
        """One line naming the program and how it ended."""
        how = f"signal {self.signal}" if self.signal is not None else f"exit {self.exitCode}"
        tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        detail = ("; " + " | ".join(tail)) if tail else ""
        return f"{os.path.basename(self.argv[0])} failed ({how}){detail}"


class ProcessFailed(Exception):
    """A child exited non-zero or was killed; carries its L{ProcessResult}."""

    def __init__(self, result: ProcessResult):
        super().__init__(result.describe())
        self.result = result


def checkResult(result: ProcessResult) -> ProcessResult:
    """Callback that turns an unsuccessful result into a L{ProcessFailed} failure."""
    if not result.ok:
        raise ProcessFailed(result)
    return result


@dataclass
class ProcessHandle:
    """A running child: its pid, a way to signal it, and the Deferred of its result."""

    argv: list[str]
    finished: Deferred
    transport: object = None
    done: bool = False
    killed: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return getattr(self.transport, "pid", None)

    def kill(self, sig: int = signalmodule.SIGTERM) -> None:
        """Send C{sig} to the child if it still runs (a no-op once it has exited)."""
        if self.done or self.transport is None:
            return
        try:
            self.transport.signalProcess(sig)
            self.killed.append(sig)
        except error.ProcessExitedAlready:
            pass


class _Protocol(protocol.ProcessProtocol):
    def __init__(self, handle, stdoutPath, onStdout, onStderr, captureStdout):
        self.handle = handle
        self.onStdout = onStdout
        self.onStderr = onStderr
        self.captureStdout = captureStdout
        self.out: list[bytes] = []
        self.err = bytearray()
        self.size = 0
        self.digest = hashlib.sha256() if stdoutPath else None
        self.file = open(stdoutPath, "wb") if stdoutPath else None

    def outReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            self.digest.update(data)
        if self.onStdout is not None:
            self.onStdout(data)
        if self.captureStdout:
            self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.extend(data)
        if len(self.err) > _STDERR_TAIL:
            del self.err[: len(self.err) - _STDERR_TAIL]
        if self.onStderr is not None:
            self.onStderr(data)

    def processEnded(self, reason) -> None:
        if self.file is not None:
            self.file.close()
        value = reason.value
        code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        if isinstance(value, error.ProcessDone):
            code, sig = 0, None
        self.handle.done = True
        result = ProcessResult(
            argv=self.handle.argv,
            exitCode=code,
            signal=sig,
            stdout=b"".join(self.out),
            stderr=bytes(self.err),
            sha256=self.digest.hexdigest() if self.digest is not None else None,
            size=self.size,
        )
        self.handle.finished.callback(result)


def runProcess(
    reactor,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    path: str | None = None,
    stdoutPath: str | None = None,
    onStdout: Callable[[bytes], None] | None = None,
    onStderr: Callable[[bytes], None] | None = None,
    captureStdout: bool = True,
) -> ProcessHandle:
    """Start C{argv} and return its L{ProcessHandle}; C{handle.finished} fires with the result.

    The result fires even on a non-zero exit (use L{checkResult} to turn that into a failure),
    so callers decide what a failure means.  C{stdoutPath} streams stdout to a file and hashes
    it on the way (a dump is written and checksummed in one pass).  Stdin is closed at once.
    """
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    full_env.setdefault("LC_ALL", "C")
    if env:
        full_env.update(env)
    handle = ProcessHandle(argv=argv, finished=Deferred())
    proto = None
    try:
        executable = argv[0]
        if os.sep not in executable:
            executable = _which(executable, full_env.get("PATH", os.defpath))
        proto = _Protocol(handle, stdoutPath, onStdout, onStderr, captureStdout and stdoutPath is None)
        handle.transport = reactor.spawnProcess(
            proto, executable, argv, env=full_env, path=path, childFDs={0: "w", 1: "r", 2: "r"}
        )
    except Exception as e:
        if proto is not None and proto.file is not None:
            proto.file.close()
        handle.done = True
        handle.finished.errback(e)
        return handle
    handle.transport.closeStdin()
    return handle


def _which(name: str, search: str) -> str:
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"program {name!r} not found on PATH")

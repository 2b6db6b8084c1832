"""Reading a host's config file in a child process: what C{salvus.diff} and C{reread} compare with.

A C{.tac} file is Python: reading it runs whatever it says.  The host runs for months and answers
viewers too, so a read-only question must not run that code inside it.  L{ConfigReader} spawns
L{salvusctl.host.loading.main} (C{python -m salvusctl.host.loading FILE}) through the injected reactor, in
the host's directory and environment, and waits for the model it writes, with:

  - a time limit: a config that hangs is killed (its whole process group) and the answer is one
    clear L{ConfigError};
  - bounded output: the model may be at most C{maxOutput} bytes, stderr is kept only to its last
    lines, and what the config prints on stdout is read and dropped;
  - one child at a time: callers that ask while a read runs share its answer;
  - a cache keyed by the size, mtime and inode of the file and of every source file it imported,
    so asking again about an unchanged config spawns nothing.  A viewer cannot make the host fork
    more often than the file changes.

A config that fails to load answers the child's one line C{FILE:LINE: message}, as an in-process
load does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from salvusctl.errors import ConfigError
from salvusctl.host.model import DeclaredHost

__all__ = ["ConfigReader", "DEFAULT_TIMEOUT", "DEFAULT_MAX_OUTPUT"]

log = Logger()

DEFAULT_TIMEOUT = 15.0
DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024
_STDERR_KEEP = 8192
RESULT_FD = 3


class _ReaderProtocol(ProcessProtocol):
    """Collects the model from fd 3, the tail of stderr; fires C{done} with (status, result, err)."""

    def __init__(self, maxOutput: int):
        self.maxOutput = maxOutput
        self.result = b""
        self.stderr = b""
        self.overflow = False
        self.done: defer.Deferred = defer.Deferred()
        self._pid: int | None = None

    def connectionMade(self) -> None:
        self._pid = getattr(self.transport, "pid", None)  # the transport forgets it once reaped
        self.transport.closeStdin()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == RESULT_FD:
            if len(self.result) + len(data) > self.maxOutput:
                self.overflow = True
                self.result = b""
                self.kill()
                return
            if not self.overflow:
                self.result += data
        elif fd == 2:
            self.stderr = (self.stderr + data)[-_STDERR_KEEP:]
        # fd 1: whatever the config prints; read so the child never blocks on it, then dropped

    def _killGroup(self) -> None:
        if self._pid:
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self) -> None:
        """Kill the child and anything it started (it made itself a process group leader), and
        close our ends of its pipes: a process that left the group cannot keep the read open."""
        self._killGroup()
        try:
            self.transport.signalProcess("KILL")
        except (error.ProcessExitedAlready, OSError, AttributeError):
            pass
        try:
            self.transport.loseConnection()
        except (OSError, AttributeError):
            pass

    def processExited(self, reason: Failure) -> None:
        # What the config started and left behind in the child's group goes with it: it would
        # hold the child's pipes open, and outlive the read.
        self._killGroup()

    def processEnded(self, reason: Failure) -> None:
        status = getattr(reason.value, "exitCode", None)
        if status is None:
            status = -(getattr(reason.value, "signal", None) or 0)
        self.done.callback(status)


class ConfigReader:
    """Reads one config file out of process, with a time limit, bounded output and a cache.

    @param reactor: an C{IReactorProcess} and C{IReactorTime} (the host's injected reactor).
    @param path: the config file.
    @param store: the C{--store} override the host was started with, applied to the model too.
    @param timeout: seconds the child may take before it is killed.
    @param maxOutput: the largest model accepted, in bytes.
    @param python: the interpreter to run (the host's own by default).
    """

    def __init__(self, reactor: Any, path: str, store: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, maxOutput: int = DEFAULT_MAX_OUTPUT,
                 python: str = sys.executable):
        self.reactor = reactor
        self.path = os.path.abspath(path)
        self.store = store
        self.timeout = timeout
        self.maxOutput = maxOutput
        self.python = python
        self.spawned = 0
        self.last: DeclaredHost | None = None
        self._cache: tuple[Any, DeclaredHost | Failure] | None = None
        self._sources: list[str] = [self.path]
        self._waiters: list[defer.Deferred] | None = None

    # -- the cache -------------------------------------------------------------------------------

    def _key(self) -> tuple | None:
        """What the last answer depends on: each source file's identity, size and mtime."""
        key = []
        for path in self._sources:
            try:
                st = os.stat(path)
            except OSError:
                key.append((path, None))
                continue
            key.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(key)

    def read(self, fresh: bool = False) -> defer.Deferred:
        """Fires with the file's L{DeclaredHost}, or fails with L{ConfigError}.

        @param fresh: read again even if the cached answer still matches the files (an operator
            about to apply the config wants it read now; a read-only diff does not).
        """
        if not fresh and self._cache is not None and self._cache[0] == self._key():
            answer = self._cache[1]
            return defer.fail(answer) if isinstance(answer, Failure) else defer.succeed(answer)
        waiter: defer.Deferred = defer.Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        key = self._key()
        d = self._spawn()

        def finish(answer):
            if isinstance(answer, DeclaredHost):
                self.last = answer
                self._sources = [self.path] + [p for p in answer.sources if p != self.path]
                key_now = self._key()
            else:
                key_now = key
            self._cache = (key_now, answer)
            waiters, self._waiters = self._waiters or [], None
            for w in waiters:
                if isinstance(answer, Failure):
                    w.errback(answer)
                else:
                    w.callback(answer)

        d.addBoth(finish)
        return waiter

    def forget(self) -> None:
        """Drop the cached answer (the next read spawns)."""
        self._cache = None

    # -- the child -------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """C{python -m salvusctl.host.loading FILE [--store URL]}, with this very salvusctl first on
        the child's path.  The environment is left as the host's own (a config may read it)."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        boot = (f"import sys; sys.path.insert(0, {root!r}); "
                "from salvusctl.host.loading import main; sys.exit(main())")
        argv = [self.python, "-c", boot, self.path]
        if self.store:
            argv += ["--store", self.store]
        return argv

    def _spawn(self) -> defer.Deferred:
        argv = self.argv()
        protocol = _ReaderProtocol(self.maxOutput)
        try:
            self.reactor.spawnProcess(protocol, self.python, argv, env=dict(os.environ), path=os.getcwd(),
                                      childFDs={0: "w", 1: "r", 2: "r", RESULT_FD: "r"})
        except Exception as e:
            return defer.fail(ConfigError(f"cannot start the config reader: {e}", self.path))
        self.spawned += 1
        timedOut = []

        def expire():
            timedOut.append(True)
            log.warn("config reader for {path} took more than {t} s: killed", path=self.path, t=self.timeout)
            protocol.kill()

        call = self.reactor.callLater(self.timeout, expire)

        def ended(status):
            if call.active():
                call.cancel()
            if timedOut:
                raise ConfigError(f"reading the config took more than {self.timeout:g} s "
                                  "(does it wait for something?); the reader was killed", self.path)
            if protocol.overflow:
                raise ConfigError(f"the config's model is larger than {self.maxOutput} bytes", self.path)
            return self._parse(status, protocol)

        return protocol.done.addCallback(ended)

    def _parse(self, status: int, protocol: _ReaderProtocol) -> DeclaredHost:
        try:
            answer = json.loads(protocol.result.decode("utf-8")) if protocol.result else None
        except (UnicodeDecodeError, ValueError):
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            raise ConfigError(answer["error"].splitlines()[0] if answer["error"] else "unreadable config")
        if isinstance(answer, dict) and "model" in answer:
            try:
                return DeclaredHost(answer["model"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"the config reader answered a bad model: {e}", self.path)
        lines = protocol.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else "no answer"
        raise ConfigError(f"the config reader failed (exit status {status}): {why}", self.path)

"""The supervisor's own log, supervisord's "main log": what it did to each instance and why.

Spawns (with the pid), spawn errors, a start that succeeded (and on what evidence), exits (with
the status and whether it was expected), stops, signals sent, SIGKILL escalations, FATAL and its
reason.  Each event is one line, in three places at once: the log file C{log_dir/supervisor.log}
(what C{supervisor.readLog} and C{supervisorctl maintail} read), the host's own log, and the
store hook (the event under the instance's name, stream C{supervisor}), so C{monitor logs web:0}
shows why it restarted next to what it printed.
"""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel

from salvusctl.supervisor.logs import LogLine, RotatingFile
from salvusctl.supervisor.states import ProcessState as S

__all__ = ["MainLog", "stateEvent", "MAIN_LOG_NAME"]

MAIN_LOG_NAME = "supervisor.log"

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


def _signame(sig: Any) -> str:
    try:
        return _signal.Signals(int(sig)).name
    except (TypeError, ValueError):
        text = str(sig).upper()
        return text if text.startswith("SIG") else "SIG" + text


def stateEvent(name: str, old: S, new: S, info: dict[str, Any],
               stopsignal: Any = None) -> tuple[str, str] | None:
    """(level, text) of the main log line for one state change, supervisord's wording where it
    has one; None for a change worth no line."""
    pid = info.get("pid") or 0
    if new == S.STARTING:
        return None  # "spawned: ... with pid N" is written once the pid is known
    if new == S.RUNNING:
        return "info", f"success: {name} entered RUNNING state"
    if new == S.BACKOFF:
        why = info.get("spawnerr") or ""
        if not why or why.startswith("Exited too quickly"):
            why = f"exit status {info.get('exitstatus', 0)}"  # supervisord's line for a quick exit
        return "warning", f"exited: {name} ({why}; not expected), BACKOFF"
    if new == S.EXITED:
        return "info", f"exited: {name} (exit status {info.get('exitstatus', 0)}; expected)"
    if new == S.STOPPING:
        sig = f" with {_signame(stopsignal)}" if stopsignal is not None else ""
        return "info", f"waiting for {name} to stop (pid {pid}{sig})"
    if new == S.STOPPED and old in (S.STOPPING, S.RUNNING, S.STARTING):
        return "info", f"stopped: {name} (exit status {info.get('exitstatus', 0)})"
    if new == S.FATAL:
        reason = info.get("reason") or info.get("spawnerr") or "too many start retries too quickly"
        return "error", f"gave up: {name} entered FATAL state, {reason}"
    return None


class MainLog:
    """One line per supervisor event, to the file, the host log, the store hook and followers.

    @param now: the clock (C{reactor.seconds}).
    @param storeHook: called with each event as a L{LogLine} (C{instance} the instance's name,
        C{stream} C{"supervisor"}); an exception it raises is logged, never propagated.
    """

    def __init__(self, logDir: str, now: Callable[[], float],
                 storeHook: Callable[[LogLine], Any] | None = None, maxBytes: int = 50 * 1024 * 1024,
                 backups: int = 10, logger: Logger | None = None):
        self.path = os.path.join(logDir, MAIN_LOG_NAME)
        self.now = now
        self.storeHook = storeHook
        self.file = RotatingFile(self.path, maxBytes, backups, None, now)
        self.followers: list[Callable[[LogLine], Any]] = []
        self.log = logger or Logger(namespace="salvus.supervisor")

    def write(self, level: str, text: str, instance: str = "") -> LogLine:
        line = LogLine(self.now(), instance, "supervisor", level, text)
        try:
            self.file.write(line.format().encode("utf-8", "replace"))
            self.file.flush()
        except OSError as e:
            self.log.error("cannot write the main log {path}: {e}", path=self.path, e=e)
        self.log.emit(_LEVELS.get(level, LogLevel.info), "{text}", text=text)
        hooks = [self.storeHook] if self.storeHook is not None and instance else []
        for hook in hooks + list(self.followers):
            try:
                hook(line)
            except Exception:
                self.log.failure("main log hook {h!r} failed", h=hook)
        return line

    def follow(self, callback: Callable[[LogLine], Any]) -> Callable[[], None]:
        """Call C{callback(LogLine)} for each new event; returns the function that stops."""
        self.followers.append(callback)

        def cancel() -> None:
            if callback in self.followers:
                self.followers.remove(callback)

        return cancel

    def clear(self) -> None:
        """Empty the file (C{supervisor.clearLog}); the next event starts it again."""
        self.file.close()
        with open(self.path, "wb"):
            pass

    def close(self) -> None:
        self.file.close()

"""The stats socket of a balancer process: counters, refusals and the snapshot, as JSON.

The standalone balancer (C{salvus-balancer --stats PATH}) has no admin; an operator or a monitoring
job still needs its counters.  Like HAProxy's stats socket it is a Unix socket that takes one
command line and answers one line, here a JSON document, then closes:

* C{stats} (or an empty line): C{{"pid", "open", "services": {name: counters}}}, the counters of
  each balanced service (C{total}, C{refused}, C{refused_by} per refusal kind, C{queue}, timeouts,
  bytes …).  With C{--workers} the master asks every worker and sums them (C{"workers": N}).
* C{snapshot}: the balancer's snapshot (services, groups, hosts with states and counters; the
  shape the admin's C{balancerSnapshot} returns), of one worker when there are several.

C{python -m salvusctl.balancer.stats PATH [COMMAND]} prints the answer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

__all__ = ["COMMANDS", "statsOf", "sumStats", "StatsFactory", "serveStats", "query", "main"]

COMMANDS = ("stats", "snapshot")

log = Logger()


def statsOf(balancer: Any) -> dict:
    """The C{stats} answer for one balancer service tree (one process)."""
    return {
        "pid": os.getpid(),
        "open": balancer.openConnections(),
        "services": {name: svc.counters() for name, svc in balancer.balanced.items()},
    }


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _add(out[key], value) if key in out else value
        return out
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    return a


def sumStats(parts: list[dict]) -> dict:
    """Several processes' C{stats} summed (counters added, per service and per kind)."""
    total: dict = {"open": 0, "services": {}}
    for part in parts:
        total["open"] += part.get("open", 0)
        total["services"] = _add(total["services"], part.get("services", {}))
    return total


class _StatsProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        command = line.decode("utf-8", "replace").strip() or "stats"
        if command not in COMMANDS:
            self._reply({"error": f"unknown command {command!r}; use one of: {', '.join(COMMANDS)}"})
            return
        d = defer.maybeDeferred(self.factory.answer, command)
        d.addCallbacks(self._reply, self._failed)

    def _failed(self, failure: Any) -> None:
        log.failure("stats socket: answering failed", failure)
        self._reply({"error": failure.getErrorMessage()})

    def _reply(self, data: dict) -> None:
        if self.transport.connected:
            self.transport.write(json.dumps(data, default=str).encode() + b"\n")
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()


class StatsFactory(Factory):
    """Answers stats commands with C{answer(command)} (a dict, or a Deferred of one)."""

    protocol = _StatsProtocol
    noisy = False

    def __init__(self, answer: Callable[[str], Any]) -> None:
        self.answer = answer


def serveStats(reactor: Any, path: str, answer: Callable[[str], Any]) -> Any:
    """Listen on the Unix socket C{path} (a stale socket file is replaced)."""
    if os.path.exists(path):
        os.unlink(path)
    return reactor.listenUNIX(path, StatsFactory(answer), mode=0o600, backlog=16)


def query(path: str, command: str = "stats", timeout: float = 5.0) -> dict:
    """Ask a stats socket (blocking, for scripts and the command line)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) > 2 or args[0] in ("-h", "--help"):
        print("usage: python -m salvusctl.balancer.stats PATH [%s]" % "|".join(COMMANDS), file=sys.stderr)
        return 2
    try:
        answer = query(args[0], args[1] if len(args) > 1 else "stats")
    except OSError as e:
        print("salvus-balancer stats: %s: %s" % (args[0], e.strerror or e), file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 1 if "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())

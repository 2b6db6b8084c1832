"""Pieces every benchmark script needs: a free port to hand a child, waiting until it listens, and
stopping the children at the end.

The benches run as plain scripts (C{python bench/<name>}), drive real child processes and may
block: these helpers are synchronous on purpose.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence

__all__ = ["freePort", "waitPort", "stopAll", "cpuSeconds", "rssMB"]

TICK = os.sysconf("SC_CLK_TCK")


def freePort() -> int:
    """A port on 127.0.0.1 that was free a moment ago (bound, then closed), to tell a child to use."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def waitPort(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts on 127.0.0.1:C{port}; raise after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d after %.0f s" % (port, timeout))


def stopAll(procs: Sequence[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each child in the order given, then wait for each; one still running after
    C{timeout} seconds is killed, so a bench never leaves a server behind."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time of process C{pid} so far, in seconds (from C{/proc})."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rssMB(pid: int) -> float:
    """Resident memory of process C{pid} now, in MiB (NaN once it has gone)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

"""The respawn floor: a bare fork+exec loop, C{python floor.py N ARGV...} (C{%N} in ARGV becomes
the instance number).

It runs N children and, the moment one exits, forks and execs it again: no state machine, no
log, no event loop, a blocking C{wait()}.  What a supervisor adds to crash -> respawn is measured
against this.  SIGTERM kills the children and exits.
"""

from __future__ import annotations

import os
import signal
import sys


def spawn(argv: list[str], index: int) -> int:
    args = [a.replace("%N", str(index)) for a in argv]
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(args[0], args)
        finally:
            os._exit(127)
    return pid


def main() -> None:
    n, argv = int(sys.argv[1]), sys.argv[2:]
    children: dict[int, int] = {}

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for i in range(n):
        children[spawn(argv, i)] = i
    while True:
        pid, _ = os.wait()
        index = children.pop(pid, None)
        if index is not None:
            children[spawn(argv, index)] = index


if __name__ == "__main__":
    main()

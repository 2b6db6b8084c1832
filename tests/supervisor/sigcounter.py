"""A child for the stop-signal tests: counts every TERM (or the signal named in argv[2]) it gets.

The signal is blocked and taken with C{sigtimedwait}, one delivery at a time (a Python-level
handler would merge two deliveries that arrive before it runs).  Each delivery appends one line to
the file argv[1]; after the first the child stays alive C{argv[3]} seconds more (so a second
signal sent by the supervisor still finds it), then exits 0.  A real-time signal ("RT") is queued
by the kernel, never merged with a pending one, so its count is exact.
"""

import os
import signal
import sys
import time

path, signame, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
signum = signal.SIGRTMIN + 1 if signame == "RT" else getattr(signal, "SIG" + signame)
signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
print("ready", flush=True)


def record() -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {signum}\n")


while signal.sigtimedwait({signum}, 60) is None:
    pass
record()
deadline = time.monotonic() + linger
while (left := deadline - time.monotonic()) > 0:
    if signal.sigtimedwait({signum}, left) is not None:
        record()
sys.exit(0)

"""A supervised program that writes one line per signal it receives: C{<pid> <role> <SIGNAME>}.

Usage: python signal_counter.py OUTFILE [LINGER]

The leader forks one child (same process group and session, a "grandchild" of the supervisor);
both count every catchable stop-ish signal and, after the first TERM or INT, linger LINGER
seconds (default 0.3) before exiting, as a program with a graceful shutdown does: long enough for
a second stop signal to arrive and be counted.  Prints C{up <leader> <child>} once both count, and
writes the same line to OUTFILE.up.
"""

import os
import select
import signal
import sys

COUNTED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run(out: str, role: str, linger: float, ready_w: int | None, announce: str = "") -> None:
    deadline = [None]
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def counted(sig, frame):
        os.write(fd, f"{os.getpid()} {role} {signal.Signals(sig).name}\n".encode())
        if sig in (signal.SIGTERM, signal.SIGINT) and deadline[0] is None:
            deadline[0] = linger

    for sig in COUNTED:
        signal.signal(sig, counted)
    if ready_w is not None:
        os.write(ready_w, b"x")
        os.close(ready_w)
    if announce:
        print(announce, flush=True)
        with open(out + ".up", "w") as f:
            f.write(announce + "\n")
    waited = 0.0
    while deadline[0] is None or waited < deadline[0]:
        try:
            select.select([], [], [], 0.05)
        except InterruptedError:
            pass
        if deadline[0] is not None:
            waited += 0.05
    os.close(fd)
    os._exit(0)


def main() -> None:
    out = sys.argv[1]
    linger = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        run(out, "child", linger, w)
    os.close(w)
    os.read(r, 1)  # the child counts from now on
    os.close(r)
    run(out, "leader", linger, None, announce=f"up {os.getpid()} {child}")


if __name__ == "__main__":
    main()

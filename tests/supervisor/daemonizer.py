"""A program that daemonizes itself, the classic way, and exits 0 at once.

Usage: daemonizer.py TOKEN [clean] [stubborn]

The leader forks and exits 0; its child calls setsid, forks the daemon and exits; the daemon
closes stdin/stdout/stderr and becomes a Python that sleeps, with TOKEN on its command line (so a
test can count survivors independently of Salvus).  With C{clean}, the daemon also clears its
environment: no SALVUS_INSTANCE marker, no session, no process group in common with anything
Salvus started, so only a cgroup can still tell whose it is.  With C{stubborn}, the daemon
ignores SIGTERM: only SIGKILL (after C{stopwaitsecs}, or at a stop) ends it.
"""

import os
import signal
import sys

token = sys.argv[1]
clean = "clean" in sys.argv[2:]
stubborn = "stubborn" in sys.argv[2:]
SLEEP = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if stubborn else
         "import time; ") + "time.sleep(120)"
if stubborn:
    # From the start: a stop signal that reaches the middle child must not spare the daemon.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        env = {} if clean else dict(os.environ)
        os.execve(sys.executable, [sys.executable, "-c", SLEEP, token], env)
    os._exit(0)
os._exit(0)

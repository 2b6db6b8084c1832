"""A child for the bulk-verb tests: says each HUP it gets on stdout, and how its TERM ended it.

Both signals are blocked and taken with C{sigwait}, one delivery at a time, so each HUP is one
line (C{hup 1}, C{hup 2}, ...) that the supervisor's own stdout log then holds.  TERM prints
C{term after N hups} and exits 0.
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM})
print("ready", flush=True)
hups = 0
while True:
    if signal.sigwait({signal.SIGHUP, signal.SIGTERM}) == signal.SIGTERM:
        print(f"term after {hups} hups", flush=True)
        raise SystemExit(0)
    hups += 1
    print(f"hup {hups}", flush=True)

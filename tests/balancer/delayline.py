"""A two-way delay line between two TUN devices: C{python -m tests.balancer.delayline A B MS}.

This machine's kernel has no C{sch_netem}, so C{tc netem delay} cannot add a round trip.  This
does the same in user space: every IP packet that leaves through TUN device C{A} comes out of
C{B} C{MS} milliseconds later, and the other way round.  The test moves C{B} into its namespace
and gives each end an address; the kernels at both ends do the rest (a refused connect is a real
RST, a round trip late).

Prints one line once both devices exist; exits when its stdin closes.
"""

from __future__ import annotations

import collections
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def openTun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main(a: str, b: str, ms: str) -> None:
    delay = float(ms) / 1000.0
    fa, fb = openTun(a), openTun(b)
    other = {fa: fb, fb: fa}
    line: collections.deque = collections.deque()  # (due, fd, packet), in due order
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stdin = sys.stdin.fileno()
    while True:
        timeout = None
        if line:
            timeout = max(0.0, line[0][0] - time.monotonic())
        readable, _, _ = select.select([fa, fb, stdin], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                if not os.read(stdin, 4096):
                    return
                continue
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                line.append((now + delay, other[fd], packet))
        while line and line[0][0] <= now:
            _, fd, packet = line.popleft()
            try:
                os.write(fd, packet)
            except OSError:
                pass  # a device not up yet drops the packet, as a wire would


if __name__ == "__main__":
    main(*sys.argv[1:4])

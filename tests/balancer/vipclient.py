"""The client of the floating-address test: C{python -m tests.balancer.vipclient ADDRESS PORT MAX}.

Opens one connection every 10 ms or so to ADDRESS:PORT (at most MAX, and for at most 60 s, or until
stdin closes), sends a line, and prints one line per connection: C{ok NAME SECONDS} with the
front-end's backend that answered, or C{fail WHY SECONDS}.  Each connect and read waits at most
0.5 s, so a connection to an address nobody holds fails in bounded time.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time


def main(address: str, port: str, limit: str) -> None:
    start = time.monotonic()
    for _ in range(int(limit)):
        now = time.monotonic() - start
        if now > 60 or select.select([sys.stdin], [], [], 0.01)[0]:
            break
        try:
            with socket.create_connection((address, int(port)), timeout=0.5) as s:
                s.sendall(b"hello")
                data = s.recv(100)
            if not data:
                raise OSError("closed without an answer")
            line = f"ok {data.split(b':', 1)[0].decode()} {now:.3f}"
        except OSError as e:
            line = f"fail {type(e).__name__} {now:.3f}"
        os.write(1, (line + "\n").encode())


if __name__ == "__main__":
    main(*sys.argv[1:4])

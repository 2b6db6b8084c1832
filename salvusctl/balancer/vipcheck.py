"""keepalived's track script: does the local balancer accept connections?

C{python -m salvusctl.balancer.vipcheck HOST:PORT [HOST:PORT …] [--timeout S]} exits 0 when every
address accepts a TCP connection within the timeout, 1 (with one line on stderr saying which
did not) otherwise.  keepalived runs it every second: when this host's balancer is dead, hung or
no longer listening, the check fails, keepalived leaves MASTER and the floating address moves to
the other front-end.  It is a separate short process on purpose: it must answer even when the
balancer it judges cannot.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

__all__ = ["check", "main"]


def check(addresses: Sequence[tuple[str, int]], timeout: float = 1.0) -> list[str]:
    """The addresses that did not accept a connection, each with why (empty: all good)."""
    failed = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as e:
            failed.append(f"{host}:{port}: {e.strerror or e}")
    return failed


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="salvusctl.balancer.vipcheck", description=__doc__.split("\n")[0])
    p.add_argument("addresses", nargs="+", type=_address, metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=1.0)
    args = p.parse_args(argv)
    failed = check(args.addresses, args.timeout)
    if failed:
        print("balancer check failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

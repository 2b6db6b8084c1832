"""Runs C{twistd} as the bench's real Salvus host: C{python twistd_host.py MODULES_FILE TWISTD_ARGS...}.

The same as the C{twistd} command, and once the reactor has run a few seconds it writes the number
of modules loaded (then their names, one a line) to MODULES_FILE, for the bench's memory rows.
"""

from __future__ import annotations

import sys

from twisted.scripts.twistd import run

import salvusctl.tap as tap


def main() -> None:
    out = sys.argv[1]
    build = tap.makeService

    def report() -> None:
        names = sorted(sys.modules)
        with open(out, "w") as f:
            f.write(f"{len(names)}\n" + "\n".join(names) + "\n")

    def makeService(options):
        # The reactor is imported after the host is built, as twistd does: importing it first
        # would load TLS into a host that starts without it (salvusctl.host.lean).
        service = build(options)
        from twisted.internet import reactor

        reactor.callLater(2, report)
        return service

    tap.makeService = makeService
    sys.argv = ["twistd", *sys.argv[2:]]
    run()


if __name__ == "__main__":
    main()

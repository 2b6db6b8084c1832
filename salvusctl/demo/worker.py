"""A tiny HTTP worker for the demo host: answers every GET with its instance name and port.

Run as a supervised deploy: C{python -m salvusctl.demo.worker PORT [NAME]}.  It is a separate
program on purpose: the supervisor starts, stops and restarts it like any real deploy.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("usage: python -m salvusctl.demo.worker PORT [NAME]\n")
        return 2
    port = int(args[0])
    name = args[1] if len(args) > 1 else f"worker:{port}"
    body = f"hello from {name} on port {port}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            sys.stdout.write("%s %s\n" % (self.address_string(), format % args))
            sys.stdout.flush()

    # Loopback unless told otherwise: a worker of a cluster is reached by other hosts' balancers.
    bind = os.environ.get("SALVUS_WORKER_BIND", "127.0.0.1")
    server = ThreadingHTTPServer((bind, port), Handler)
    sys.stdout.write(f"{name} listening on {bind}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

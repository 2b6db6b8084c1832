"""A tiny backend for the rolling-restart test: answers each line with C{ok <pid>}.

Usage: python echo_backend.py PORT.  On SIGTERM it stops accepting and exits once idle.
"""

import os
import signal
import socket
import sys
import threading


def main() -> None:
    port = int(sys.argv[1])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(128)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    server.settimeout(0.05)
    reply = f"ok {os.getpid()}\n".encode()

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(100)
                if not chunk:
                    return
                data += chunk
            conn.sendall(reply)

    while not stopping.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    server.close()


if __name__ == "__main__":
    main()

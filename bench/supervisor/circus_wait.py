"""Run by the bench venv's Python: wait until a circus watcher has N processes.

C{python circus_wait.py ENDPOINT WATCHER N TIMEOUT} prints C{ALLRUNNING <time.time()>} (or
C{TIMEOUT}).  Polls every 20 ms, as the bench polls supervisord.  With C{start} for N it asks
circusd to start the watcher and prints C{STARTED <time.time()>} (taken just before asking).
"""

import sys
import time

from circus.client import CircusClient


def main() -> None:
    endpoint, watcher, n, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    client = CircusClient(endpoint=endpoint, timeout=5)
    deadline = time.time() + timeout
    if n == "start":
        # Wait for circusd to answer, then ask it to start the watcher (no waiting).
        while time.time() < deadline:
            try:
                client.call({"command": "list"})
                break
            except Exception:
                time.sleep(0.02)
        t0 = time.time()
        client.call({"command": "start", "properties": {"name": watcher, "waiting": False}})
        print("STARTED", repr(t0), flush=True)
        return
    n = int(n)
    while time.time() < deadline:
        try:
            answer = client.call({"command": "list", "properties": {"name": watcher}})
            pids = answer.get("pids") or []
            if len(pids) >= n:
                print("ALLRUNNING", repr(time.time()), flush=True)
                return
        except Exception:
            pass
        time.sleep(0.02)
    print("TIMEOUT", flush=True)


if __name__ == "__main__":
    main()

"""Run by the bench venv's Python: wait until a circus watcher has N processes.

C{python circus_wait.py ENDPOINT WATCHER N TIMEOUT} prints C{ALLRUNNING <time.time()>} (or
C{TIMEOUT}).  Polls every 20 ms, as the bench polls supervisord.
"""

import sys
import time

from circus.client import CircusClient


def main() -> None:
    endpoint, watcher, n, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    client = CircusClient(endpoint=endpoint, timeout=5)
    deadline = time.time() + timeout
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

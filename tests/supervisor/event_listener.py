"""A minimal supervisord event listener for the tests: appends each event, as one JSON line
{headers, payload, env}, to the file named by argv[1] and acknowledges it.  An event whose
payload contains "FAILME" is answered FAIL the first time it is seen."""

import json
import os
import sys


def main() -> None:
    out = sys.argv[1]
    failed = set()
    stdin, stdout = sys.stdin, sys.stdout
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return
        headers = dict(token.split(":", 1) for token in line.split())
        payload = stdin.read(int(headers["len"]))
        env = {k: v for k, v in os.environ.items() if k.startswith("SUPERVISOR_")}
        with open(out, "a") as f:
            f.write(json.dumps({"line": line, "headers": headers, "payload": payload, "env": env}) + "\n")
        if "FAILME" in payload and payload not in failed:
            failed.add(payload)
            stdout.write("RESULT 4\nFAIL")
        else:
            stdout.write("RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    main()

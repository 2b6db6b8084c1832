"""Runs one Salvus supervisor for the benchmark: C{python salvus_runner.py SPEC.json}.

SPEC: {"run_dir": ..., "deploys": [{Deploy keyword arguments}]}.  Prints C{PID <pid>} at once and
C{ALLRUNNING <time.time()>} when every instance is RUNNING; stops everything on SIGTERM.  With
C{"trigger": true} the deploys wait (C{UP} is printed) for a C{start} line on stdin.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# A supervisor speaks no TLS: start as a supervise-only host does (salvusctl.host.lean).
from salvusctl.host.lean import withoutTLS  # noqa: E402

withoutTLS()
from twisted.internet import reactor  # noqa: E402

from salvusctl.supervisor.deploy import Deploy, Flapping, Ready  # noqa: E402
from salvusctl.supervisor.service import SupervisorService  # noqa: E402
from salvusctl.supervisor.states import ProcessState  # noqa: E402


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    deploys = []
    for d in spec["deploys"]:
        if "flapping" in d:
            d["flapping"] = Flapping(**d["flapping"]) if d["flapping"] else None
        if isinstance(d.get("ready"), dict):
            d["ready"] = Ready(**d["ready"])
        deploys.append(Deploy(**d))
    svc = SupervisorService(reactor, deploys, runDir=spec["run_dir"])
    total = sum(d.numprocs for d in deploys)
    running: set[str] = set()
    announced = []

    def observe(name, old, new, info):
        if new == ProcessState.RUNNING:
            running.add(name)
        else:
            running.discard(name)
        if len(running) == total and not announced:
            announced.append(True)
            print("ALLRUNNING", repr(time.time()), flush=True)

    svc.addObserver(observe)
    print("PID", os.getpid(), flush=True)

    def up() -> None:
        svc.startService()
        if spec.get("trigger"):
            # Wait for the bench's "start" line, so interpreter start-up is not measured.
            from twisted.internet.stdio import StandardIO
            from twisted.protocols.basic import LineReceiver

            class Trigger(LineReceiver):
                delimiter = b"\n"

                def lineReceived(self, line):
                    if line.strip() == b"start":
                        for d in deploys:
                            svc.startDeploy(d.name)

            StandardIO(Trigger(), reactor=reactor)
            print("UP", flush=True)

    reactor.callWhenRunning(up)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()


if __name__ == "__main__":
    main()

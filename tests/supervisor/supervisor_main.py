"""A real Salvus supervisor process for the crash tests: runs one deploy until signalled.

Usage: python supervisor_main.py RUN_DIR COMMAND...  Prints C{READY <instance pid>} once RUNNING
and C{CLEANED <pids>} for leftovers of a previous run it killed.
"""

import sys

from twisted.internet import reactor

from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.service import SupervisorService


def main() -> None:
    runDir, command = sys.argv[1], sys.argv[2:]
    svc = SupervisorService(reactor, [Deploy("victim", command=command, startsecs=0.1)], runDir=runDir)

    def ready(_):
        print("READY", svc.instanceInfo("victim:0")["pid"], flush=True)

    def start():
        svc.startService()
        print("CLEANED", " ".join(str(p) for p in sorted(svc.leftoversKilled)), flush=True)
        svc.ready.addCallback(ready)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()


if __name__ == "__main__":
    main()

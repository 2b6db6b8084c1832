"""Stops go in reverse start order (priority and C{depends_on}), as supervisord's do.

Real child processes write a line when their SIGTERM arrives and another just before they exit,
a short graceful shutdown later: a deploy that started later must have exited before an earlier
one is signalled, for C{stop all} and for the host's own shutdown.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch

CHILD = """
import os, select, signal, sys
name, out = sys.argv[1], sys.argv[2]
def line(text):
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (name + " " + text + "\\n").encode())
    os.close(fd)
stopping = []
signal.signal(signal.SIGTERM, lambda s, f: (stopping or line("term"), stopping.append(1)))
print("up", flush=True)
while not stopping:
    try:
        select.select([], [], [], 1)
    except InterruptedError:
        pass
select.select([], [], [], 0.3)
line("exit")
os._exit(0)
"""


class StopOrderTests(TestCase):
    timeout = 60

    def service(self) -> tuple[SupervisorService, str]:
        base = scratch(self)
        os.makedirs(base)
        out = os.path.join(base, "order")

        def deploy(name, **kw):
            return Deploy(name, command=[sys.executable, "-c", CHILD, name, out], startsecs=0, **kw)

        deploys = [
            deploy("web", priority=10, depends_on=("app",)),
            deploy("db", priority=1),
            deploy("cache", priority=1),
            deploy("worker", priority=0, depends_on=("db",)),  # starts after db: stops before it
            deploy("app", priority=5),
        ]
        svc = SupervisorService(reactor, deploys, runDir=os.path.join(base, "run"), reapInterval=0.2)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc, out

    def up(self, svc: SupervisorService):
        """Every child has its SIGTERM handler in place (it printed C{up})."""
        return waitFor(lambda: all("up" in svc.tailLog(i["name"]) for i in svc.instanceInfos()), timeout=20)

    def assertReverseStartOrder(self, out: str) -> None:
        with open(out) as f:
            lines = f.read().splitlines()
        at = {line: i for i, line in enumerate(lines)}
        self.assertEqual(len(at), 10, lines)
        # cache and db share priority 1 and no dependency: they stop together, in no set order
        for later, earlier in [("web", "app"), ("app", "worker"), ("app", "cache"), ("worker", "db")]:
            self.assertLess(at[f"{later} exit"], at[f"{earlier} term"], lines)

    @inlineCallbacks
    def test_stopAll(self):
        """C{stop all}: web, then app, then worker (then db) with cache."""
        svc, out = self.service()
        svc.startService()
        yield svc.ready
        yield self.up(svc)
        yield svc.stopAll()
        self.assertEqual({i["state"] for i in svc.instanceInfos()}, {"STOPPED"})
        self.assertReverseStartOrder(out)

    @inlineCallbacks
    def test_hostShutdown(self):
        """The host's own shutdown (the service stopping) takes the same order."""
        svc, out = self.service()
        svc.startService()
        yield svc.ready
        yield self.up(svc)
        yield svc.stopService()
        self.assertReverseStartOrder(out)

"""The supervisor inside a real Host: built from declarations, started and stopped with the host."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.host import Host
from salvusctl.supervisor import Deploy, SupervisorSettings
from salvusctl.supervisor.service import SupervisorService
from tests.supervisor import scratch


class HostTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_host_runs_and_stops_deploys(self):
        """A host with deploys gets a supervisor service; stopping the host stops every process."""
        var = os.path.abspath(scratch(self))
        host = Host(name="t", store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
        host.add(SupervisorSettings(max_processes=4))
        host.add(Deploy("web", command=["/bin/sleep", "30"], numprocs=2, startsecs=0))
        top = host.build(reactor)
        svc = top.getServiceNamed("supervisor")
        self.assertIsInstance(svc, SupervisorService)
        self.assertEqual(svc.maxProcesses, 4)
        self.assertEqual(svc.runDir, os.path.join(var, "run", "supervisor"))
        top.startService()
        yield svc.ready
        pids = [i["pid"] for i in svc.instanceInfos()]
        self.assertEqual([i["state"] for i in svc.instanceInfos()], ["RUNNING", "RUNNING"])
        yield top.stopService()
        self.assertEqual([i["state"] for i in svc.instanceInfos()], ["STOPPED", "STOPPED"])
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}/cmdline") and open(f"/proc/{pid}/cmdline").read())

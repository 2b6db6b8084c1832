"""A program that cannot start is a fault at its first failed attempt, as under supervisord.

supervisorctl prints C{ERROR (spawn error)} (or C{no such file}) at once for a program whose start
fails; Salvus used to answer ABNORMAL_TERMINATION only after every retry (with the default backoff
several seconds later, and never for unlimited retries).  The instance goes on retrying in BACKOFF,
with C{spawnerr} saying why, worded as supervisord words it.
"""

from __future__ import annotations

import os
import stat

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.xmlrpc import Fault

from salvusctl.admin.faults import Faults
from salvusctl.admin.state import AdminState
from salvusctl.admin.supervisorrpc import SupervisorNamespace
from salvusctl.supervisor.deploy import Backoff, Deploy
from salvusctl.supervisor.process import ProcessOS
from salvusctl.supervisor.service import SupervisorService
from salvusctl.supervisor.spawncheck import CommandNotExecutable, CommandNotFound, SpawnError, checkSpawn
from salvusctl.supervisor.testing import FakeOS
from tests.admin.helpers import tempDir
from tests.supervisor import scratch

SLOW = Backoff(initial=30, factor=1, cap=30, retries=None)


class _Base(SynchronousTestCase):
    def make(self, *deploys, os_=None):
        self.clock = Clock()
        self.fake = FakeOS(self.clock)
        svc = SupervisorService(self.clock, list(deploys), runDir=scratch(self), os=os_ or self.fake,
                                reapInterval=0)
        self.rpc = SupervisorNamespace(AdminState(services={"supervisor": svc}, clock=self.clock,
                                                  host_name="t"))
        self.svc = svc
        return svc

    def fault(self, d) -> Fault:
        return self.failureResultOf(d, Fault).value


class FirstFailureTests(_Base):
    def test_quickExitIsSpawnErrorAtOnce(self):
        """An exit before startsecs: SPAWN_ERROR at that exit, spawnerr supervisord's words, the
        instance in BACKOFF retrying (unlimited retries would otherwise never answer)."""
        self.make(Deploy("quick", command=["/bin/false"], startsecs=5, backoff=SLOW, startretries=None,
                         autostart=False))
        d = self.rpc.xmlrpc_startProcess("quick")
        self.assertNoResult(d)
        self.fake.exit(self.svc.instanceInfo("quick:0")["pid"], 1)
        fault = self.fault(d)
        self.assertEqual(fault.faultCode, Faults.SPAWN_ERROR)
        info = self.rpc.xmlrpc_getProcessInfo("quick")
        self.assertEqual((info["statename"], info["spawnerr"], info["description"]),
                         ("BACKOFF", "Exited too quickly (process log may have details)",
                          "Exited too quickly (process log may have details)"))
        self.assertEqual(info["exitstatus"], 1)

    def test_groupStartReportsTheFailedOneAtOnce(self):
        """startProcessGroup / startAllProcesses answer when each has started or failed once."""
        self.make(Deploy("ok", command=["/bin/true"], startsecs=0, autostart=False),
                  Deploy("quick", command=["/bin/false"], startsecs=5, backoff=SLOW, startretries=None,
                         autostart=False))
        d = self.rpc.xmlrpc_startAllProcesses()
        self.assertNoResult(d)
        self.fake.exit(self.svc.instanceInfo("quick:0")["pid"], 1)
        results = {r["group"]: r["status"] for r in self.successResultOf(d)}
        self.assertEqual(results, {"ok": Faults.SUCCESS, "quick": Faults.SPAWN_ERROR})
        self.assertEqual(self.svc.instanceInfo("quick:0")["state"], "BACKOFF")


class RealSpawnTests(_Base):
    """The real ProcessOS checks the command and the directory before it forks."""

    def setUp(self):
        self.tmp = tempDir(self)

    def start(self, **kw):
        self.make(Deploy("p", autostart=False, backoff=SLOW, **kw), os_=ProcessOS(Clock(), helper=False))
        self.addCleanup(lambda: [self.svc.stopService() if self.svc.running else None])
        return maybeDeferred(self.rpc.xmlrpc_startProcess, "p")

    def test_missingCommandIsNoFile(self):
        """supervisord's startProcess answers NO_FILE for a command it cannot find, before
        spawning: the process stays STOPPED."""
        fault = self.fault(self.start(command=["/nonexistent/salvus-prog"]))
        self.assertEqual(fault.faultCode, Faults.NO_FILE)
        self.assertEqual(fault.faultString, "NO_FILE: can't find command '/nonexistent/salvus-prog'")
        info = self.rpc.xmlrpc_getProcessInfo("p")
        self.assertEqual((info["statename"], info["exitstatus"], info["pid"], info["description"]),
                         ("STOPPED", 0, 0, "Not started"))

    def test_missingCommandAtAutostartIsBackoff(self):
        """The supervisor's own start (autostart, a retry) goes BACKOFF with the spawn error in
        supervisord's words, and no child is forked."""
        svc = self.make(Deploy("p", command=["/nonexistent/salvus-prog"], backoff=SLOW),
                        os_=ProcessOS(Clock(), helper=False))
        svc.startInstance("p:0").addErrback(lambda f: None)
        info = svc.instanceInfo("p:0")
        self.assertEqual((info["state"], info["spawnerr"], info["exitstatus"], info["pid"]),
                         ("BACKOFF", "can't find command '/nonexistent/salvus-prog'", 0, 0))
        self.assertEqual(info["description"], info["spawnerr"])
        svc.stopInstance("p:0")

    def test_notExecutableIsNotExecutable(self):
        path = os.path.join(self.tmp, "script")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, stat.S_IRUSR)
        fault = self.fault(self.start(command=[path]))
        self.assertEqual(fault.faultCode, Faults.NOT_EXECUTABLE)
        self.assertEqual(fault.faultString, f"NOT_EXECUTABLE: command at {path!r} is not executable")

    def test_badDirectoryIsSpawnErrorAtOnce(self):
        fault = self.fault(self.start(command=["/bin/sleep", "30"], cwd="/nonexistent-salvus-dir"))
        self.assertEqual(fault.faultCode, Faults.SPAWN_ERROR)
        self.assertEqual(self.rpc.xmlrpc_getProcessInfo("p")["spawnerr"],
                         "couldn't chdir to /nonexistent-salvus-dir: ENOENT")

    def test_noWaitStillAnswersTheSpawnError(self):
        """supervisord checks the spawn before it answers, even with wait=False."""
        self.make(Deploy("p", command=["/nonexistent/x"], autostart=False, backoff=SLOW),
                  os_=ProcessOS(Clock(), helper=False))
        fault = self.fault(maybeDeferred(self.rpc.xmlrpc_startProcess, "p", False))
        self.assertEqual(fault.faultCode, Faults.NO_FILE)


class CheckSpawnTests(SynchronousTestCase):
    def test_pathLookupUsesTheChildsPath(self):
        checkSpawn(["sh", "-c", "true"], {"PATH": "/bin:/usr/bin"}, None)
        self.assertRaises(CommandNotFound, checkSpawn, ["sh"], {"PATH": "/nonexistent"}, None)
        self.assertRaises(CommandNotExecutable, checkSpawn, ["/tmp"], {}, None)
        self.assertRaises(SpawnError, checkSpawn, ["/bin/sh"], {}, "/etc/passwd")

"""One contract suite for L{ISupervisor}, run against the real L{SupervisorService} over real child
processes and against L{salvusctl.supervisor.testing.FakeSupervisor}.

The admin's, the monitor's and users' tests drive the fake: the infos it answers, the way it calls
observers and hooks, the errors it raises and the order of its instances must be the real
supervisor's, or those tests assert what no real host does (the monitor compared observer states
with strings, which the real supervisor never passes).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, maybeDeferred, succeed
from twisted.trial.unittest import TestCase
from zope.interface import providedBy
from zope.interface.verify import verifyObject

from salvusctl.interfaces import ISupervisor
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.process import StartRefused
from salvusctl.supervisor.service import SupervisorService
from salvusctl.supervisor.states import ProcessState
from salvusctl.supervisor.testing import FakeSupervisor
from tests.helpers import waitFor
from tests.supervisor import scratch

#: deploy -> number of instances
LAYOUT = {"worker": 1, "web": 2}
SLEEPER = [sys.executable, "-c",
           "import sys, time; print('up', flush=True); print('err', file=sys.stderr, flush=True);"
           " time.sleep(600)"]
#: what ISupervisor promises every info has
PROMISED = {"name", "group", "state", "statecode", "pid", "start", "stop", "now", "exitstatus", "spawnerr",
            "description", "port", "logfile", "stdout_logfile", "stderr_logfile"}


def realInfoKeys(case) -> set[str]:
    """The keys of a real (never started) instance's info."""
    supervisor = SupervisorService(reactor, [Deploy("x", command=SLEEPER, autostart=False)],
                                   runDir=scratch(case))
    return set(supervisor.instanceInfo("x:0"))


class SupervisorContract:
    """The behaviour both must share; a subclass makes one running L{LAYOUT} (all RUNNING)."""

    timeout = 60

    def make(self) -> Any:
        """Fires with a supervisor whose instances of L{LAYOUT} are all RUNNING."""
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self):
        self.s = yield self.make()
        self.changes: list[tuple[str, Any, Any, dict]] = []
        self.s.addObserver(self.observe)

    def observe(self, name, old, new, info):
        self.changes.append((name, old, new, info))

    def state(self, name: str) -> str:
        return self.s.instanceInfo(name)["state"]

    def test_providesTheInterface(self):
        verifyObject(ISupervisor, self.s)

    def test_infosHaveTheRealKeysInStartOrder(self):
        """Every instance by name, deploys in start order (by name at equal priority), with the
        real info's keys (what the pages, the CLI and the monitor read)."""
        infos = self.s.instanceInfos()
        self.assertEqual([i["name"] for i in infos], ["web:0", "web:1", "worker:0"])
        self.assertEqual({(i["deploy"], i["group"]) for i in infos}, {("web", "web"), ("worker", "worker")})
        for info in infos:
            self.assertEqual(set(info), realInfoKeys(self))
            self.assertTrue(PROMISED <= set(info))
            self.assertEqual((info["state"], info["statename"], info["statecode"]),
                             ("RUNNING", "RUNNING", 20))
            self.assertGreater(info["pid"], 0)
            self.assertIn(info["pid"], info["members"])
            self.assertTrue(info["ready"])
            for key in ("start", "stop", "now", "exitstatus"):
                self.assertIsInstance(info[key], int, key)
            self.assertTrue(info["description"].startswith(f"pid {info['pid']}, uptime "),
                            info["description"])
        self.assertEqual(self.s.groups(), {"web": ["web"], "worker": ["worker"]})

    @inlineCallbacks
    def test_unknownNamesAreKeyErrors(self):
        """An unknown instance or deploy is a KeyError naming it (the admin's BAD_NAME)."""
        for call in (self.s.instanceInfo, self.s.tailLog, lambda n: self.s.signalInstance(n, "HUP")):
            e = self.assertRaises(KeyError, call, "nosuch:0")
            self.assertIn("nosuch", str(e))
        for call in (self.s.startInstance, self.s.stopInstance, self.s.restartInstance, self.s.startDeploy,
                     self.s.stopDeploy, self.s.restartDeploy):
            e = yield self.assertFailure(maybeDeferred(call, "nosuch"), KeyError)
            self.assertIn("nosuch", str(e))

    @inlineCallbacks
    def test_stopAndStartAnInstance(self):
        """A stop ends STOPPED with no pid; observers see ProcessState members (with .name) and an
        info whose event is 'state'; a start is RUNNING again under a new pid."""
        pid = self.s.instanceInfo("web:0")["pid"]
        yield self.s.stopInstance("web:0")
        info = self.s.instanceInfo("web:0")
        self.assertEqual((info["state"], info["pid"], info["members"], info["ready"]),
                         ("STOPPED", 0, [], False))
        # supervisord's wording: the local stop time (its "%b %d %I:%M %p")
        self.assertRegex(info["description"], r"^[A-Z][a-z]{2} \d\d \d\d:\d\d [AP]M$")
        self.assertEqual(self.state("web:1"), "RUNNING")
        mine = [(old, new) for name, old, new, i in self.changes if name == "web:0" and i["event"] == "state"]
        self.assertEqual(mine, [(ProcessState.RUNNING, ProcessState.STOPPING),
                                (ProcessState.STOPPING, ProcessState.STOPPED)])
        self.assertEqual([new.name for _, new in mine], ["STOPPING", "STOPPED"])
        self.assertTrue(all(i["name"] == "web:0" for n, _, _, i in self.changes if n == "web:0"))
        yield self.s.stopInstance("web:0")  # stopping a stopped instance is no error
        yield self.s.startInstance("web:0")
        info = self.s.instanceInfo("web:0")
        self.assertEqual(info["state"], "RUNNING")
        self.assertNotEqual(info["pid"], pid)
        yield self.s.startInstance("web:0")  # nor is starting a running one
        self.assertEqual(self.s.instanceInfo("web:0")["pid"], info["pid"])

    @inlineCallbacks
    def test_restartInstanceRunsBeforeStopHooks(self):
        """A restart gives a new pid, and the before-stop hooks run first, while it still runs."""
        seen = []
        hook = lambda name, info: seen.append((name, info["state"]))  # noqa: E731
        self.s.addBeforeStop(hook)
        pid = self.s.instanceInfo("worker:0")["pid"]
        yield self.s.restartInstance("worker:0")
        self.assertNotEqual(self.s.instanceInfo("worker:0")["pid"], pid)
        self.assertEqual(self.state("worker:0"), "RUNNING")
        self.assertEqual(seen, [("worker:0", "RUNNING")])
        self.s.removeBeforeStop(hook)
        yield self.s.restartInstance("worker:0")
        self.assertEqual(len(seen), 1)

    @inlineCallbacks
    def test_rollingRestartOneAtATime(self):
        """restartDeploy(batch=1): each instance is stopped and started again before the next one
        stops, so one always serves; every instance ends RUNNING under a new pid."""
        pids = {n: self.s.instanceInfo(n)["pid"] for n in ("web:0", "web:1")}
        running: list[int] = []

        def observe(name, old, new, info):
            if info["event"] == "state" and new == ProcessState.STOPPING:
                running.append(sum(self.state(n) == "RUNNING" for n in pids))

        self.s.addObserver(observe)
        yield self.s.restartDeploy("web", 1)
        self.assertEqual(running, [1, 1])
        for name, pid in pids.items():
            self.assertEqual(self.state(name), "RUNNING")
            self.assertNotEqual(self.s.instanceInfo(name)["pid"], pid)

    @inlineCallbacks
    def test_deploysGroupsAndAll(self):
        yield self.s.stopDeploy("web")
        self.assertEqual([self.state(n) for n in ("web:0", "web:1", "worker:0")],
                         ["STOPPED", "STOPPED", "RUNNING"])
        yield self.s.startDeploy("web")
        self.assertEqual({self.state(n) for n in ("web:0", "web:1")}, {"RUNNING"})
        yield self.s.stopGroup("worker")
        self.assertEqual(self.state("worker:0"), "STOPPED")
        yield self.s.startGroup("worker")
        self.assertEqual(self.state("worker:0"), "RUNNING")
        yield self.s.stopAll()
        self.assertEqual({i["state"] for i in self.s.instanceInfos()}, {"STOPPED"})
        yield self.s.startAll()
        self.assertEqual({i["state"] for i in self.s.instanceInfos()}, {"RUNNING"})

    @inlineCallbacks
    def test_signals(self):
        """A signal by name, SIG-name or number reaches a running instance; an unknown signal is a
        ValueError; a stopped instance refuses (the admin's NOT_RUNNING)."""
        for sig in ("CONT", "SIGCONT", int(signal.SIGCONT), "cont"):
            self.s.signalInstance("web:0", sig)
        self.assertRaises(ValueError, self.s.signalInstance, "web:0", "NOSUCH")
        yield self.s.stopInstance("web:0")
        self.assertRaises(StartRefused, self.s.signalInstance, "web:0", "CONT")

    def test_tailLog(self):
        """Lines as a list of str; no lines asked, none given."""
        for stream in ("stdout", "stderr"):
            lines = self.s.tailLog("web:0", 10, stream)
            self.assertIsInstance(lines, list)
            self.assertTrue(all(isinstance(line, str) for line in lines))
        self.assertEqual(self.s.tailLog("web:0", 0), [])

    def test_followLogReturnsItsStop(self):
        stop = self.s.followLog("web:0", lambda line: None)
        self.assertTrue(callable(stop))
        stop()

    def wrote(self, name: str) -> Any:
        """Fires once instance C{name} has output on both streams (the real one's program writes
        a line to each; a fake's test writes them)."""
        raise NotImplementedError

    @inlineCallbacks
    def test_clearLogsEmptiesBothStreamsOfThatInstanceOnly(self):
        """supervisord's clearProcessLogs: both streams of one instance are emptied, its
        neighbours keep theirs; an unknown name is a KeyError (the admin's BAD_NAME)."""
        yield self.wrote("web:0")
        yield self.wrote("web:1")
        self.assertEqual(self.s.clearLogs("web:0"), None)
        self.assertEqual((self.s.tailLog("web:0"), self.s.tailLog("web:0", stream="stderr")), ([], []))
        self.assertEqual((self.s.tailLog("web:1"), self.s.tailLog("web:1", stream="stderr")),
                         (["up"], ["err"]))
        self.assertRaises(KeyError, self.s.clearLogs, "nosuch:0")

    def test_removedObserverIsNotCalled(self):
        self.s.removeObserver(self.observe)
        d = self.s.stopInstance("web:1")
        d.addCallback(lambda _: self.assertEqual(self.changes, []))
        return d


class RealSupervisorContractTests(SupervisorContract, TestCase):
    @inlineCallbacks
    def make(self):
        deploys = [Deploy(name, command=SLEEPER, numprocs=n, startsecs=0, stopwaitsecs=5)
                   for name, n in LAYOUT.items()]
        supervisor = SupervisorService(reactor, deploys, runDir=scratch(self), reapInterval=0.2)
        supervisor.startService()
        self.addCleanup(lambda: supervisor.stopService() if supervisor.running else None)
        yield supervisor.ready
        return supervisor

    def wrote(self, name):
        return waitFor(lambda: self.s.tailLog(name) and self.s.tailLog(name, stream="stderr"), timeout=10)

    @inlineCallbacks
    def test_clearLogsEmptiesTheFiles(self):
        """The real supervisor's logs are files as well: clearLogs truncates both, and what the
        program writes next starts them again."""
        yield self.wrote("web:0")
        info = self.s.instanceInfo("web:0")
        self.s.clearLogs("web:0")
        for key in ("stdout_logfile", "stderr_logfile"):
            with open(info[key], "rb") as f:
                self.assertEqual(f.read(), b"", key)


class FakeSupervisorContractTests(SupervisorContract, TestCase):
    def make(self):
        return FakeSupervisor(dict(LAYOUT))

    def wrote(self, name):
        self.s.emit(name, "up")
        self.s.emit(name, "err", stream="stderr")
        return succeed(None)

    def test_providesWhatTheRealOneProvides(self):
        """The fake provides no interface the real supervisor lacks (log clearing included: both
        offer ILogClearing, and the contract above runs it on both)."""
        real = SupervisorService(reactor, [], runDir=scratch(self))
        extra = {i.__name__ for i in providedBy(self.s)} - {i.__name__ for i in providedBy(real)}
        self.assertEqual(extra, set())

    def test_noFakeOnlyMethodBeyondTheTestHelpers(self):
        """Every public method of the fake is the real supervisor's, except the helpers a test
        drives it with; a service method only the fake has would let tests assert what no host
        does."""
        def public(cls):
            return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

        helpers = {"addInstance", "setState", "emit", "failNextStart", "signals"}
        self.assertEqual(public(FakeSupervisor) - public(SupervisorService), helpers)

    def test_portsAndHandDrivenInstances(self):
        """The test helpers: declared ports count up per deploy; an instance added by hand and
        moved by hand calls observers as the real supervisor does."""
        fake = FakeSupervisor({"pg": 1, "web": 2}, ports={"web": 9000})
        self.assertEqual([i["port"] for i in fake.instanceInfos() if i["deploy"] == "web"], [9000, 9001])
        seen = []
        fake.addObserver(lambda name, old, new, info: seen.append((name, old.name, new.name, info["event"])))
        info = fake.addInstance("batch:0", pid=77, directory="/srv/batch")
        self.assertEqual((info["state"], info["pid"], info["directory"]), ("RUNNING", 77, "/srv/batch"))
        fake.setState("batch:0", "EXITED")
        self.assertEqual(seen, [("batch:0", "RUNNING", "EXITED", "state")])
        self.assertEqual(fake.instanceInfo("batch:0")["pid"], 0)

"""A changed balanced deploy, applied by a reload, is a rolling restart: no client sees it.

A real C{twistd salvus} runs a host file with three demo HTTP workers behind its balancer.  The file
is edited (one environment variable of the workers) and the change is applied the ways operators
apply one: SIGHUP to twistd, and C{salvusctl reconcile} against the host's admin.  Clients loop
through the balancer all the while: not one request may fail, and afterwards every worker is a new
process with the new environment (read from C{/proc}, not from the host's own report).
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial.unittest import TestCase

from salvusctl.admin.users import UsersFile
from tests.helpers import REPO, TWISTD, LoadLoops, childEnv, freePort, waitFor
from tests.integration.helpers import OPERATOR, SUPERVISORCTL, rpcCall
from tests.integration.test_rolling import _get

LOOPS = 4  # concurrent client loops
MAX_REQUESTS = 3000  # per loop: bounded in count as well as in time

_TAC = """\
import sys
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy, Probe

host = Host(name="roll", store="sqlite:@WORK@/var/salvus.db", var="@WORK@/var")
host.add(Deploy("worker", command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
                port="auto", numprocs=3, cwd=@REPO@, env={"PYTHONPATH": @REPO@, "MODE": @MODE@},
                startsecs=0.2, stopwaitsecs=5, probe=Probe(kind="tcp", interval=0.2, timeout=1.0)))
host.add(Balanced("web", listen=["tcp:@PORT@:interface=127.0.0.1"],
                  groups=[Group("workers", deploy="worker", health=HealthCheck(interval=0.5, timeout=1.0))]))
host.add(Admin("tcp:@ADMIN@:interface=127.0.0.1", users=@USERS@))
"""


class _Twistd(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [item.partition(b"=") for item in f.read().split(b"\0") if item]
    return {k.decode(): v.decode() for k, _, v in items}


class RollingReloadTests(TestCase):
    timeout = 120

    def write(self, mode: str) -> None:
        text = (_TAC.replace("@WORK@", self.work).replace("@REPO@", repr(REPO)).replace("@MODE@", repr(mode))
                .replace("@PORT@", str(self.port)).replace("@ADMIN@", str(self.admin))
                .replace("@USERS@", repr(self.users)))
        with open(self.tac, "w") as f:
            f.write(text)

    def log(self) -> str:
        if not os.path.exists(self.logfile):
            return ""
        with open(self.logfile) as f:
            return f.read()

    @defer.inlineCallbacks
    def pids(self) -> defer.Deferred:
        """Running worker pids, from the host's supervisord-compatible endpoint."""
        try:
            infos = yield rpcCall(self.admin, "supervisor.getAllProcessInfo")
        except Exception:
            return {}
        return {f"{i['group']}:{i['name']}": i["pid"] for i in infos if i["statename"] == "RUNNING"}

    @defer.inlineCallbacks
    def serves(self) -> defer.Deferred:
        bodies = []
        try:
            for _ in range(6):
                bodies.append((yield _get(self.port)))
        except Exception:
            return False
        return len({b.split()[2] for b in bodies}) == 3

    @defer.inlineCallbacks
    def setUp(self):
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.work, "var"))
        self.users = os.path.join(self.work, "admin-users")
        UsersFile(self.users).add(*OPERATOR, role="operator")
        self.tac = os.path.join(self.work, "host.tac")
        self.logfile = os.path.join(self.work, "twistd.log")
        self.port, self.admin = freePort(), freePort()
        self.write("one")
        self.child = _Twistd()
        self.transport = reactor.spawnProcess(
            self.child, TWISTD[0],
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "salvus", "--config", self.tac],
            env=childEnv(), path=self.work,
        )
        self.addCleanup(self.stopTwistd)
        deadline = reactor.seconds() + 30
        while len((yield self.pids())) < 3 or not (yield self.serves()):
            self.assertLess(reactor.seconds(), deadline, self.log())
            yield waitFor(lambda: True)

    @defer.inlineCallbacks
    def stopTwistd(self):
        if self.child.ended.called:
            return
        self.transport.signalProcess("TERM")
        timer = reactor.callLater(20, lambda: self.child.ended.called or self.transport.signalProcess("KILL"))
        yield self.child.ended
        if timer.active():
            timer.cancel()

    @defer.inlineCallbacks
    def underLoad(self, action, done) -> defer.Deferred:
        """Run C{action()}, keep LOOPS client loops going through the balancer until C{done()}
        is true; fires with (bodies, failures)."""
        load = LoadLoops(lambda: _get(self.port), LOOPS, MAX_REQUESTS)

        @defer.inlineCallbacks
        def changed():
            yield waitFor(lambda: len(load.bodies) >= 20, timeout=20)
            yield action()
            yield waitFor(done, timeout=60)

        yield load.during(changed)
        return load.bodies, load.failures

    @defer.inlineCallbacks
    def assertReplaced(self, before: dict[str, int], bodies: list[str], failures: list[str]):
        self.assertEqual(failures, [])
        self.assertGreater(len(bodies), 100)
        after = yield self.pids()
        self.assertEqual(set(after), set(before))
        for name, pid in after.items():
            self.assertNotEqual(pid, before[name], name)
            self.assertEqual(_environ(pid)["MODE"], "two", name)
        for pid in before.values():
            self.assertFalse(os.path.exists(f"/proc/{pid}/environ") and _environ(pid).get("MODE") == "one")
        # every worker answered during the reload
        self.assertEqual({b.split()[2] for b in bodies}, set(before))

    @defer.inlineCallbacks
    def test_hangupRollsAChangedBalancedDeploy(self):
        """SIGHUP after the workers' environment changed: zero failed requests through the
        balancer, and three new worker processes with the new environment."""
        before = yield self.pids()
        self.assertEqual({_environ(pid)["MODE"] for pid in before.values()}, {"one"})

        def hangup():
            self.write("two")
            os.kill(self.transport.pid, signal.SIGHUP)
            return defer.succeed(None)

        bodies, failures = yield self.underLoad(hangup, lambda: "config reloaded" in self.log())
        self.assertIn("'rolled': ['worker']", self.log())
        self.assertIn("worker: rolling restart with the new declaration", self.log())
        yield self.assertReplaced(before, bodies, failures)
        self.assertNotIn("Traceback", self.log())

    @defer.inlineCallbacks
    def test_reconcileRollsAChangedBalancedDeploy(self):
        """salvusctl reconcile applies the same change the same way, and says what it rolled."""
        before = yield self.pids()
        result = {}

        def reconcile():
            self.write("two")
            env = childEnv(SALVUS_URL=f"http://127.0.0.1:{self.admin}", SALVUS_USER=OPERATOR[0],
                           SALVUS_PASSWORD=OPERATOR[1], HOME=self.work)
            d = utils.getProcessOutputAndValue(sys.executable, ["-m", "salvusctl.cli", "-v", "reconcile"],
                                               env=env, path=REPO)
            d.addCallback(lambda r: result.setdefault("r", r))
            return defer.succeed(None)

        bodies, failures = yield self.underLoad(reconcile, lambda: "r" in result)
        out, err, code = result["r"]
        self.assertEqual((code, out.decode(), err.decode()),
                         (0, "~ supervisor worker (changed, rolled one instance at a time)\n", ""))
        yield self.assertReplaced(before, bodies, failures)

    def supervisorctl(self, *argv: str, result: dict) -> defer.Deferred:
        """Start the real supervisorctl against the host; its (out, err, code) lands in C{result}."""
        d = utils.getProcessOutputAndValue(
            SUPERVISORCTL, ["-s", f"http://127.0.0.1:{self.admin}", "-u", OPERATOR[0], "-p", OPERATOR[1],
                            *argv], env=childEnv(HOME=self.work), path=self.work)
        d.addCallback(lambda r: result.setdefault("r", tuple(x.decode() if isinstance(x, bytes) else x
                                                             for x in r)))
        return defer.succeed(None)

    @defer.inlineCallbacks
    def test_supervisorctlUpdateFailsNoRequest(self):
        """The real supervisorctl's update applies the same change: it sends a stop, a remove and
        an add of the group (it cannot be rolled), and the balancer holds the clients of that gap
        for the instances coming back: zero failed requests, three new processes."""
        before = yield self.pids()
        result: dict = {}

        def update():
            self.write("two")
            return self.supervisorctl("update", result=result)

        bodies, failures = yield self.underLoad(update, lambda: "r" in result)
        out, err, code = result["r"]
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("worker: updated process group", out)
        yield waitFor(lambda: len(bodies) > 0)
        yield self.assertReplaced(before, bodies, failures)

    @defer.inlineCallbacks
    def test_supervisorctlRestartFailsNoRequest(self):
        """supervisorctl restart worker:* (a stop, then a start): zero failed requests."""
        before = yield self.pids()
        result: dict = {}
        self.write("two")  # the file is not read by a restart: the environment stays "one"
        bodies, failures = yield self.underLoad(
            lambda: self.supervisorctl("restart", "worker:*", result=result), lambda: "r" in result)
        out, err, code = result["r"]
        self.assertEqual((code, err), (0, ""), out)
        self.assertEqual(failures, [])
        after = yield self.pids()
        self.assertEqual(set(after), set(before))
        self.assertTrue(all(after[n] != before[n] for n in before), (before, after))
        self.assertEqual({_environ(pid)["MODE"] for pid in after.values()}, {"one"})

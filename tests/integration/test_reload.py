"""Reloading a real host from its edited C{.tac} file.

The claim of "reloading applies only the differences": a host started from a file, the file then
edited (a deploy added, one changed, one removed, a balanced server's weight changed), and
C{salvus.diff} / C{supervisorctl reread} show exactly those; C{salvus.reconcile} leaves the unchanged
deploy's process alone, restarts the changed one, starts the added one and stops the removed one.
A broken edit is refused with the file:line message and changes nothing.  Real child processes,
the real admin on a loopback socket, the real C{supervisorctl} and C{salvusctl} as child processes.
"""

from __future__ import annotations

import os
import sys
import xmlrpc.client

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from salvusctl.admin.faults import Faults
from salvusctl.admin.users import UsersFile
from salvusctl.host.loading import loadHost
from tests.helpers import REPO, childEnv, waitFor
from tests.integration.helpers import OPERATOR, SUPERVISORCTL, rpcCall

_TAC = """\
import sys
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
host = Host(name="reload", store="sqlite:" + {db!r}, var={var!r})
{deploys}
host.add(Balanced("www", listen=["tcp:0:interface=127.0.0.1"],
                  groups=[Group("main", [Server("127.0.0.1:1", name="b1", weight={weight})])]))
host.add(Admin("tcp:0:interface=127.0.0.1", users={users!r}))
application = host.application()
"""

BEFORE = """\
host.add(Deploy("keep", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("change", command=SLEEP, env={"MODE": "one"}, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("gone", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
"""

AFTER = """\
host.add(Deploy("keep", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("change", command=SLEEP, env={"MODE": "two"}, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("new", command=SLEEP, port="auto", startsecs=0.1, stopwaitsecs=2))
host.add(Balanced("pool", listen=["tcp:0:interface=127.0.0.1"], groups=[Group("workers", deploy="new")]))
"""


class ReloadRealHostTests(TestCase):
    timeout = 60

    def write(self, deploys: str, weight: int = 1, broken: bool = False) -> None:
        text = _TAC.format(db=os.path.join(self.var, "salvus.db"), var=self.var, users=self.users,
                           deploys=deploys, weight=weight)
        if broken:
            text = text.replace("host.add(Balanced(", "host.add(Balanced(nope=,", 1)
        with open(self.path, "w") as f:
            f.write(text)

    @defer.inlineCallbacks
    def setUp(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.base = base
        self.var = os.path.join(base, "var")
        self.users = os.path.join(base, "admin-users")
        UsersFile(self.users).add(*OPERATOR, role="operator")
        self.path = os.path.join(base, "host.tac")
        self.write(BEFORE)
        host = loadHost(self.path)
        self.top = host.build(reactor)
        self.services = host.context.services
        self.top.startService()
        self.addCleanup(self.stopHost)
        yield self.services["store"].ready
        yield self.services["supervisor"].ready
        yield self.services["admin"].ready
        self.port = next(p.getHost().port for p in self.services["admin"].ports)
        yield waitFor(lambda: all(self.pid(n) for n in ("keep:0", "change:0", "gone:0")))

    @defer.inlineCallbacks
    def stopHost(self):
        yield self.top.stopService()
        from salvusctl.supervisor import oscalls

        oscalls._prctl(oscalls.PR_SET_CHILD_SUBREAPER, 0)

    def pid(self, name: str):
        try:
            info = self.services["supervisor"].instanceInfo(name)
        except KeyError:
            return None
        return info["pid"] if info["state"] == "RUNNING" else None

    def rpc(self, method: str, *args):
        return rpcCall(self.port, method, *args)

    def command(self, executable: str, *argv: str):
        from twisted.internet import utils

        env = childEnv(SALVUS_URL=f"http://127.0.0.1:{self.port}", SALVUS_USER=OPERATOR[0],
                       SALVUS_PASSWORD=OPERATOR[1], HOME=self.base)
        d = utils.getProcessOutputAndValue(executable, list(argv), env=env, path=REPO)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    def weight(self) -> int:
        snapshot = self.services["balancer"].snapshot()
        return snapshot["services"]["www"]["groups"]["main"]["hosts"][0]["weight"]

    @defer.inlineCallbacks
    def test_reconcileAppliesOnlyTheDifferences(self):
        """An edited file: diff and reread show exactly the edits; reconcile touches only them."""
        before = {n: self.pid(n) for n in ("keep:0", "change:0", "gone:0")}
        diff = yield self.rpc("salvus.diff")
        self.assertEqual(diff, {})
        self.write(AFTER, weight=5)
        diff = yield self.rpc("salvus.diff")
        self.assertEqual(diff, {
            "supervisor": {"added": ["new"], "changed": ["change"], "removed": ["gone"]},
            "balancer": {"added": ["pool"], "changed": ["www/main/b1"], "removed": []},
        })
        reread = yield self.rpc("supervisor.reloadConfig")
        self.assertEqual(reread, [[["new"], ["change"], ["gone"]]])
        out, err, code = yield self.command(SUPERVISORCTL, "-s", f"http://127.0.0.1:{self.port}",
                                        "-u", OPERATOR[0], "-p", OPERATOR[1], "reread")
        self.assertEqual(sorted(out.splitlines()),
                         ["change: changed", "gone: disappeared", "new: available"], (out, err))
        out, err, code = yield self.command(sys.executable, "-m", "salvusctl.cli", "diff")
        self.assertEqual(code, 3, (out, err))
        self.assertIn("+ supervisor new (added)", out)
        self.assertEqual(self.pid("keep:0"), before["keep:0"])  # nothing applied yet

        applied = yield self.rpc("salvus.reconcile")
        self.assertEqual(applied["supervisor"], diff["supervisor"])
        yield waitFor(lambda: self.pid("new:0") and self.pid("change:0"))
        self.assertEqual(self.pid("keep:0"), before["keep:0"])
        self.assertNotEqual(self.pid("change:0"), before["change:0"])
        self.assertIsNone(self.pid("gone:0"))
        self.assertNotIn("gone", self.services["supervisor"].deploys)
        with self.assertRaises(ProcessLookupError):
            os.kill(before["gone:0"], 0)
        self.assertEqual(self.weight(), 5)
        # the added service's group follows the added deploy, as one built at start does
        pool = lambda: self.services["balancer"].snapshot()["services"]["pool"]["groups"]["workers"]  # noqa: E731
        yield waitFor(lambda: [h["name"] for h in pool()["hosts"]] == ["new:0"])
        diff = yield self.rpc("salvus.diff")
        self.assertEqual(diff, {})
        out, err, code = yield self.command(sys.executable, "-m", "salvusctl.cli", "diff")
        self.assertEqual((out, code), ("", 0), err)

    @defer.inlineCallbacks
    def test_brokenFileChangesNothing(self):
        """A syntax error in the edited file: a CANT_REREAD fault naming file:line; nothing moves."""
        before = {n: self.pid(n) for n in ("keep:0", "change:0", "gone:0")}
        self.write(AFTER, weight=5, broken=True)
        with open(self.path) as f:
            line = next(i for i, text in enumerate(f, 1) if "nope=" in text)
        for method in ("salvus.diff", "salvus.reconcile", "supervisor.reloadConfig"):
            with self.assertRaises(xmlrpc.client.Fault) as caught:
                yield self.rpc(method)
            self.assertEqual(caught.exception.faultCode, Faults.CANT_REREAD, method)
            self.assertIn(f"{self.path}:{line}: syntax error", caught.exception.faultString)
        out, err, code = yield self.command(sys.executable, "-m", "salvusctl.cli", "reconcile")
        self.assertNotEqual(code, 0)
        self.assertIn(f"host.tac:{line}: syntax error", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual({n: self.pid(n) for n in before}, before)
        self.assertEqual(self.weight(), 1)
        self.assertEqual(sorted(self.services["supervisor"].deploys), ["change", "gone", "keep"])

    @defer.inlineCallbacks
    def test_everyKindOfBadFileIsOneLineAndChangesNothing(self):
        """A name error, a bad argument, a duplicate and an exception the file raises: salvusctl
        reconcile exits non-zero with one line naming the file and line, SIGHUP's twin
        (salvus.reconcile) is a CANT_REREAD fault, and what runs is untouched."""
        before = {n: self.pid(n) for n in ("keep:0", "change:0", "gone:0")}
        bad = {
            "name": 'host.add(Deploy("x", command=SLEPE))',
            "argument": 'host.add(Deploy("x", commnd=SLEEP))',
            "duplicate": 'host.add(Deploy("keep", command=SLEEP))',
            "raise": 'raise RuntimeError("no such thing")',
        }
        for kind, line in bad.items():
            self.write(AFTER + line + "\n", weight=5)
            with open(self.path) as f:
                number = next(i for i, text in enumerate(f, 1) if text.strip() == line)
            out, err, code = yield self.command(sys.executable, "-m", "salvusctl.cli", "reconcile")
            self.assertNotEqual(code, 0, (kind, out, err))
            self.assertEqual(len(err.strip().splitlines()), 1, (kind, err))
            self.assertTrue(err.startswith("salvusctl: "), (kind, err))
            self.assertIn(f"host.tac:{number}", err, (kind, err))
            self.assertNotIn("Traceback", err + out, kind)
            with self.assertRaises(xmlrpc.client.Fault) as caught:
                yield self.rpc("salvus.reconcile")
            self.assertEqual(caught.exception.faultCode, Faults.CANT_REREAD, kind)
            self.assertEqual({n: self.pid(n) for n in before}, before, kind)
            self.assertEqual(self.weight(), 1, kind)
            self.assertEqual(sorted(self.services["supervisor"].deploys), ["change", "gone", "keep"])

    @defer.inlineCallbacks
    def test_addedProgramThatFailsIsOneLineAndNoTraceback(self):
        """An added program that cannot start: salvusctl reconcile used to exit 1 after about 8 s
        while the host logged a CRITICAL traceback.  Now one line names the program and its
        reason, the host logs no traceback, and the rest of the edit is applied."""
        from twisted.logger import LogLevel, globalLogPublisher

        tracebacks = []

        def observe(event):
            if event.get("log_level") == LogLevel.critical or event.get("log_failure"):
                tracebacks.append(event.get("log_format"))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        before = {n: self.pid(n) for n in ("keep:0", "change:0", "gone:0")}
        self.write(BEFORE + 'host.add(Deploy("bad", command=[sys.executable, "-c", '
                            '"import sys; sys.exit(3)"], startsecs=0.5, startretries=0))\n'
                   + 'host.add(Deploy("new", command=SLEEP, startsecs=0.1))\n')
        started = reactor.seconds()
        out, err, code = yield self.command(sys.executable, "-m", "salvusctl.cli", "reconcile")
        took = reactor.seconds() - started
        self.assertEqual((out, code), ("", 1), err)
        self.assertEqual(err, "salvusctl: supervisor: not applied: InstanceFatal: bad:0: Exited too "
                              "quickly (process log may have details)\n")
        self.assertLess(took, 5)
        yield waitFor(lambda: self.pid("new:0"))
        self.assertEqual({n: self.pid(n) for n in before}, before)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(tracebacks, [])

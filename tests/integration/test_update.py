"""`supervisorctl reread / update / add / remove / avail` against a real host, and the config read
out of process.

A host is started from a C{.tac} file, the file is edited, and the real C{supervisorctl} drives the
host over its loopback admin: C{update} stops and removes the removed and changed groups, adds and
starts the added and changed ones, and leaves the unchanged one's process alone; a balanced deploy
is drained before it is stopped.  Bad names and a running group get supervisord's faults, a broken
or hung edit changes nothing, and the edited file never runs inside the host for a read-only call.
"""

from __future__ import annotations

import os
import xmlrpc.client

from twisted.internet import defer, reactor, utils
from twisted.trial.unittest import TestCase

from salvusctl.admin.faults import Faults
from salvusctl.admin.users import UsersFile
from salvusctl.host.loading import loadHost
from tests.helpers import REPO, childEnv, waitFor
from tests.integration.helpers import OPERATOR, SUPERVISORCTL, VIEWER, rpcCall

_TAC = """\
import os, sys
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy

with open({trace!r}, "a") as trace:
    trace.write(f"{{os.getpid()}}\\n")
{hang}
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
WORKER = [sys.executable, "-m", "salvusctl.demo.worker", "{{port}}", "{{name}}"]
host = Host(name="update", store="sqlite:" + {db!r}, var={var!r})
{deploys}
host.add(Balanced("pool", listen=["tcp:0:interface=127.0.0.1"],
                  groups=[Group("workers", deploy="web", drain_timeout=5)]))
host.add(Admin("tcp:0:interface=127.0.0.1", users={users!r}))
application = host.application()
"""

BEFORE = """\
host.add(Deploy("keep", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("change", command=SLEEP, env={"MODE": "one"}, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("gone", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("web", command=WORKER, port="auto", env={"PYTHONPATH": %r, "V": "1"}, startsecs=0.1,
                stopwaitsecs=2))
""" % REPO

AFTER = """\
host.add(Deploy("keep", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("change", command=SLEEP, env={"MODE": "two"}, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("new", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
host.add(Deploy("web", command=WORKER, port="auto", env={"PYTHONPATH": %r, "V": "2"}, startsecs=0.1,
                stopwaitsecs=2))
""" % REPO

NAMES = ("keep:0", "change:0", "gone:0", "web:0")


class UpdateRealHostTests(TestCase):
    timeout = 90

    def write(self, deploys: str, broken: bool = False, hang: bool = False) -> None:
        text = _TAC.format(db=os.path.join(self.var, "salvus.db"), var=self.var, users=self.users,
                           deploys=deploys, trace=self.trace,
                           hang="import time\ntime.sleep(3600)" if hang else "")
        if broken:
            text = text.replace('host.add(Deploy("keep",', 'host.add(Deploy("keep", nope=,', 1)
        # a new mtime even within the filesystem's timestamp granularity
        stamp = os.stat(self.path).st_mtime_ns + 1_000_000 if os.path.exists(self.path) else None
        with open(self.path, "w") as f:
            f.write(text)
        if stamp is not None:
            os.utime(self.path, ns=(stamp, stamp))

    @defer.inlineCallbacks
    def setUp(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.base = base
        self.var = os.path.join(base, "var")
        self.trace = os.path.join(base, "loaded-by")
        self.users = os.path.join(base, "admin-users")
        users = UsersFile(self.users)
        users.add(*OPERATOR, role="operator")
        users.add(*VIEWER, role="viewer")
        self.path = os.path.join(base, "host.tac")
        self.write(BEFORE)
        host = loadHost(self.path)
        self.top = host.build(reactor)
        self.reloader = host.context.reloader
        self.services = host.context.services
        self.top.startService()
        self.addCleanup(self.stopHost)
        yield self.services["store"].ready
        yield self.services["supervisor"].ready
        yield self.services["admin"].ready
        self.port = next(p.getHost().port for p in self.services["admin"].ports)
        self.url = f"http://127.0.0.1:{self.port}"
        yield waitFor(lambda: all(self.pid(n) for n in NAMES))
        yield waitFor(lambda: self.poolHosts() == ["web:0"])

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

    def pids(self) -> dict:
        return {n: self.pid(n) for n in NAMES}

    def poolHosts(self) -> list[str]:
        snapshot = self.services["balancer"].snapshot()
        return [h["name"] for h in snapshot["services"]["pool"]["groups"]["workers"]["hosts"]]

    def loadedBy(self) -> list[int]:
        with open(self.trace) as f:
            return [int(line) for line in f.read().split()]

    def ctl(self, *args: str, user=OPERATOR):
        env = childEnv(HOME=self.base, LANG="C.UTF-8")
        argv = ["-s", self.url, "-u", user[0], "-p", user[1], *args]
        d = utils.getProcessOutputAndValue(SUPERVISORCTL, argv, env=env, path=REPO)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    def rpc(self, method: str, *args, user=OPERATOR):
        return rpcCall(self.port, method, *args, user=user)

    @defer.inlineCallbacks
    def assertFault(self, code: int, method: str, *args, user=OPERATOR):
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            yield self.rpc(method, *args, user=user)
        self.assertEqual(caught.exception.faultCode, code, caught.exception.faultString)
        return caught.exception.faultString

    # -- update ------------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_updateAppliesGroupsAndLeavesTheUnchangedAlone(self):
        """reread lists the edits; update stops and removes removed/changed groups, adds and starts
        added/changed ones, drains the balanced one first, and keeps the unchanged pid."""
        before = self.pids()
        drained = []

        def seen(name, info):
            if name == "web:0":
                host = self.services["balancer"].snapshot()["services"]["pool"]["groups"]["workers"]
                drained.append([h["admin"] for h in host["hosts"] if h["name"] == name])
                drained.append(self.pid(name))

        self.services["supervisor"].addBeforeStop(seen)
        self.write(AFTER)
        out, err, code = yield self.ctl("reread")
        self.assertEqual(sorted(out.splitlines()),
                         ["change: changed", "gone: disappeared", "new: available", "web: changed"],
                         (out, err))
        self.assertEqual(self.pids(), before)  # reread changes nothing

        out, err, code = yield self.ctl("update")
        self.assertEqual(out.splitlines(), [
            "gone: stopped", "gone: removed process group",
            "change: stopped", "change: updated process group",
            "web: stopped", "web: updated process group",
            "new: added process group",
        ], err)
        self.assertEqual(code, 0, err)
        self.assertEqual(self.pid("keep:0"), before["keep:0"])
        yield waitFor(lambda: self.pid("new:0") and self.pid("change:0") and self.pid("web:0"))
        self.assertNotEqual(self.pid("change:0"), before["change:0"])
        self.assertNotEqual(self.pid("web:0"), before["web:0"])
        self.assertIsNone(self.pid("gone:0"))
        self.assertEqual(sorted(self.services["supervisor"].deploys), ["change", "keep", "new", "web"])
        with self.assertRaises(ProcessLookupError):
            os.kill(before["gone:0"], 0)
        # the balancer drained web:0 while its process still ran, then took the new one back
        self.assertEqual(drained, [["drain"], before["web:0"]])
        yield waitFor(lambda: self.poolHosts() == ["web:0"])
        self.assertEqual(self.services["supervisor"].deploys["change"].env["MODE"], "two")

        out, err, code = yield self.ctl("reread")
        self.assertEqual(out.strip(), "No config updates to processes", err)
        diff = yield self.rpc("salvus.diff")
        self.assertEqual(diff, {})
        out, err, code = yield self.ctl("update")
        self.assertEqual((out, code), ("", 0), err)
        self.assertEqual(self.pid("keep:0"), before["keep:0"])

    @defer.inlineCallbacks
    def test_addRemoveAvailAndTheirFaults(self):
        """add/remove one group at a time with supervisord's answers for bad names and running
        groups; avail lists the config as last read, in use or not."""
        before = self.pids()
        self.write(AFTER)
        yield self.ctl("reread")
        out, err, code = yield self.ctl("avail")
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
        self.assertEqual(rows["new:0"][:2], ["avail", "auto"], out)
        self.assertEqual(rows["keep:0"][:3], ["in", "use", "auto"], out)
        self.assertEqual(rows["gone:0"][:3], ["in", "use", "auto"], out)

        out, err, code = yield self.ctl("add", "new")
        self.assertEqual(out.strip(), "new: added process group", err)
        yield waitFor(lambda: self.pid("new:0"))
        out, err, code = yield self.ctl("add", "new")
        self.assertEqual(out.strip(), "ERROR: process group already active", err)
        out, err, code = yield self.ctl("add", "nope")
        self.assertEqual(out.strip(), "ERROR: no such process/group: nope", err)
        self.assertNotEqual(code, 0)
        out, err, code = yield self.ctl("remove", "keep")
        self.assertEqual(out.strip(), "ERROR: process/group still running: keep", err)
        self.assertNotEqual(code, 0)
        out, err, code = yield self.ctl("remove", "nope")
        self.assertEqual(out.strip(), "ERROR: no such process/group: nope", err)
        yield self.assertFault(Faults.ALREADY_ADDED, "supervisor.addProcessGroup", "new")
        yield self.assertFault(Faults.BAD_NAME, "supervisor.removeProcessGroup", "gone:0")
        yield self.assertFault(Faults.STILL_RUNNING, "supervisor.removeProcessGroup", "gone")
        yield self.assertFault(Faults.PERMISSION_DENIED, "supervisor.removeProcessGroup", "gone",
                               user=VIEWER)
        self.assertEqual(self.pids(), before)  # no fault touched anything

        out, err, code = yield self.ctl("stop", "gone")
        out, err, code = yield self.ctl("remove", "gone")
        self.assertEqual(out.strip(), "gone: removed process group", err)
        self.assertNotIn("gone", self.services["supervisor"].deploys)
        out, err, code = yield self.ctl("add", "gone")  # no longer in the config
        self.assertEqual(out.strip(), "ERROR: no such process/group: gone", err)
        self.assertEqual({n: self.pid(n) for n in ("keep:0", "change:0", "web:0")},
                         {n: before[n] for n in ("keep:0", "change:0", "web:0")})
        out, err, code = yield self.ctl("reread")
        self.assertEqual(sorted(out.splitlines()), ["change: changed", "web: changed"], err)

    @defer.inlineCallbacks
    def test_aGroupThatFailsToStartIsStillAdded(self):
        """As in supervisord, add answers for the group; its process shows why it is not running,
        and update goes on with the next group."""
        before = self.pids()
        self.write(BEFORE + 'host.add(Deploy("bad", command=[sys.executable, "-c", "import sys; '
                            'sys.exit(3)"], startsecs=0.5, startretries=0))\n'
                   + 'host.add(Deploy("new", command=SLEEP, startsecs=0.1))\n')
        out, err, code = yield self.ctl("update")
        self.assertEqual(out.splitlines(), ["bad: added process group", "new: added process group"], err)
        info = self.services["supervisor"].instanceInfo("bad:0")
        self.assertIn(info["state"], ("FATAL", "BACKOFF", "EXITED"), info)
        yield waitFor(lambda: self.pid("new:0"))
        self.assertEqual(self.pids(), before)

    # -- bad edits -----------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_brokenEditChangesNothing(self):
        """A syntax error: reread, update and add answer CANT_REREAD with FILE:LINE; nothing moves."""
        before = self.pids()
        self.write(AFTER, broken=True)
        with open(self.path) as f:
            line = next(i for i, text in enumerate(f, 1) if "nope=" in text)
        out, err, code = yield self.ctl("reread")
        self.assertEqual(out.strip(), f"ERROR: CANT_REREAD: {self.path}:{line}: syntax error: invalid syntax",
                         err)
        out, err, code = yield self.ctl("update")
        self.assertNotEqual(code, 0)
        self.assertIn("CANT_REREAD", out + err)
        text = yield self.assertFault(Faults.CANT_REREAD, "supervisor.addProcessGroup", "new")
        self.assertIn(f"{self.path}:{line}: syntax error", text)
        yield self.assertFault(Faults.CANT_REREAD, "salvus.reconcile")
        self.assertEqual(self.pids(), before)
        self.assertEqual(sorted(self.services["supervisor"].deploys), ["change", "gone", "keep", "web"])

    @defer.inlineCallbacks
    def test_hungEditIsKilledAndChangesNothing(self):
        """A config that never finishes loading: the reader's child is killed at its time limit,
        every call answers one clear line, and the host never runs the file itself."""
        before = self.pids()
        loads = len(self.loadedBy())
        self.reloader.reader.timeout = 1.5
        self.write(AFTER, hang=True)
        out, err, code = yield self.ctl("reread")
        self.assertEqual(out.strip(), f"ERROR: CANT_REREAD: {self.path}: reading the config took more "
                                      "than 1.5 s (does it wait for something?); the reader was killed",
                         err)
        text = yield self.assertFault(Faults.CANT_REREAD, "salvus.reconcile")
        self.assertIn("the reader was killed", text)
        text = yield self.assertFault(Faults.CANT_REREAD, "supervisor.addProcessGroup", "new")
        self.assertIn("the reader was killed", text)
        readers = self.loadedBy()[loads:]
        self.assertEqual(len(readers), 3, readers)  # one child each: reread, reconcile, add
        self.assertNotIn(os.getpid(), readers)
        for pid in readers:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        self.assertEqual(self.pids(), before)

    # -- read-only calls ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_readOnlyCallsRunTheFileOutOfProcessAndCached(self):
        """diff and reread run the edited file in a child, once per edit however often a viewer
        asks; only an operator's apply loads it in the host."""
        loads = len(self.loadedBy())
        self.write(AFTER)
        spawned = self.reloader.reader.spawned
        for _ in range(3):
            diff = yield self.rpc("salvus.diff", user=VIEWER)
            self.assertEqual(diff["supervisor"], {"added": ["new"], "changed": ["change", "web"],
                                                  "removed": ["gone"]})
        reread = yield self.rpc("supervisor.reloadConfig", user=VIEWER)
        self.assertEqual(reread, [[["new"], ["change", "web"], ["gone"]]])
        self.assertEqual(self.reloader.reader.spawned, spawned + 1)
        readers = self.loadedBy()[loads:]
        self.assertEqual(len(readers), 1)
        self.assertNotEqual(readers[0], os.getpid())
        self.write(AFTER)  # touched: read again
        yield self.rpc("salvus.diff", user=VIEWER)
        self.assertEqual(self.reloader.reader.spawned, spawned + 2)
        yield self.assertFault(Faults.PERMISSION_DENIED, "salvus.reconcile", user=VIEWER)
        yield self.rpc("salvus.reconcile")
        self.assertIn(os.getpid(), self.loadedBy()[loads:])  # the operator's apply, in-process
        yield waitFor(lambda: self.pid("new:0"))


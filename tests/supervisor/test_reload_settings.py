"""A real host that declares C{SupervisorSettings} (the first example of docs/supervisor.md),
reloaded through the real C{supervisorctl} (reread, avail, update) and the SIGHUP path: no
AttributeError, no phantom C{None} group, and the settings' change applied live."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, utils
from twisted.trial.unittest import TestCase

from salvusctl.admin.users import UsersFile
from salvusctl.host.loading import loadHost
from tests.helpers import REPO, childEnv, waitFor
from tests.integration.helpers import OPERATOR, SUPERVISORCTL

_TAC = """\
import sys
from salvusctl.admin.declare import Admin
from salvusctl.host import Host
from salvusctl.supervisor.build import SupervisorSettings
from salvusctl.supervisor.deploy import Deploy

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
host = Host(name="settings", store="sqlite:" + {db!r}, var={var!r})
host.add(SupervisorSettings(max_processes={max_processes}))
host.add(Deploy("keep", command=SLEEP, startsecs=0.1, stopwaitsecs=2))
{more}
host.add(Admin("tcp:0:interface=127.0.0.1", users={users!r}))
application = host.application()
"""


class SupervisorSettingsReloadTests(TestCase):
    timeout = 60

    def write(self, max_processes: int, more: str = "") -> None:
        text = _TAC.format(db=os.path.join(self.var, "salvus.db"), var=self.var, users=self.users,
                           max_processes=max_processes, more=more)
        stamp = os.stat(self.path).st_mtime_ns + 1_000_000 if os.path.exists(self.path) else None
        with open(self.path, "w") as f:
            f.write(text)
        if stamp is not None:
            os.utime(self.path, ns=(stamp, stamp))

    @defer.inlineCallbacks
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.var = os.path.join(self.base, "var")
        self.users = os.path.join(self.base, "admin-users")
        UsersFile(self.users).add(*OPERATOR, role="operator")
        self.path = os.path.join(self.base, "host.tac")
        self.write(8)
        host = loadHost(self.path)
        self.top = host.build(reactor)
        self.reloader = host.context.reloader
        self.services = host.context.services
        self.top.startService()
        self.addCleanup(self.top.stopService)
        yield self.services["store"].ready
        yield self.services["supervisor"].ready
        yield self.services["admin"].ready
        self.url = f"http://127.0.0.1:{next(p.getHost().port for p in self.services['admin'].ports)}"

    def ctl(self, *args: str):
        env = childEnv(HOME=self.base, LANG="C.UTF-8")
        argv = ["-s", self.url, "-u", OPERATOR[0], "-p", OPERATOR[1], *args]
        d = utils.getProcessOutputAndValue(SUPERVISORCTL, argv, env=env, path=REPO)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    @defer.inlineCallbacks
    def test_reread_avail_update_and_sighup(self):
        """reread lists nothing, then only the added deploy (it listed "None: available"); avail
        lists real instances; update adds the group; the SIGHUP reconcile applies max_processes."""
        supervisor = self.services["supervisor"]
        out, err, code = yield self.ctl("reread")
        self.assertEqual(out.strip(), "No config updates to processes", err)

        self.write(9, 'host.add(Deploy("new", command=SLEEP, startsecs=0.1, stopwaitsecs=2))')
        out, err, code = yield self.ctl("reread")
        self.assertEqual(out.strip(), "new: available", err)
        out, err, code = yield self.ctl("avail")
        names = sorted(line.split()[0] for line in out.splitlines())
        self.assertEqual(names, ["keep:0", "new:0"], out + err)

        out, err, code = yield self.ctl("update")
        self.assertEqual(out.strip(), "new: added process group", err)
        yield waitFor(lambda: supervisor.instanceInfo("new:0")["state"] == "RUNNING")
        self.assertEqual(supervisor.maxProcesses, 8)  # update applies process groups only

        # SIGHUP's path: the settings' change is applied live; the deploys are left as they are.
        changes = yield self.reloader.reconcile()
        self.assertEqual(changes, {"supervisor-settings": {"added": [], "changed": ["max_processes"],
                                                           "removed": []}})
        self.assertEqual(supervisor.maxProcesses, 9)
        self.assertEqual(sorted(supervisor.deploys), ["keep", "new"])

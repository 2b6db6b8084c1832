"""A host whose components speak no TLS starts without pyOpenSSL and C{cryptography}.

Twisted's reactor loads both whenever they are installed; for a host that only supervises
and monitors they are about 14 MB of its resident memory (see docs/supervisor.md, "Memory").
The decision is checked here in-process, and end to end in a fresh interpreter that goes the
way twistd goes (the plugin, its options, C{makeService}), since only there is the reactor not
imported yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.host import Host, lean
from salvusctl.host import reload as hostreload
from salvusctl.host.components import COMPONENTS
from tests.helpers import childEnv


class _Declared:
    def __init__(self, component):
        self.component = component


class DecisionTests(SynchronousTestCase):
    """L{lean.needsTLS}, L{lean.withoutTLS} and L{lean.tlsBlocked} on given module tables."""

    def test_superviseAndMonitorNeedNoTLS(self):
        self.assertFalse(lean.needsTLS([_Declared("supervisor"), _Declared("monitor")]))
        self.assertFalse(lean.needsTLS([]))

    def test_everyOtherComponentMayNeedTLS(self):
        """Admin (HTTPS), the balancer (TLS endpoints and checks), alerts (STARTTLS), backup and
        cluster keep TLS; so does a declaration of no known component."""
        others = [c.name for c in COMPONENTS if c.name not in ("supervisor", "monitor")]
        self.assertEqual(sorted(others), ["admin", "alerts", "backup", "balancer", "cluster"])
        for name in others + ["somethingNew"]:
            self.assertTrue(lean.needsTLS([_Declared("supervisor"), _Declared(name)]), name)

    def test_withoutTLSMarksBothAbsent(self):
        modules = {"twisted": object()}
        self.assertTrue(lean.withoutTLS(modules))
        self.assertIsNone(modules["OpenSSL"])
        self.assertIsNone(modules["cryptography"])
        self.assertTrue(lean.tlsBlocked(modules))

    def test_tooLateOnceTheReactorIsImported(self):
        """A process that imported the reactor (or TLS itself) already decided: nothing changes."""
        for loaded in ("twisted.internet.reactor", "twisted.internet.tcp", "twisted.internet.ssl",
                       "OpenSSL", "cryptography"):
            modules = {loaded: object()}
            self.assertFalse(lean.withoutTLS(modules), loaded)
            self.assertEqual(list(modules), [loaded])
            self.assertFalse(lean.tlsBlocked(modules))

    def test_notBlockedByDefaultHere(self):
        """This test process imported the reactor with TLS: it is not a lean process."""
        self.assertFalse(lean.tlsBlocked())

    def test_reloadAddingAdminToALeanHostAsksForARestart(self):
        """The reloader names an added TLS component as needing a restart, with the reason, and
        does not import that component's reload module (which could load TLS)."""
        from salvusctl.admin.declare import Admin
        from salvusctl.supervisor.declare import Deploy

        running = Host(store="sqlite::memory:")
        running.add(Deploy("idle", command=["/bin/sleep", "100"]))
        new = Host(store="sqlite::memory:")
        new.add(Deploy("idle", command=["/bin/sleep", "100"]))
        new.add(Admin("tcp:0:interface=127.0.0.1"))
        reloader = hostreload.HostReloader(running, context=SimpleNamespace(services={}))
        resolved = []
        self.patch(hostreload, "tlsBlocked", lambda: True)
        real = hostreload.resolve
        self.patch(hostreload, "resolve", lambda target: resolved.append(target) or real(target))
        changes, owners = reloader._entries(new)
        self.assertEqual(owners["admin"], ["admin"])
        self.assertTrue(changes["admin"]["restart"])
        self.assertEqual(changes["admin"]["reason"], lean.RESTART_REASON)
        self.assertEqual(resolved, ["salvusctl.supervisor.reload"])


PROBE = textwrap.dedent("""
    import json, sys
    from twisted.application.service import IServiceMaker
    from twisted.logger import globalLogPublisher
    from twisted.plugin import getPlugins

    import salvusctl.tap as tap

    def real():
        return sorted(m for m in ("OpenSSL", "cryptography") if sys.modules.get(m) is not None)

    said = []
    globalLogPublisher.addObserver(
        lambda event: said.append(event.get("log_format") or "")
        if event.get("log_namespace") == "salvus.host" else None)
    hosts = []
    tap.reloadOnHangup = lambda reactor, host: hosts.append(host)
    maker = [p for p in getPlugins(IServiceMaker) if p.tapname == "salvus"][0]
    options = maker.options()
    options.parseOptions(["--config", sys.argv[1]])
    maker.makeService(options)
    out = {"built": real(), "said": said}
    if len(sys.argv) > 2:
        from salvusctl.host.loading import loadHost
        new = loadHost(sys.argv[2])
        new.validate()
        diff = hosts[0].context.reloader.diff(new)
        out["diff"] = {name: [bool(e.get("restart")), e.get("reason")] for name, e in diff.items()}
        out["reloaded"] = real()
    print(json.dumps(out))
""")

SUPERVISE_ONLY = textwrap.dedent("""
    import os
    from salvusctl.host import Host
    from salvusctl.monitor.declare import Monitor
    from salvusctl.supervisor.deploy import Deploy

    var = os.path.join(os.path.dirname(os.path.abspath(__file__)), "var")
    host = Host(store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
    host.add(Deploy("idle", command=["/bin/sleep", "1000"], numprocs=3, startsecs=0))
    host.add(Monitor(interval=60))
""")

WITH_ADMIN = SUPERVISE_ONLY + textwrap.dedent("""
    from salvusctl.admin.declare import Admin
    host.add(Admin("tcp:0:interface=127.0.0.1"))
""")


class FreshHostTests(SynchronousTestCase):
    """C{makeService} in a fresh interpreter, as twistd calls it."""

    def probe(self, *hostFiles: str) -> dict:
        directory = tempfile.mkdtemp(prefix="salvus-lean-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", directory], check=False))
        paths = []
        for index, text in enumerate(hostFiles):
            paths.append(os.path.join(directory, f"host{index}.tac"))
            with open(paths[-1], "w") as f:
                f.write(text)
        result = subprocess.run([sys.executable, "-c", PROBE, *paths], capture_output=True,
                                text=True, env=childEnv(), timeout=120, cwd=directory)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return json.loads(result.stdout.strip().splitlines()[-1])

    def test_superviseOnlyHostLoadsNoTLS(self):
        """Deploys and a monitor: neither OpenSSL nor cryptography is loaded, and the log says
        why."""
        out = self.probe(SUPERVISE_ONLY)
        self.assertEqual(out["built"], [])
        self.assertTrue(any(line.startswith("TLS not loaded") for line in out["said"]), out["said"])

    def test_adminHostLoadsTLS(self):
        """The same host with an admin (HTTPS) loads both, and says nothing of TLS."""
        out = self.probe(WITH_ADMIN)
        self.assertEqual(out["built"], ["OpenSSL", "cryptography"])
        self.assertFalse(any(line.startswith("TLS not loaded") for line in out["said"]))

    def test_reloadAddingAdminAsksForARestartAndLoadsNoTLS(self):
        """A lean host whose config gains an admin: the diff says restart, with the reason, and
        the host still has no TLS loaded."""
        out = self.probe(SUPERVISE_ONLY, WITH_ADMIN)
        self.assertEqual(out["diff"], {"admin": [True, lean.RESTART_REASON]})
        self.assertEqual(out["reloaded"], [])

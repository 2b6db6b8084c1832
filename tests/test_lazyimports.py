"""A host loads only the components it declares: a supervise-only host stays small.

supervisord supervises 200 programs in about 29 MB.  A Salvus host that only supervises must not
pay for a balancer, admin pages (Klein, twisted.web), the PostgreSQL driver, alerts, a cluster or
backups it never declared; each of those is imported the first time a host declares it.  The
probe runs in a fresh interpreter and goes the way twistd goes: the plugin scan, the salvus
options, then C{makeService} over the host file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import childEnv

#: Never loaded by a host that declares only deploys.
UNDECLARED = ("salvusctl.balancer", "salvusctl.admin", "salvusctl.alerts", "salvusctl.cluster",
              "salvusctl.backup", "salvusctl.monitor", "klein", "treq", "twisted.web", "txpostgres",
              "psycopg2", "psycopg")

PROBE = textwrap.dedent("""
    import json, sys
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    def loaded():
        names = tuple(sys.argv[2:])
        under = tuple(name + "." for name in names)
        return sorted(m for m in sys.modules if m in names or m.startswith(under))

    maker = [p for p in getPlugins(IServiceMaker) if p.tapname == "salvus"][0]
    options = maker.options()
    options.parseOptions(["--config", sys.argv[1]])
    stages = {"options": loaded()}
    service = maker.makeService(options)
    stages["built"] = loaded()
    stages["children"] = sorted(child.name for child in service)
    print(json.dumps(stages))
""")

SUPERVISE_ONLY = textwrap.dedent("""
    import os
    from salvusctl.host import Host
    from salvusctl.supervisor.deploy import Deploy

    var = os.path.join(os.path.dirname(os.path.abspath(__file__)), "var")
    host = Host(store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
    host.add(Deploy("idle", command=["/bin/sleep", "1000"], numprocs=200, startsecs=0))
""")

WITH_BALANCER = SUPERVISE_ONLY + textwrap.dedent("""
    from salvusctl.balancer.declare import Balanced, Group, Server
    host.add(Balanced("web", listen=["tcp:0:interface=127.0.0.1"],
                      groups=[Group("static", servers=[Server("127.0.0.1:1")])]))
""")


class SuperviseOnlyImportTests(SynchronousTestCase):
    """What C{twistd salvus --config FILE} imports depends on what FILE declares."""

    def probe(self, hostFile: str) -> dict:
        directory = tempfile.mkdtemp(prefix="salvus-lazy-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", directory], check=False))
        path = os.path.join(directory, "host.tac")
        with open(path, "w") as f:
            f.write(hostFile)
        result = subprocess.run([sys.executable, "-c", PROBE, path, *UNDECLARED], capture_output=True,
                                text=True, env=childEnv(), timeout=120, cwd=directory)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return json.loads(result.stdout.strip().splitlines()[-1])

    def test_superviseOnlyHostLoadsNoOtherComponent(self):
        """A host of 200 deploy instances, built the way twistd builds it, has imported no
        balancer, admin, Klein, twisted.web, PostgreSQL driver, alerts, cluster, backup or
        monitor module: none is declared, so none is paid for in memory."""
        stages = self.probe(SUPERVISE_ONLY)
        self.assertEqual(stages["options"], [])
        self.assertEqual(stages["built"], [])
        self.assertEqual(stages["children"], ["store", "supervisor"])

    def test_declaredBalancerIsLoaded(self):
        """The probe sees a component once it is declared: the same host with a balancer loads
        the balancer (so the empty list above is not a probe that sees nothing)."""
        stages = self.probe(WITH_BALANCER)
        self.assertEqual(stages["options"], [])
        self.assertIn("salvusctl.balancer", stages["built"])
        self.assertIn("balancer", stages["children"])

"""The declared model: digests that agree across processes, and the reloader's diff over it.

The model a child process writes must compare with the running host exactly as the declarations
themselves do for what the reload applies (a deploy's spec, a balanced service's data), and
stably for the rest, callables included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.alerts.build import AlertRule
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.host import Host
from salvusctl.host.loading import loadHost
from salvusctl.host.model import Declared, DeclaredHost, declarationDigest, describe, digest, specDigest
from salvusctl.host.reload import MODEL_NOTE, HostReloader
from salvusctl.monitor.build import Monitor
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.reload import deployDiff
from tests.helpers import childEnv

CMD = [sys.executable, "-c", "pass"]

_TAC = """\
import sys
from salvusctl.alerts.build import AlertRule
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.host import Host
from salvusctl.monitor.build import Monitor
from salvusctl.supervisor.deploy import Deploy, Probe

def check(sample):
    return sample["rss"] > {limit}

class Hook:
    # a declaration of the user's own, holding a function
    component = "hooks"

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

host = Host(name="m", store="sqlite:/tmp/m.db", var="/tmp/m")
host.add(Deploy("web", command=["/bin/true", "{{port}}"], port="auto", env={{"A": "1"}},
                probe=Probe(kind="tcp")))
host.add(Balanced("www", listen=["tcp:0"], groups=[Group("g", [Server("127.0.0.1:1", weight=2)])]))
host.add(Monitor(interval=5))
host.add(AlertRule("rss", 200, deploy="web"))
host.add(Hook("custom", check))
"""


def _roundTrip(host) -> DeclaredHost:
    return DeclaredHost(json.loads(json.dumps(describe(host))))


@dataclass
class _Point:
    x: int
    y: float


class DigestTests(SynchronousTestCase):
    def test_equalValuesEqualDigests(self):
        """Containers compare by content: dict order, tuple vs list and set order do not matter."""
        self.assertEqual(digest({"a": 1, "b": [1, 2]}), digest({"b": (1, 2), "a": 1}))
        self.assertEqual(digest({3, 1, 2}), digest({2, 3, 1}))
        self.assertNotEqual(digest({"a": 1}), digest({"a": 2}))
        self.assertEqual(digest(_Point(1, 2.0)), digest(_Point(1, 2.0)))
        self.assertNotEqual(digest(_Point(1, 2.0)), digest(_Point(1, 2.5)))
        self.assertNotEqual(digest(1), digest(1.0))

    def test_callablesByCode(self):
        """A function counts by its qualified name and bytecode: the same source, the same digest;
        another body, another digest; no id() or address ever enters."""
        def make(limit):
            ns: dict = {}
            exec(f"def check(s):\n    return s > {limit}\n", {"__name__": "cfg"}, ns)
            return ns["check"]

        self.assertEqual(digest(make(5)), digest(make(5)))
        self.assertNotEqual(digest(make(5)), digest(make(6)))

    def test_cyclesAndOpaqueValues(self):
        """A cycle or an object with no fields does not loop or fail; the latter counts by type."""
        a = SimpleNamespace()
        a.me = a
        digest(a)
        self.assertEqual(digest(object()), digest(object()))

    def test_sameAcrossProcesses(self):
        """A config read in a child process has exactly the digests of the same config read here:
        deploy spec, balanced data and whole declarations, a callable among them."""
        path = os.path.abspath(self.mktemp() + ".tac")
        with open(path, "w") as f:
            f.write(_TAC.format(limit=100))
        here = describe(loadHost(path))
        out = subprocess.run([sys.executable, "-m", "salvusctl.host.loading", path], capture_output=True,
                             env=childEnv(), check=True, timeout=60).stdout
        there = json.loads(out)["model"]
        self.assertEqual(there["declarations"], here["declarations"])
        with open(path, "w") as f:
            f.write(_TAC.format(limit=200))
        again = describe(loadHost(path))
        changed = [a["label"] for a, b in zip(here["declarations"], again["declarations"], strict=True)
                   if a["digest"] != b["digest"]]
        self.assertEqual(changed, ["custom"])


class DeclaredDiffTests(SynchronousTestCase):
    """HostReloader.diff over a DeclaredHost gives what it gives over the Host itself."""

    def host(self, env="1", weight=1, monitor=5.0, deploys=("a", "b")):
        host = Host("h", store="sqlite:/tmp/x.db", var="/tmp/x")
        for name in deploys:
            host.add(Deploy(name, command=CMD, env={"E": env} if name == "a" else {}))
        servers = [Server("127.0.0.1:1", weight=weight)]
        host.add(Balanced("www", listen=["tcp:0"], groups=[Group("g", servers)]))
        host.add(Monitor(interval=monitor))
        host.add(AlertRule("fatal", deploy="a"))
        return host

    def reloader(self, running):
        supervisor = SimpleNamespace(deploys={d.name: d for d in running.declarations("supervisor")})

        class Balancer:
            def diff(self, declared):
                [www] = declared
                host = www.asData()["groups"]["g"]["hosts"]["127.0.0.1:1"]
                if host["weight"] != 1:
                    return [{"op": "set-weight", "service": "www", "group": "g", "host": "127.0.0.1:1"}]
                return []

            def reconcile(self, declared):
                return succeed([])

        context = SimpleNamespace(services={"supervisor": supervisor, "balancer": Balancer()})
        return HostReloader(running, context)

    def test_sameAnswers(self):
        """For an unchanged config, one edit of each kind, and all together, the diff over the
        model names the same supervisor and balancer changes as the diff over the Host, and the
        same components."""
        running = self.host()
        reloader = self.reloader(running)
        self.assertIsNone(reloader.reader)  # composed in code: no file to read out of process
        for edited in (self.host(), self.host(env="2"), self.host(weight=3), self.host(monitor=9.0),
                       self.host(deploys=("a", "c")),
                       self.host(env="2", weight=3, monitor=9.0, deploys=("a", "c"))):
            model, real = reloader.diff(_roundTrip(edited)), reloader.diff(edited)
            self.assertEqual(sorted(model), sorted(real))
            for component in ("supervisor", "balancer"):
                self.assertEqual(model.get(component), real.get(component))
        self.assertEqual(reloader.diff(_roundTrip(self.host())), {})

    def test_modelNamesLiveReloadedDeclarationsWithANote(self):
        """Out of process, a monitor edit is named by declaration with a note: whether it applies
        live is decided with the real declarations, when applied."""
        reloader = self.reloader(self.host())
        self.assertEqual(reloader.diff(_roundTrip(self.host(env="2", monitor=9.0))), {
            "supervisor": {"added": [], "changed": ["a"], "removed": []},
            "monitor": {"added": [], "changed": ["monitor"], "removed": [], "note": MODEL_NOTE},
        })

    def test_deployDiffMixesModelAndDeclarations(self):
        """A priority-only change is no change, through the model as through spec()."""
        running = {"a": Deploy("a", command=CMD), "b": Deploy("b", command=CMD)}
        entries = describe(self.host())["declarations"]
        declared = [Declared(e) for e in entries if e["component"] == "supervisor"]
        self.assertEqual(deployDiff(running, declared), {"added": [], "changed": ["a"], "removed": []})
        moved = Deploy("b", command=CMD, priority=1)
        self.assertEqual(specDigest(moved), specDigest(running["b"]))
        self.assertNotEqual(declarationDigest(moved), declarationDigest(running["b"]))

    def test_modelRejectsOtherVersions(self):
        with self.assertRaises(ValueError):
            DeclaredHost({"version": 99})

"""
The balancer process's command line and the state it carries across a hand-over.

A bad command line must stop the process at once with a message that names the problem,
before it binds or takes anything over.
"""

from __future__ import annotations

import io

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer import states
from salvusctl.balancer.process import ProxyProcess, exportState, parseArgs, parseHostPort
from salvusctl.errors import ConfigError


class ArgsTests(SynchronousTestCase):
    def fails(self, argv, words):
        err = io.StringIO()
        import contextlib

        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as ctx:
            parseArgs(argv)
        self.assertEqual(ctx.exception.code, 2)
        self.assertIn(words, err.getvalue())

    def test_needsAListenerAndABackend(self):
        self.fails(["--backend", "127.0.0.1:80"], "--listen")
        self.fails(["--listen", "web=127.0.0.1:8080"], "--backend")

    def test_duplicateListenIsRejected(self):
        """Two listeners on one address would fail at bind time; say so first."""
        self.fails(
            ["--listen", "a=127.0.0.1:8080", "--listen", "b=127.0.0.1:8080", "--backend", "127.0.0.1:80"],
            "duplicate listen address",
        )
        self.fails(
            ["--listen", "a=127.0.0.1:8080", "--listen", "a=127.0.0.1:8081", "--backend", "127.0.0.1:80"],
            "duplicate listener name",
        )

    def test_badAddressesSayWhatIsWrong(self):
        self.fails(["--listen", "web=8080", "--backend", "127.0.0.1:80"], "HOST:PORT")
        self.fails(["--listen", "127.0.0.1:8080", "--backend", "127.0.0.1:80"], "NAME=HOST:PORT")
        self.fails(["--listen", "web=127.0.0.1:x", "--backend", "127.0.0.1:80"], "port must be a number")
        self.fails(["--listen", "web=127.0.0.1:70000", "--backend", "127.0.0.1:80"], "out of range")

    def test_drainBoundsMustBeOrdered(self):
        self.fails(
            ["--listen", "w=127.0.0.1:1", "--backend", "127.0.0.1:2",
             "--drain-timeout", "9", "--hard-stop", "3"],  # fmt: skip
            "hard-stop",
        )

    def test_ipv6HostPort(self):
        self.assertEqual(parseHostPort("[::1]:8080"), ("::1", 8080))


class StateTests(SynchronousTestCase):
    """What an old process hands over is what a new one restores."""

    def make(self, scheduler="roundrobin"):
        args = parseArgs(
            ["--listen", "web=127.0.0.1:0", "--backend", "127.0.0.1:9001", "--backend", "127.0.0.1:9002",
             "--scheduler", scheduler]
        )  # fmt: skip
        return ProxyProcess(MemoryReactorClock(), args, out=io.StringIO())

    def test_unknownSchedulerIsAConfigError(self):
        with self.assertRaises(ConfigError) as ctx:
            self.make("fastest-please")
        self.assertIn("fastest-please", str(ctx.exception))

    def test_statesWeightsAndCountersSurvive(self):
        old = self.make()
        svc = old.balancer.balanced["web"]
        a, b = list(svc.group("main").hosts.values())
        old.balancer.drain("web", "main", a.name)
        old.balancer.setWeight("web", "main", b.name, 5)
        a.total, a.bytes_in, b.bytes_out = 7, 700, 900
        state = old.handoverState()
        import json

        state = json.loads(json.dumps(state))  # what crosses the Unix socket
        new = self.make()
        new.applyState(state)
        na, nb = (new.balancer.balanced["web"].host("main", h.name) for h in (a, b))
        self.assertEqual(na.admin, states.DRAIN)
        self.assertEqual(nb.weight, 5)
        self.assertEqual((na.total, na.bytes_in, nb.bytes_out), (7, 700, 900))
        self.assertEqual(new.inherited, 7)
        self.assertEqual(exportState(new.balancer.balanced, 0)["hosts"][0]["admin"], states.DRAIN)


class ConfigFileTests(SynchronousTestCase):
    """C{--config}: the declarations a C{.tac} would use, for a process that can hand over."""

    def write(self, text):
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".py")
        os.write(fd, text.encode())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        return path

    def test_declarationsAndListenerNames(self):
        """Each endpoint becomes a named listener: the service, then service#1, #2."""
        from salvusctl.balancer.process import listenSpecs, loadConfig

        path = self.write(
            "from salvusctl.balancer.declare import Balanced, Group, Server\n"
            "balanced = [\n"
            "  Balanced('web', listen=['tcp:8080:interface=127.0.0.1', 'tcp:8081:interface=\\\\:\\\\:1'],\n"
            "           groups=[Group('blue', [Server('127.0.0.1:9000')], scheduler='leastconns')]),\n"
            "  Balanced('api', listen=['tcp:8090'], groups=[Group('g', [Server('127.0.0.1:9001')])]),\n"
            "]\n"
        )
        decls = loadConfig(path)
        self.assertEqual([d.name for d in decls], ["web", "api"])
        self.assertEqual(
            [(n, s, h, p) for n, s, h, p, _b in listenSpecs(decls)],
            [("web", "web", "127.0.0.1", 8080), ("web#1", "web", "::1", 8081),
             ("api", "api", "0.0.0.0", 8090)],  # fmt: skip
        )
        args = parseArgs(["--config", path])
        proc = ProxyProcess(MemoryReactorClock(), args, out=io.StringIO())
        self.assertEqual(proc.balancer.balanced["web"].group("blue").scheduler.name, "leastconns")

    def test_badConfigsAreRefusedWithTheReason(self):
        from salvusctl.balancer.process import listenSpecs, loadConfig

        with self.assertRaises(ConfigError) as ctx:
            loadConfig(self.write("balanced = 3\n"))
        self.assertIn("list of Balanced", str(ctx.exception))
        with self.assertRaises(ConfigError) as ctx:
            loadConfig("/nonexistent/lb.py")
        self.assertIn("cannot read", str(ctx.exception))
        path = self.write(
            "from salvusctl.balancer.declare import Balanced, Group, Server\n"
            "balanced = [Balanced('web', listen=['tcp:8080'],\n"
            "                     groups=[Group('g', [Server('h:1', weight=0)])])]\n"
        )
        with self.assertRaises(ConfigError) as ctx:
            loadConfig(path)
        self.assertIn("weight", str(ctx.exception))
        from salvusctl.balancer.declare import Balanced, Group, Server

        unix = Balanced("u", listen=["unix:/tmp/x.sock"], groups=[Group("g", [Server("h:1")])])
        with self.assertRaises(ConfigError) as ctx:
            listenSpecs([unix])
        self.assertIn("cannot be handed over", str(ctx.exception))
        twice = [
            Balanced("a", listen=["tcp:8080:interface=127.0.0.1"], groups=[Group("g", [Server("h:1")])]),
            Balanced("b", listen=["tcp:8080:interface=127.0.0.1"], groups=[Group("g", [Server("h:1")])]),
        ]
        with self.assertRaises(ConfigError) as ctx:
            listenSpecs(twice)
        self.assertIn("duplicate listen address", str(ctx.exception))

    def test_configExcludesListenAndBackend(self):
        err = io.StringIO()
        import contextlib

        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
            parseArgs(["--config", "lb.py", "--backend", "127.0.0.1:80"])
        self.assertIn("--config replaces", err.getvalue())

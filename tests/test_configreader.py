"""The out-of-process config reader: time limit, bounded output, one child at a time, the cache;
then the real child on real files (a good one, a broken one, a hung one, one that prints)."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.host.model import DeclaredHost, describe
from salvusctl.host.reader import RESULT_FD, ConfigReader
from salvusctl.supervisor.deploy import Deploy


class _Transport:
    pid = None  # no real process: the reader must not signal a process group

    def __init__(self):
        self.signals: list[str] = []
        self.stdinClosed = False

    def closeStdin(self):
        self.stdinClosed = True

    def signalProcess(self, name):
        self.signals.append(name)

    def loseConnection(self):
        self.signals.append("close")


class _ProcessClock(Clock):
    """A Clock that records spawnProcess calls instead of starting anything."""

    def __init__(self):
        super().__init__()
        self.spawned: list[tuple] = []

    def spawnProcess(self, protocol, executable, args, env=None, path=None, childFDs=None, **kw):
        transport = _Transport()
        protocol.makeConnection(transport)
        self.spawned.append((protocol, transport, args, env, childFDs))
        return transport


def _model(name: str = "h") -> dict:
    host = Host(name, store="sqlite:/tmp/x.db", var="/tmp/x")
    host.add(Deploy("web", command=["true"]))
    return describe(host)


def _exit(protocol, code: int = 0, signal=None) -> None:
    reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
    protocol.processEnded(Failure(reason))


class ReaderUnitTests(SynchronousTestCase):
    def setUp(self):
        self.clock = _ProcessClock()
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write("# a config\n")
        self.reader = ConfigReader(self.clock, self.path, timeout=5.0, maxOutput=10_000)

    def answer(self, payload: dict, code: int = 0, index: int = -1) -> None:
        protocol = self.clock.spawned[index][0]
        protocol.childDataReceived(RESULT_FD, json.dumps(payload).encode())
        _exit(protocol, code)

    def test_childCommandAndDescriptors(self):
        """The child is salvusctl.host.model's main on FILE --store URL, this very salvusctl first
        on its path, in the host's own environment (a config may read it); its model comes on fd 3
        and its stdin is closed at once."""
        reader = ConfigReader(self.clock, self.path, store="sqlite:/tmp/o.db")
        reader.read()
        protocol, transport, args, env, fds = self.clock.spawned[0]
        root = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["salvusctl"].__file__)))
        self.assertEqual(args[1], "-c")
        self.assertIn(f"sys.path.insert(0, {root!r})", args[2])
        self.assertIn("from salvusctl.host.loading import main", args[2])
        self.assertEqual(args[3:], [self.path, "--store", "sqlite:/tmp/o.db"])
        self.assertEqual(env, dict(os.environ))
        self.assertEqual(fds, {0: "w", 1: "r", 2: "r", 3: "r"})
        self.assertTrue(transport.stdinClosed)

    def test_modelAndCache(self):
        """A model answers a DeclaredHost; asking again about unchanged files spawns nothing; an
        edit (new size or mtime) reads again."""
        d = self.reader.read()
        self.answer({"model": _model()})
        host = self.successResultOf(d)
        self.assertIsInstance(host, DeclaredHost)
        self.assertEqual([x.name for x in host.declarations("supervisor")], ["web"])
        self.assertIs(self.reader.last, host)
        self.assertIs(self.successResultOf(self.reader.read()), host)
        self.assertEqual(len(self.clock.spawned), 1)
        with open(self.path, "a") as f:
            f.write("# edited\n")
        d = self.reader.read()
        self.assertEqual(len(self.clock.spawned), 2)
        self.answer({"model": _model("h2")})
        self.assertEqual(self.successResultOf(d).name, "h2")
        self.reader.read(fresh=True)
        self.assertEqual(len(self.clock.spawned), 3)

    def test_importedSourcesAreWatched(self):
        """A file the config imported is part of the cache key: editing it reads again."""
        helper = os.path.abspath(self.mktemp())
        with open(helper, "w") as f:
            f.write("X = 1\n")
        model = _model()
        model["sources"] = [self.path, helper]
        d = self.reader.read()
        self.answer({"model": model})
        self.successResultOf(d)
        self.reader.read()
        self.assertEqual(len(self.clock.spawned), 1)
        with open(helper, "w") as f:
            f.write("X = 22\n")
        self.reader.read()
        self.assertEqual(len(self.clock.spawned), 2)

    def test_oneChildAtATime(self):
        """Callers that ask while a read runs share its answer: one child, however many ask."""
        ds = [self.reader.read() for _ in range(5)] + [self.reader.read(fresh=True)]
        self.assertEqual(len(self.clock.spawned), 1)
        self.answer({"model": _model()})
        hosts = [self.successResultOf(d) for d in ds]
        self.assertTrue(all(h is hosts[0] for h in hosts))

    def test_configErrorIsItsOneLine(self):
        """The child's error is the answer, as one line; it is cached like a model."""
        d = self.reader.read()
        self.answer({"error": "/etc/h.tac:3: syntax error: invalid syntax"}, code=2)
        failure = self.failureResultOf(d, ConfigError)
        self.assertEqual(str(failure.value), "/etc/h.tac:3: syntax error: invalid syntax")
        self.failureResultOf(self.reader.read(), ConfigError)
        self.assertEqual(len(self.clock.spawned), 1)
        self.assertIsNone(self.reader.last)

    def test_hungChildIsKilledAtTheTimeLimit(self):
        """A child still running at the time limit is killed; the answer says so in one line."""
        d = self.reader.read()
        protocol, transport = self.clock.spawned[0][:2]
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.assertEqual(transport.signals, [])
        self.clock.advance(0.2)
        self.assertEqual(transport.signals, ["KILL", "close"])
        self.assertNoResult(d)  # until the child is gone
        _exit(protocol, 1, signal=9)
        failure = self.failureResultOf(d, ConfigError)
        self.assertEqual(str(failure.value), f"{self.path}: reading the config took more than 5 s "
                                             "(does it wait for something?); the reader was killed")

    def test_outputIsBounded(self):
        """A model larger than maxOutput kills the child; stdout is read and dropped; stderr keeps
        only its end, whose last line explains a child that answered nothing."""
        d = self.reader.read()
        protocol, transport = self.clock.spawned[0][:2]
        protocol.childDataReceived(1, b"x" * 1_000_000)  # the config printing: ignored
        protocol.childDataReceived(RESULT_FD, b"{" + b" " * 20_000)
        self.assertEqual(transport.signals, ["KILL", "close"])
        _exit(protocol, 1, signal=9)
        self.assertIn("larger than 10000 bytes", str(self.failureResultOf(d, ConfigError).value))

        d = self.reader.read(fresh=True)
        protocol = self.clock.spawned[1][0]
        protocol.childDataReceived(2, b"y" * 100_000 + b"\nTraceback...\nMemoryError\n")
        self.assertLessEqual(len(protocol.stderr), 8192)
        _exit(protocol, 1)
        self.assertEqual(str(self.failureResultOf(d, ConfigError).value),
                         f"{self.path}: the config reader failed (exit status 1): MemoryError")

    def test_spawnFailureIsAConfigError(self):
        """A reactor that cannot start the child answers one line too."""
        def refuse(*a, **kw):
            raise OSError("no more processes")

        self.clock.spawnProcess = refuse
        failure = self.failureResultOf(self.reader.read(), ConfigError)
        self.assertIn("cannot start the config reader: no more processes", str(failure.value))


_GOOD = """\
import sys
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy
print("hello from the config")  # on stdout: must not be taken for the model
host = Host(name="child", store="sqlite:x.db", var="var")
host.add(Deploy("web", command=[sys.executable, "-c", "pass"], numprocs=2, group="front"))
application = host.application()
"""


class RealChildTests(TestCase):
    """The real `python -m salvusctl.host.loading` child, spawned on the real reactor."""

    timeout = 30

    def write(self, text: str) -> str:
        path = os.path.abspath(self.mktemp() + ".tac")
        with open(path, "w") as f:
            f.write(text)
        return path

    @defer.inlineCallbacks
    def test_goodConfig(self):
        """The child's model has the deploy's name, group and instance count, and the host's
        names; relative paths resolve against this process's directory, as an in-process load."""
        path = self.write(_GOOD)
        host = yield ConfigReader(reactor, path).read()
        self.assertEqual((host.name, host.store_url), ("child", "sqlite:x.db"))
        self.assertEqual(host.var_dir, os.path.abspath("var"))
        [deploy] = host.declarations("supervisor")
        self.assertEqual((deploy.name, deploy.groupName, deploy.instanceNames()),
                         ("web", "front", ["web:0", "web:1"]))
        self.assertIn(path, host.sources)

    @defer.inlineCallbacks
    def test_brokenConfig(self):
        """A syntax error is the one line FILE:LINE: message, as loadHost gives it."""
        path = self.write(_GOOD.replace("numprocs=2", "numprocs=="))
        with self.assertRaises(ConfigError) as caught:
            yield ConfigReader(reactor, path).read()
        self.assertTrue(str(caught.exception).startswith(f"{path}:6: syntax error: "), caught.exception)
        self.assertEqual(len(str(caught.exception).splitlines()), 1)

    @defer.inlineCallbacks
    def test_exitingConfig(self):
        """A config that calls sys.exit answers no model: a clear line, not a hang."""
        path = self.write("import sys\nsys.stderr.write('bye\\n')\nsys.exit(7)\n")
        with self.assertRaises(ConfigError) as caught:
            yield ConfigReader(reactor, path).read()
        self.assertEqual(str(caught.exception), f"{path}: the config reader failed (exit status 7): bye")

    @defer.inlineCallbacks
    def test_hungConfigAndWhatItStartedAreKilled(self):
        """A config that hangs, having started a process of its own: both are killed at the limit."""
        marker = os.path.abspath(self.mktemp())
        path = self.write(
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            f"open({marker!r}, 'w').write(str(child.pid))\n"
            "time.sleep(600)\n"
        )
        reader = ConfigReader(reactor, path, timeout=1.0)
        with self.assertRaises(ConfigError) as caught:
            yield reader.read()
        self.assertIn("took more than 1 s", str(caught.exception))
        with open(marker) as f:
            grandchild = int(f.read())
        # killed with the group; an orphan is reaped by whoever adopted it
        from tests.helpers import waitFor

        def gone():
            try:
                with open(f"/proc/{grandchild}/stat") as f:
                    return f.read().split(")")[-1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        yield waitFor(gone, timeout=5)

    @defer.inlineCallbacks
    def test_whatAGoodConfigLeavesBehindIsKilled(self):
        """A config that answers but leaves a process running: it does not outlive the read."""
        marker = os.path.abspath(self.mktemp())
        path = self.write(
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            f"open({marker!r}, 'w').write(str(child.pid))\n" + _GOOD
        )
        host = yield ConfigReader(reactor, path).read()
        self.assertEqual(host.name, "child")
        with open(marker) as f:
            grandchild = int(f.read())
        from tests.helpers import waitFor

        def gone():
            try:
                with open(f"/proc/{grandchild}/stat") as f:
                    return f.read().split(")")[-1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        yield waitFor(gone, timeout=5)

    @defer.inlineCallbacks
    def test_aProcessThatLeftTheGroupCannotHoldTheReadOpen(self):
        """A config that starts a process in a session of its own (out of reach of the group kill)
        holding the child's pipes: the read still ends at the time limit."""
        marker = os.path.abspath(self.mktemp())
        path = self.write(
            "import os, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True)\n"
            f"open({marker!r}, 'w').write(str(child.pid))\n" + _GOOD
        )
        with self.assertRaises(ConfigError) as caught:
            yield ConfigReader(reactor, path, timeout=1.0).read()
        self.assertIn("took more than 1 s", str(caught.exception))
        with open(marker) as f:
            escaped = int(f.read())
        os.kill(escaped, 9)  # the test's own clean-up: nothing of the reader's could reach it

    @defer.inlineCallbacks
    def test_theChildSeesTheHostsEnvironment(self):
        """A config built from the environment (as the default host's worker env is) reads the
        same in the child as here: the reader changes nothing of it, PYTHONPATH included."""
        from salvusctl.host.loading import loadHost

        path = self.write(_GOOD.replace(
            'numprocs=2, group="front"',
            'env={k: v for k, v in __import__("os").environ.items() if k.startswith(("PYTHON", "PATH"))}'))
        here = describe(loadHost(path))
        there = yield ConfigReader(reactor, path).read()
        self.assertEqual([d.spec_digest for d in there.declarations("supervisor")],
                         [e["spec"] for e in here["declarations"] if e["component"] == "supervisor"])

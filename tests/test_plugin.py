"""The real command: C{twistd salvus} found as a plugin, one-line errors, daemon mode, -ny."""

from __future__ import annotations

import os
import signal
import textwrap

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.helpers import REPO, TWISTD, childEnv, waitFor


def twistd(*args: str, path: str | None = None):
    return getProcessOutputAndValue(
        TWISTD[0], TWISTD[1:] + list(args), env=childEnv(), path=path or REPO, reactor=reactor
    )


class PluginTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_helpListsOptions(self):
        """C{twistd -n salvus --help} finds the plugin and lists its options."""
        out, err, code = yield twistd("-n", "salvus", "--help")
        self.assertEqual(code, 0, err)
        self.assertIn(b"--config", out)
        self.assertIn(b"--store", out)

    @inlineCallbacks
    def test_badConfigOneLine(self):
        """A config that raises exits 1 with one line naming file and line, and no traceback."""
        tac = os.path.abspath(self.mktemp() + ".tac")
        with open(tac, "w") as f:
            f.write("from salvusctl.host import Host\nhost = Host('x', store='nosuch:db')\n")
        out, err, code = yield twistd("-n", "--pidfile=", "salvus", "--config", tac)
        self.assertEqual(code, 1, (out, err))
        self.assertIn(f"salvus: error: {tac}:2: unknown store URL".encode(), err)
        self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_missingConfig(self):
        out, err, code = yield twistd("-n", "--pidfile=", "salvus", "--config", "/nonexistent.tac")
        self.assertEqual(code, 1)
        self.assertIn(b"salvus: error: /nonexistent.tac: no such config file", err)
        self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_daemonModeWithPidfile(self):
        """Without -n, twistd daemonizes with a pidfile and the host keeps running (a seed bug)."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        tac = os.path.join(work, "host.tac")
        with open(tac, "w") as f:
            f.write(textwrap.dedent(f"""\
                from salvusctl.host import Host
                host = Host("daemon", store="sqlite:{work}/var/salvus.db", var="{work}/var")
                """))
        pidfile = os.path.join(work, "twistd.pid")
        logfile = os.path.join(work, "twistd.log")
        out, err, code = yield twistd(
            "--pidfile", pidfile, "--logfile", logfile, "salvus", "--config", tac, path=work
        )
        self.assertEqual(code, 0, (out, err))
        yield waitFor(lambda: os.path.exists(pidfile))
        pid = int(open(pidfile).read())
        yield waitFor(lambda: "store ready" in open(logfile).read())
        self.assertTrue(os.path.exists(os.path.join(work, "var", "salvus.db")))
        os.kill(pid, signal.SIGTERM)
        yield waitFor(lambda: not os.path.exists(pidfile), timeout=15)
        self.assertIn("Server Shut Down", open(logfile).read())

    @inlineCallbacks
    def test_nyTacFile(self):
        """C{twistd -ny host.tac} runs the same file: shown by a bad one failing in one line."""
        tac = os.path.abspath(self.mktemp() + ".tac")
        with open(tac, "w") as f:
            f.write(
                "from salvusctl.host import Host\n"
                "host = Host('x', store='sqlite:')\n"
                "application = host.application()\n"
            )
        out, err, code = yield twistd("-ny", tac, "--pidfile=")
        self.assertEqual(code, 1, (out, err))
        self.assertIn(b"salvus: error:", err)
        self.assertIn(b"names no database file", err)

    @inlineCallbacks
    def test_hangupReloadsTheConfig(self):
        """SIGHUP re-reads the --config file: an added deploy starts; a broken edit is logged in
        one line and the host keeps running."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        tac = os.path.join(work, "host.tac")
        head = textwrap.dedent(f"""\
            import sys
            from salvusctl.host import Host
            host = Host("hup", store="sqlite:{work}/var/salvus.db", var="{work}/var")
            """)
        with open(tac, "w") as f:
            f.write(head)
        pidfile = os.path.join(work, "twistd.pid")
        logfile = os.path.join(work, "twistd.log")
        out, err, code = yield twistd(
            "--pidfile", pidfile, "--logfile", logfile, "salvus", "--config", tac, path=work
        )
        self.assertEqual(code, 0, (out, err))
        yield waitFor(lambda: os.path.exists(pidfile))
        pid = int(open(pidfile).read())
        self.addCleanup(lambda: os.path.exists(pidfile) and os.kill(pid, signal.SIGTERM))
        yield waitFor(lambda: "store ready" in open(logfile).read())
        with open(tac, "w") as f:
            f.write(head + 'host.deploy("nap", [sys.executable, "-c", "import time; time.sleep(60)"])\n')
        os.kill(pid, signal.SIGHUP)
        yield waitFor(lambda: "config reloaded" in open(logfile).read())
        self.assertIn("'added': ['nap']", open(logfile).read())
        with open(tac, "w") as f:
            f.write(head + "host.deploy(\n")
        os.kill(pid, signal.SIGHUP)
        yield waitFor(lambda: "config not reloaded" in open(logfile).read())
        self.assertIn(f"config not reloaded: {tac}:4:", open(logfile).read())
        os.kill(pid, signal.SIGTERM)
        yield waitFor(lambda: not os.path.exists(pidfile), timeout=15)

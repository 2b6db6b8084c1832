"""Start-up errors: every kind of bad host file fails with one line naming the file and line."""

from __future__ import annotations

import os
import textwrap

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.host.loading import loadHost


class _Listener:
    """A minimal declaration that listens: enough to exercise the host's port-clash check."""

    component = "test-listener"

    def __init__(self, *endpoints, bad=None):
        self._endpoints = endpoints
        self._bad = bad

    def validate(self, host):
        if self._bad:
            raise ConfigError(self._bad)

    def endpoints(self):
        return list(self._endpoints)


class LoadHostTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = os.path.join(self.mktemp() + ".tac")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def assertConfigError(self, path: str, fragment: str, line: int | None = None) -> ConfigError:
        error = self.assertRaises(ConfigError, loadHost, path)
        self.assertIn(fragment, str(error))
        self.assertTrue(str(error).startswith(path), str(error))
        if line is not None:
            self.assertEqual(error.lineno, line, str(error))
            self.assertIn(f"{path}:{line}: ", str(error))
        self.assertNotIn("\n", str(error), "the operator gets one line, not a traceback")
        return error

    def test_missingFile(self):
        """A config path that does not exist names the path."""
        self.assertConfigError("/nonexistent/host.tac", "no such config file")

    def test_syntaxError(self):
        """A file that does not parse names the line of the syntax error."""
        path = self.write("from salvusctl.host import Host\nhost = Host(\n  name='x',,\n)\n")
        self.assertConfigError(path, "syntax error", line=3)

    def test_deployDeclaredTwiceNamesTheSecondLine(self):
        """A deploy name declared twice is reported at the second declaration, the one the
        operator added, not at the first, which was fine."""
        path = self.write("""\
            from salvusctl.host import Host
            from salvusctl.supervisor.deploy import Deploy
            host = Host("a", store="sqlite:/tmp/x.db", var="/tmp/x")
            host.add(Deploy("web", command=["/bin/true"]))
            host.add(Deploy("db", command=["/bin/true"]))
            host.add(Deploy("web", command=["/bin/true"]))
            """)
        host = loadHost(path)
        error = self.assertRaises(ConfigError, host.validate)
        self.assertEqual(str(error), f"{path}:6: deploy 'web' declared twice")

    def test_exceptionWhileRunning(self):
        """An exception raised by the file names the line that raised it."""
        path = self.write("""\
            from salvusctl.host import Host
            host = Host("a")
            x = 1 / 0
            """)
        self.assertConfigError(path, "ZeroDivisionError", line=3)

    def test_noHost(self):
        """A file that declares no host says so instead of starting nothing."""
        path = self.write("x = 1\n")
        self.assertConfigError(path, "defines no `host")

    def test_notUtf8(self):
        """Binary garbage is reported, not a UnicodeDecodeError traceback."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe\x00bad")
        self.assertConfigError(path, "cannot read config")

    def test_goodFile(self):
        """A valid file gives back its Host."""
        path = self.write("""\
            from salvusctl.host import Host
            host = Host("web1", store="sqlite:var/x.db")
            """)
        host = loadHost(path)
        self.assertEqual(host.name, "web1")


class ValidateTests(SynchronousTestCase):
    def test_badStoreURL(self):
        """An unknown store scheme is refused at build, naming the line that made the host."""
        host = Host("h", store="mongodb://x")
        error = self.assertRaises(ConfigError, host.build, Clock())
        self.assertIn("unknown store URL", str(error))
        self.assertIn("test_config.py", str(error))

    def test_portClash(self):
        """Two declarations on one port are refused, naming both lines."""
        host = Host("h", store="sqlite:" + self.mktemp())
        host.add(_Listener("tcp:8080"))
        host.add(_Listener("tcp:port=8080:interface=127.0.0.1"))
        error = self.assertRaises(ConfigError, host.validate)
        self.assertIn("listens on the same port", str(error))
        self.assertIn("test_config.py:", str(error))

    def test_ephemeralPortsNeverClash(self):
        """Port 0 asks the kernel for a free port: two of them are fine."""
        host = Host("h", store="sqlite:" + self.mktemp())
        host.add(_Listener("tcp:0"))
        host.add(_Listener("tcp:0"))
        host.validate()

    def test_badEndpoint(self):
        """An endpoint string Twisted cannot parse is refused with the string in the message."""
        host = Host("h", store="sqlite:" + self.mktemp())
        host.add(_Listener("tcp:port=1:bogus"))
        error = self.assertRaises(ConfigError, host.validate)
        self.assertIn("tcp:port=1:bogus", str(error))

    def test_declarationError(self):
        """A declaration's own validation error gets the .tac line that declared it."""
        host = Host("h", store="sqlite:" + self.mktemp())
        host.add(_Listener(bad="negative interval: -1"))
        error = self.assertRaises(ConfigError, host.validate)
        self.assertIn("negative interval", str(error))
        self.assertIsNotNone(error.lineno)

    def test_notADeclaration(self):
        """Adding something that is not a declaration fails at once."""
        host = Host("h")
        self.assertRaises(ConfigError, host.add, object())

    def test_emptyName(self):
        host = Host("  ", store="sqlite:" + self.mktemp())
        self.assertRaises(ConfigError, host.validate)

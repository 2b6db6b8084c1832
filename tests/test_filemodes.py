"""What the demo host leaves on disk: the bootstrap password in one 0600 file and never in a log,
and nothing under var/ (or twistd's own log) readable by other accounts."""

from __future__ import annotations

import os
import stat
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.admin.users import writePasswordFile
from salvusctl.tap import UMASK_BITS, tightenUmask
from tests.demohost import TWISTD_INT, Collect
from tests.helpers import childEnv, freePort

#: Files that hold a secret: owner-only, whatever the umask.
SECRETS = ("admin-users", "admin/admin.key", "admin/admin.password", "salvusctl.conf")


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class DemoHostFilesTests(TestCase):
    """A real C{twistd --logfile=twistd.log salvus}, as an operator would start it by hand."""

    timeout = 90

    @inlineCallbacks
    def test_passwordNeverInALogAndNoFileWorldReadable(self):
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        var, logfile = os.path.join(tmp, "var"), os.path.join(tmp, "twistd.log")
        env = childEnv(SALVUS_WEB_PORT=str(freePort()), SALVUS_ADMIN_PORT=str(freePort()),
                       SALVUS_ADMIN_HTTP_PORT=str(freePort()))
        proto = Collect()
        argv = TWISTD_INT + ["-n", "--pidfile=", f"--logfile={logfile}", "salvus", "--var", var]
        process = reactor.spawnProcess(proto, sys.executable, argv, env=env, path=tmp)

        def stop():
            if not proto.ended.called:
                process.signalProcess("INT")
                return proto.ended

        self.addCleanup(stop)

        def log() -> bytes:
            try:
                with open(logfile, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return b""

        deadline = reactor.seconds() + 40
        logs = os.path.join(var, "log", "supervisor")

        def started() -> bool:  # every service has started, and the workers have written
            return b"salvus demo: next, try:" in log() and os.path.isdir(logs) and bool(os.listdir(logs))

        while not started():
            self.assertFalse(proto.ended.called, proto.output + log()[-3000:])
            self.assertLess(reactor.seconds(), deadline, log()[-3000:])
            yield deferLater(reactor, 0.1, lambda: None)
        yield stop()

        secret = os.path.join(var, "admin", "admin.password")
        with open(secret) as f:
            password = f.read().strip()
        self.assertGreaterEqual(len(password), 16)
        text = log()
        self.assertIn(f"its password is in {secret} (mode 0600".encode(), text)
        self.assertNotIn(password.encode(), text)
        self.assertNotIn(password.encode(), proto.output)
        self.assertEqual(_mode(logfile), 0o640)

        holders = set()
        for root, dirs, files in os.walk(var):
            for name in dirs + files:
                path = os.path.join(root, name)
                self.assertEqual(_mode(path) & 0o027, 0, f"{path} is {oct(_mode(path))}")
                if name in files and stat.S_ISREG(os.lstat(path).st_mode):
                    with open(path, "rb") as f:
                        if password.encode() in f.read():
                            holders.add(os.path.relpath(path, var))
        self.assertEqual(holders, {"admin/admin.password", "salvusctl.conf"})
        for name in SECRETS:
            self.assertEqual(_mode(os.path.join(var, name)), 0o600, name)
        for path in [os.path.join(var, "salvus.db")] + [os.path.join(logs, n) for n in os.listdir(logs)]:
            self.assertEqual(_mode(path), 0o640, path)


class PasswordFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "admin")
        old = os.umask(0)  # the widest umask: the file's mode must not depend on it
        self.addCleanup(os.umask, old)

    def test_ownerOnlyAndReplacedWhole(self):
        path = writePasswordFile(self.dir, "admin", "first")
        self.assertEqual(path, os.path.join(self.dir, "admin.password"))
        self.assertEqual((_mode(path), _mode(self.dir)), (0o600, 0o700))
        writePasswordFile(self.dir, "admin", "second")
        with open(path) as f:
            self.assertEqual(f.read(), "second\n")
        self.assertEqual(os.listdir(self.dir), ["admin.password"])  # no temporary file left


class UmaskTests(SynchronousTestCase):
    def setUp(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)

    def test_tightensNeverLoosens(self):
        self.assertEqual(tightenUmask(), 0o027)
        self.assertEqual(UMASK_BITS, 0o027)
        os.umask(0o077)
        self.assertEqual(tightenUmask(), 0o077)

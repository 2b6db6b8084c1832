"""A store that cannot start stops the host: a real C{twistd -n salvus} exits 1 with one line.

A host that runs on without its store writes nothing and answers "store is closed" to everyone; a
service manager only restarts a host that exits.  Each test runs a real twistd child on a small
C{.tac} that declares only its store.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.helpers import childEnv, deadPort
from tests.store.pgtemp import POSTGRES_DSN, POSTGRES_SKIP

TAC = """\
from salvusctl.host import Host

host = Host("h1", store={url!r}, var={var!r})
application = host.application()
"""


class DamagedSQLiteTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_damagedPageIsFoundAtStartAndTheFileKept(self):
        """A file with a valid header but a garbled page fails start() with L{StoreCorrupt},
        before any write: found at start, not on some later read of that page."""
        import sqlite3

        from twisted.internet import reactor

        from salvusctl.store.errors import StoreCorrupt
        from salvusctl.store.sqlite import SQLiteStore

        path = os.path.abspath(self.mktemp())
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 100)
        conn.commit()
        conn.close()
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 4096)
        with open(path, "rb") as f:
            before = f.read()
        store = SQLiteStore(reactor, path)
        error = yield self.assertFailure(store.start(), StoreCorrupt)
        self.assertIn("is not a usable SQLite database (database disk image is malformed", str(error))
        self.assertFalse(store.running)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)


class StoreStartFailureTests(TestCase):
    timeout = 60

    def _tac(self, url: str) -> tuple[str, str]:
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        var = os.path.join(tmp, "var")
        path = os.path.join(tmp, "host.tac")
        with open(path, "w") as f:
            f.write(TAC.format(url=url, var=var))
        return tmp, path

    @inlineCallbacks
    def _twistd(self, url: str, plain: bool = False):
        tmp, tac = self._tac(url)
        argv = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        argv += ["-y", tac] if plain else ["salvus", "--config", tac]
        out, err, code = yield getProcessOutputAndValue(sys.executable, argv, env=childEnv(), path=tmp)
        return tmp, out.decode(), err.decode().strip().splitlines(), code

    @inlineCallbacks
    def test_unwritableSQLitePathExitsWithOneLine(self):
        """A store path that cannot be created (its parent is a file) is one line and status 1."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        blocker = os.path.join(tmp, "notadir")
        with open(blocker, "w") as f:
            f.write("x")
        _, out, err, code = yield self._twistd(f"sqlite:{blocker}/salvus.db")
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err), 1, err)
        self.assertTrue(err[0].startswith(f"salvus: error: store sqlite:{blocker}/salvus.db: cannot"), err)
        self.assertIn("notadir: it is not a directory", err[0])

    @inlineCallbacks
    def test_corruptSQLiteFileRefusesToStartAndIsKept(self):
        """A file that is not a database is named as such, the host exits 1, and the file keeps
        every byte (it may be all the history there is)."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        path = os.path.join(tmp, "salvus.db")
        garbage = b"this is not an sqlite database\n" * 200
        with open(path, "wb") as f:
            f.write(garbage)
        _, out, err, code = yield self._twistd(f"sqlite:{path}")
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"{path} is not a usable SQLite database", err[0])
        self.assertIn("left untouched", err[0])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), garbage)
        self.assertFalse(os.path.exists(path + "-wal"))

    @inlineCallbacks
    def test_corruptSQLiteFileUnderTwistdY(self):
        """The same through C{twistd -ny host.tac} (the file's own C{host.application()})."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        path = os.path.join(tmp, "salvus.db")
        with open(path, "wb") as f:
            f.write(b"garbage" * 1000)
        _, out, err, code = yield self._twistd(f"sqlite:{path}", plain=True)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err), 1, err)
        self.assertIn("is not a usable SQLite database", err[0])

    @inlineCallbacks
    def test_unreachablePostgresWithStartTimeoutExits(self):
        """With C{start_timeout}, a server still unreachable after it is one line and status 1
        (without it the host waits and queues, which the outage tests cover)."""
        port = deadPort()
        url = f"postgresql://postgres@127.0.0.1:{port}/salvus?start_timeout=1"
        _, out, err, code = yield self._twistd(url)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err), 1, err)
        self.assertIn(f"store postgresql://postgres@127.0.0.1:{port}/salvus not reachable within 1s",
                      err[0])

    @inlineCallbacks
    def test_refusingPostgresExits(self):
        """A server that refuses the host (no such database) is one line and status 1, at once."""
        if POSTGRES_SKIP:
            self.skipTest(POSTGRES_SKIP)
        from urllib.parse import urlsplit, urlunsplit

        url = urlunsplit(urlsplit(POSTGRES_DSN)._replace(path="/salvus_no_such_database"))
        _, out, err, code = yield self._twistd(url)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err), 1, err)
        self.assertIn("refused the connection", err[0])
        self.assertIn("salvus_no_such_database", err[0])

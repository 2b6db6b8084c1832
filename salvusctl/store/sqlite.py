"""The embedded default store: one SQLite file in WAL mode, driven from one dedicated thread.

SQLite's API blocks, so every call runs on a single worker thread owned by this store (one
connection, serialised access — which is also what SQLite wants for writes).  The reactor thread
never touches the connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from salvusctl.interfaces import IStore
from salvusctl.store.dialects import SQLITE
from salvusctl.store.domain import DomainQueries
from salvusctl.store.errors import StoreClosed, StoreCorrupt, StoreError
from salvusctl.store.migrations import CORE_MIGRATIONS, MIGRATIONS_TABLE, Migration
from salvusctl.store.sql import checkChannel

__all__ = ["SQLiteStore"]

log = Logger()


class _Cursor:
    """The cursor handed to C{runInteraction} functions: sqlite3's, plus C{?} on both backends."""

    def __init__(self, cursor: sqlite3.Cursor):
        self._cursor = cursor

    def execute(self, sql: str, args: Any = ()) -> _Cursor:
        self._cursor.execute(sql, args)
        return self

    def executemany(self, sql: str, seq: Any) -> _Cursor:
        self._cursor.executemany(sql, seq)
        return self

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()

    @property
    def lastrowid(self):
        return self._cursor.lastrowid

    @property
    def rowcount(self):
        return self._cursor.rowcount


def _settled(result: Any) -> Any:
    """The value of an interaction written for both stores (an C{inlineCallbacks} generator).

    On this store every C{cursor.execute} returns at once, so such an interaction has finished by
    the time it returns its Deferred: take the value (or raise the error) out of it.
    """
    if not isinstance(result, Deferred):
        return result
    box: list[Any] = []
    result.addBoth(box.append)
    if not box:
        raise StoreError(
            "interaction waited for something other than its cursor: on SQLite it runs in the"
            " store's thread and can only wait for cursor.execute"
        )
    outcome = box[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


def _isCorrupt(error: sqlite3.Error) -> bool:
    """SQLITE_NOTADB or SQLITE_CORRUPT: the file's bytes are not a database sqlite can read."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    text = str(error)
    return "not a database" in text or "malformed" in text


@implementer(IStore)
class SQLiteStore(DomainQueries):
    """An L{IStore} in one SQLite file.

    @param reactor: the reactor whose thread pool machinery delivers results.
    @param path: the database file; its directory is created if missing.
    """

    dialect = "sqlite"
    sql = SQLITE

    def __init__(self, reactor, path: str, busy_timeout_ms: int = 10000):
        self._reactor = reactor
        self.path = path
        self.url = f"sqlite:{path}"
        self._busy_timeout_ms = busy_timeout_ms
        self._migrations: dict[str, list[Migration]] = {"core": list(CORE_MIGRATIONS)}
        self._listeners: dict[str, list[Callable[[str], Any]]] = defaultdict(list)
        self._pool: ThreadPool | None = None
        self._conn: sqlite3.Connection | None = None
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        if self.running:
            return
        if self.path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                why = "it is not a directory" if os.path.exists(directory) else e.strerror
                raise StoreError(f"store {self.url}: cannot create {directory}: {why}")
        self._pool = ThreadPool(1, 1, name="salvus-sqlite")
        self._pool.start()
        self.running = True
        try:
            # One call: anything queued behind it on the store's thread sees a migrated schema.
            yield self._call(self._openAndMigrate)
        except BaseException:
            yield self.close()
            raise
        log.info("store ready: {url}", url=self.url)

    def _openAndMigrate(self) -> None:
        self._open()
        self._migrate()

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse a damaged file at start rather than fail on some later read of a bad page.

        Run before anything could write (the switch to WAL rewrites the header): C{quick_check}
        reads every page once (about a second per GB here) and writes nothing.
        """
        try:
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as e:
            raise self._cannotOpen(e)
        if problem != "ok":
            problem = " ".join(str(problem).split())
            raise self._cannotOpen(sqlite3.DatabaseError(f"database disk image is malformed: {problem}"))

    def _open(self) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite does not wait for through
        # its busy handler: when another host opens the same file at the same moment, retry here,
        # on the store's own thread (so nothing queued behind the open runs before it), for at most
        # the busy timeout.
        pause = threading.Event()
        waited = 0.0
        existed = self.path != ":memory:" and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        while True:
            conn = None
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                if existed:
                    self._check(conn)
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except StoreError:
                conn.close()
                raise
            except sqlite3.OperationalError as e:
                if conn is not None:
                    conn.close()
                if "locked" not in str(e) or waited * 1000 >= self._busy_timeout_ms:
                    raise self._cannotOpen(e)
                pause.wait(0.02)
                waited += 0.02
            except sqlite3.Error as e:
                if conn is not None:
                    conn.close()
                raise self._cannotOpen(e)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn

    def _cannotOpen(self, error: sqlite3.Error) -> StoreError:
        """The one line an operator reads when the file cannot be used; a corrupt file says so.

        A corrupt file is never replaced or written to: it may be all the history there is, and
        the operator decides (restore a backup, salvage it with C{sqlite3 .recover}, move it away).
        """
        where = os.path.abspath(self.path)
        if _isCorrupt(error):
            return StoreCorrupt(
                f"store {self.url}: {where} is not a usable SQLite database ({error});"
                " it is left untouched: restore it from a backup or move it away to start afresh"
            )
        return StoreError(f"store {self.url}: cannot open {where}: {error}")

    def _migrate(self) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (component TEXT NOT NULL,"
                " version INTEGER NOT NULL, description TEXT, applied_at DOUBLE PRECISION,"
                " PRIMARY KEY (component, version))"
            )
            done = set(conn.execute(f"SELECT component, version FROM {MIGRATIONS_TABLE}"))
            for component, steps in self._migrations.items():
                for step in sorted(steps, key=lambda s: s.version):
                    if (component, step.version) in done:
                        continue
                    try:
                        for statement in step.statements(self.sql):
                            conn.execute(statement)
                    except sqlite3.Error as e:
                        raise StoreError(
                            f"store {self.url}: migration {component} {step.version}"
                            f" ({step.description}) failed: {e}"
                        )
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?, strftime('%s','now'))",
                        (component, step.version, step.description),
                    )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._cannotOpen(e)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> Deferred:
        if not self.running or self._pool is None:
            return succeed(None)
        self.running = False
        pool = self._pool

        def closeConn():
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        d = deferToThreadPool(self._reactor, pool, closeConn)

        def stopPool(result):
            self._pool = None
            # The worker thread is idle now: joining it is immediate.
            pool.stop()
            return result

        return d.addBoth(stopPool)

    # -- primitives ------------------------------------------------------------------------------

    def _call(self, fn, *args, **kwargs) -> Deferred:
        if self._pool is None or not self.running:
            raise StoreClosed(f"store {self.url} is not running")
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreClosed(f"store {self.url} is closed")
        return conn

    def _query(self, sql: str, args: Any) -> list[tuple]:
        return self._connection().execute(sql, args).fetchall()

    def _interaction(self, fn, args, kwargs):
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _settled(fn(_Cursor(conn.cursor()), *args, **kwargs))
        except BaseException:
            # SQLite may already have rolled back (a full disk, an interrupted statement):
            # a second ROLLBACK would hide the original error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def runQuery(self, sql: str, args: Any = ()) -> Deferred:
        return self._maybe(lambda: self._call(self._query, sql, args))

    def runOperation(self, sql: str, args: Any = ()) -> Deferred:
        d = self._maybe(lambda: self._call(self._interaction, lambda c: c.execute(sql, args), (), {}))
        return d.addCallback(lambda _: None)

    def runInteraction(self, fn, *args, **kwargs) -> Deferred:
        return self._maybe(lambda: self._call(self._interaction, fn, args, kwargs))

    def _maybe(self, thunk) -> Deferred:
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(thunk)

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Plain data for the admin, with the keys the PostgreSQL store's C{stats()} shares."""
        queued = self._pool.q.qsize() if self._pool is not None else 0
        return {
            "url": self.url,
            "connections": 1 if self._conn is not None else 0,
            "up": 1 if self._conn is not None else 0,
            "queued_reads": 0,
            "queued_writes": queued,
            "outage": False,
            "listening": sorted(c for c, cbs in self._listeners.items() if cbs),
        }

    # -- notifications ---------------------------------------------------------------------------

    def notify(self, channel: str, payload: str) -> Deferred:
        """In-process delivery: one SQLite file has one host."""
        checkChannel(channel)
        for callback in list(self._listeners.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                log.failure("listener of {channel} failed", channel=channel)
        return succeed(None)

    def listen(self, channel: str, callback: Callable[[str], Any]) -> Deferred:
        checkChannel(channel)
        self._listeners[channel].append(callback)
        return succeed(None)

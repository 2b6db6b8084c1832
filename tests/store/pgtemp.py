"""A throw-away PostgreSQL database per test, made from C{SALVUS_TEST_POSTGRES}.

Several people share the server: every test works in its own C{salvus_t_<random>} database,
dropped at the end, never in fixed tables of the shared one.  The set-up talks to the server with
plain blocking psycopg2: it is fixture code, run before and after the reactor does its work.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

__all__ = ["POSTGRES_DSN", "POSTGRES_SKIP", "TempDatabase", "waitUntil"]

POSTGRES_DSN = os.environ.get("SALVUS_TEST_POSTGRES", "")

POSTGRES_SKIP = (
    None
    if POSTGRES_DSN
    else "!!! SALVUS_TEST_POSTGRES is unset: the PostgreSQL store tests DID NOT RUN. Set it to a"
    " DSN such as postgresql://postgres@127.0.0.1:5432/test (.ci/run does) !!!"
)


class TempDatabase:
    """Create C{salvus_t_<random>} on the server C{SALVUS_TEST_POSTGRES} names; drop it after."""

    def __init__(self, dsn: str = POSTGRES_DSN):
        self.dsn = dsn
        self.name = "salvus_t_" + secrets.token_hex(6)
        parts = urlsplit(dsn)
        self.url = urlunsplit(parts._replace(path="/" + self.name))
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = parts.username or ""

    def _admin(self):
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    def _adminExecute(self, sql: str) -> None:
        """One statement in the server's own database (CREATE/DROP DATABASE cannot run in ours)."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> TempDatabase:
        self._adminExecute(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._adminExecute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def urlOnPort(self, port: int) -> str:
        """The database's URL through another port (a proxy, or nothing listening)."""
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}127.0.0.1:{port}/{self.name}"

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """A blocking query in the temporary database (for assertions)."""
        import psycopg2

        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def backends(self, application_name: str = "salvus") -> list[int]:
        """Server pids of the store's connections to this database."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    (self.name, application_name),
                )
                return [row[0] for row in cur.fetchall()]
        finally:
            conn.close()

    def terminate(self, application_name: str = "salvus") -> int:
        """Kill every backend of the store on this database, as a server restart would."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = %s",
                    (self.name, application_name),
                )
                return cur.fetchone()[0]
        finally:
            conn.close()


def waitUntil(reactor, predicate, timeout: float = 15.0, step: float = 0.01):
    """Fire (with True) once C{predicate()} holds, polling on the reactor; False after C{timeout}.

    For conditions that live in another process (a backend exiting, a socket being noticed):
    fast when the machine is idle, patient when its cores are shared.
    """
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.task import deferLater

    @inlineCallbacks
    def poll():
        deadline = reactor.seconds() + timeout
        while not predicate():
            if reactor.seconds() > deadline:
                return False
            yield deferLater(reactor, step, lambda: None)
        return True

    return poll()

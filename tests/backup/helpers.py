"""Shared fixtures: throwaway PostgreSQL and MariaDB databases, a started SQLite store."""

from __future__ import annotations

import os
import secrets
import subprocess
from urllib.parse import urlsplit

from twisted.trial.unittest import SkipTest

from salvusctl.backup.records import BACKUP_MIGRATIONS
from salvusctl.store.sqlite import SQLiteStore

__all__ = ["postgresURL", "TempPostgres", "TempMariaDB", "makeStore", "writeFile", "tempPath"]


def tempPath(testcase, name: str = "temp") -> str:
    """A path (not yet created) in a fresh system temporary directory, removed at cleanup.

    Trial's C{mktemp} is relative to the working directory, which under pytest is the checkout.
    """
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="salvus-backup-test-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


def postgresURL() -> str:
    """The server URL from SALVUS_TEST_POSTGRES, or skip loudly."""
    url = os.environ.get("SALVUS_TEST_POSTGRES")
    if not url:
        raise SkipTest(
            "SALVUS_TEST_POSTGRES is unset: set it (e.g. postgresql://postgres@127.0.0.1:5432/test)"
            " to run the pg_dump/pg_restore backup tests"
        )
    return url


class TempPostgres:
    """A database of our own on the test server: created here, dropped (with leftovers) at cleanup."""

    def __init__(self, testcase):
        parts = urlsplit(postgresURL())
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.name = "salvus_t_" + secrets.token_hex(4)
        self.psql("postgres", f"CREATE DATABASE {self.name}")
        testcase.addCleanup(self.dropAll)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"

    def psql(self, db: str, sql: str) -> str:
        out = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
             "-U", self.user, "-d", db, "-c", sql],
            capture_output=True, text=True, check=False, timeout=60,
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def query(self, sql: str) -> str:
        return self.psql(self.name, sql)

    def databases(self) -> list[str]:
        return self.psql(
            "postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{self.name}%' ORDER BY 1"
        ).split()

    def dropAll(self) -> None:
        for name in self.databases():
            self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TempMariaDB:
    """A MariaDB database of our own (root, no password, 127.0.0.1:3306)."""

    host = "127.0.0.1"
    port = 3306

    def __init__(self, testcase):
        probe = subprocess.run(["mysql", "-h", self.host, "-uroot", "-e", "SELECT 1"],
                               capture_output=True, check=False, timeout=30)
        if probe.returncode:
            raise SkipTest(f"MariaDB at 127.0.0.1:3306 is not reachable: {probe.stderr!r}")
        self.name = "salvus_t_" + secrets.token_hex(4)
        self.sql(f"CREATE DATABASE {self.name}")
        testcase.addCleanup(self.dropAll)

    @property
    def url(self) -> str:
        return f"mysql://root@{self.host}:{self.port}/{self.name}"

    def sql(self, sql: str, db: str | None = None) -> str:
        argv = ["mysql", "-h", self.host, "-uroot", "--batch", "--skip-column-names"]
        if db:
            argv.append(db)
        out = subprocess.run(argv + ["-e", sql], capture_output=True, text=True, check=False, timeout=60)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def query(self, sql: str) -> str:
        return self.sql(sql, self.name)

    def databases(self) -> list[str]:
        names = self.sql("SHOW DATABASES").split()
        return sorted(n for n in names if n.startswith(self.name))

    def dropAll(self) -> None:
        for name in self.databases():
            self.sql(f"DROP DATABASE IF EXISTS `{name}`")


def makeStore(testcase, reactor, path: str | None = None) -> SQLiteStore:
    """A SQLite store with the backup tables (call C{start()} yourself); closed at cleanup."""
    store = SQLiteStore(reactor, path or tempPath(testcase, "store.db"))
    store.addMigrations("backup", BACKUP_MIGRATIONS)
    testcase.addCleanup(store.close)
    return store


def writeFile(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

"""Shared fixtures: throwaway PostgreSQL and MariaDB databases, a started SQLite store."""

from __future__ import annotations

import os
import secrets
import subprocess
from urllib.parse import urlsplit

from twisted.trial.unittest import SkipTest

from salvusctl.backup.records import BACKUP_MIGRATIONS
from salvusctl.store.sqlite import SQLiteStore
from tests.helpers import freePort

__all__ = ["postgresURL", "TempPostgres", "TempMariaDB", "TempSshd", "makeStore", "writeFile", "tempPath"]


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


class TempSshd:
    """A private OpenSSH server on 127.0.0.1 and an ephemeral port, with its own host key and a
    client key authorised for the current user: the remote backup destination, for real.

    C{ssh} is the remote shell to give rsync (C{Backup(ssh=...)}), C{target} the C{user@host}
    part of a destination.  Skips (loudly) where Debian's openssh-server is not installed.
    """

    SSHD = "/usr/sbin/sshd"

    def __init__(self, testcase, directory: str):
        import pwd
        import shutil

        if not os.path.exists(self.SSHD) or not shutil.which("ssh"):
            raise SkipTest("sshd/ssh not installed (Debian openssh-server, openssh-client): the remote "
                           "backup destination cannot be tested over a real ssh")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        hostKey = os.path.join(directory, "host_ed25519")
        self.clientKey = os.path.join(directory, "client_ed25519")
        for key in (hostKey, self.clientKey):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        authorized = os.path.join(directory, "authorized_keys")
        shutil.copyfile(self.clientKey + ".pub", authorized)
        os.chmod(authorized, 0o600)
        # sshd needs its privilege-separation directory even when run by hand.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = freePort()
        config = os.path.join(directory, "sshd_config")
        with open(config, "w") as f:
            f.write(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {hostKey}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {authorized}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowUsers {self.user}
""")
        log = open(os.path.join(directory, "sshd.log"), "wb")
        self.process = subprocess.Popen([self.SSHD, "-D", "-e", "-f", config], stdout=log, stderr=log)
        log.close()
        testcase.addCleanup(self.stop)
        self.ssh = (f"ssh -p {self.port} -i {self.clientKey} -o BatchMode=yes "
                    f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
        self.target = f"{self.user}@127.0.0.1"

    def ready(self) -> bool:
        """True once sshd accepts connections (poll it with waitFor)."""
        import socket

        if self.process.poll() is not None:
            raise AssertionError(f"sshd exited {self.process.returncode}: {self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        with open(os.path.join(self.directory, "sshd.log"), errors="replace") as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

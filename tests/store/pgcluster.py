"""A private, throw-away PostgreSQL server for the one test that restarts a server for real.

The shared server must not be restarted under other people's tests, so this makes a cluster of
its own in a temporary directory (C{initdb}, about a second), on a free port, and drives it with
C{pg_ctl} run as child processes of the reactor (never blocking it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from tests.helpers import freePort

__all__ = ["PrivateCluster", "CLUSTER_SKIP"]


def _binDir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _skipReason() -> str | None:
    if _binDir() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): restart test NOT RUN"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user (initdb refuses root): NOT RUN"
        if shutil.which("runuser") is None:
            return "running as root without runuser: restart test NOT RUN"
    return None


CLUSTER_SKIP = _skipReason()


class PrivateCluster:
    """initdb + pg_ctl start/restart/stop on 127.0.0.1:<free port>, trust auth."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.bin = _binDir()
        self.dir = tempfile.mkdtemp(prefix="salvus-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = freePort()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str):
        argv = [os.path.join(self.bin, program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return getProcessOutputAndValue(
            argv[0] if argv[0].startswith("/") else shutil.which(argv[0]),
            argv[1:],
            env={"PATH": os.environ.get("PATH", "")},
            path=self.dir,
            reactor=self.reactor,
        )

    @inlineCallbacks
    def _check(self, program: str, *args: str):
        out, err, code = yield self._run(program, *args)
        if code != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited {code}: {err.decode()[-500:]}")
        return out

    def _options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    @inlineCallbacks
    def start(self):
        yield self._check("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        yield self._check("pg_ctl", "-D", self.data, "-l", self.log, "-o", self._options(), "-w", "start")

    def restart(self, mode: str = "fast"):
        """A real restart: the server ends every connection, refuses new ones, then comes back.

        @param mode: C{fast} (clients are told) or C{immediate} (as after a crash: backends are
            killed and the server recovers from its WAL on the way up).
        """
        return self._check(
            "pg_ctl", "-D", self.data, "-l", self.log, "-o", self._options(), "-m", mode, "-w", "restart"
        )

    def stop(self, mode: str = "fast"):
        """Stop the server (its clients lose their connections and cannot reconnect)."""
        return self._check("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def resume(self):
        """Start the stopped server again on the same port and data directory."""
        return self._check("pg_ctl", "-D", self.data, "-l", self.log, "-o", self._options(), "-w", "start")

    @inlineCallbacks
    def destroy(self):
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                yield self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

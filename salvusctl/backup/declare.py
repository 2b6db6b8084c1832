"""The C{Backup} declaration a host's C{.tac} adds: what to back up, where to, when, how many to keep.

Example::

    host.add(Backup(
        "main",
        postgres=["postgresql://postgres@127.0.0.1:5432/shop"],
        mysql=["mysql://root@127.0.0.1:3306/wiki"],
        paths={"uploads": "/srv/shop/uploads"},
        deploys=["db-migrate", "shop"],          # start order; stopped in reverse for a restore
        destination="/var/backups/salvus",       # or "backup@vault:/srv/backups/salvus"
        daily="03:30",
        keep=Retention(hourly=24, daily=7, weekly=4),
    ))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from salvusctl.backup.retention import Retention
from salvusctl.backup.rsync import Location, parseLocation
from salvusctl.backup.schedule import Schedule, parseSchedule
from salvusctl.errors import ConfigError

__all__ = ["Backup", "Database", "parseDatabase", "Retention"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Database:
    """One database to dump: C{kind} is C{'postgresql'} or C{'mysql'}."""

    kind: str
    name: str
    host: str = "127.0.0.1"
    port: int = 0
    user: str = ""
    password: str = ""

    @property
    def key(self) -> str:
        """How the run's manifest and dump file name this database."""
        return f"{self.kind}-{self.name}"

    def url(self) -> str:
        """The URL without its password (stored in manifests and logs)."""
        scheme = "postgresql" if self.kind == "postgresql" else "mysql"
        user = f"{self.user}@" if self.user else ""
        return f"{scheme}://{user}{self.host}:{self.port}/{self.name}"


def parseDatabase(url: str, kind: str) -> Database:
    """Parse C{postgresql://user[:pw]@host[:port]/db} or C{mysql://…/db}; ValueError if bad."""
    if not isinstance(url, str):
        raise ValueError(f"database must be a URL string, not {url!r}")
    parts = urlsplit(url)
    schemes = {"postgresql": ("postgresql", "postgres"), "mysql": ("mysql", "mariadb")}[kind]
    if parts.scheme not in schemes:
        raise ValueError(f"{url!r} is not a {schemes[0]}:// URL")
    name = unquote(parts.path.lstrip("/"))
    if not _DBNAME.match(name):
        raise ValueError(f"{url!r} names no usable database (letters, digits, _ only)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a bad port")
    default_port = 5432 if kind == "postgresql" else 3306
    return Database(
        kind=kind,
        name=name,
        host=parts.hostname or "127.0.0.1",
        port=port or default_port,
        user=unquote(parts.username or ("postgres" if kind == "postgresql" else "root")),
        password=unquote(parts.password or ""),
    )


class Backup:
    """Declare one backup set.

    @param name: names the set (run ids start with it); letters, digits, C{._-}.
    @param postgres: PostgreSQL database URLs, dumped with C{pg_dump -Fc}.
    @param mysql: MariaDB/MySQL database URLs, dumped with C{mysqldump --single-transaction}.
    @param paths: directories to snapshot, C{{label: path}} (a deploy's directory, uploads …).
    @param deploys: deploys that use this data, in start (dependency) order: a restore stops them
        in reverse order and starts them again in this order.
    @param destination: an absolute local directory or C{[user@]host:/absolute/path} (over ssh).
    @param every: run every N seconds; or C{daily="HH:MM"} (UTC); neither: only on demand.
    @param keep: a L{Retention}; default keeps everything.
    @param ssh: the remote shell rsync uses for a remote destination (C{rsync -e}).
    @param rsync_args: extra rsync options for file snapshots (e.g. C{["--bwlimit=10m"]}).
    """

    component = "backup"

    def __init__(
        self,
        name: str,
        destination: str,
        postgres: list[str] | tuple[str, ...] = (),
        mysql: list[str] | tuple[str, ...] = (),
        paths: dict[str, str] | None = None,
        deploys: list[str] | tuple[str, ...] = (),
        every: float | None = None,
        daily: str | None = None,
        keep: Retention | None = None,
        ssh: str = "ssh",
        rsync_args: list[str] | tuple[str, ...] = (),
    ):
        self.name = name
        self.destination_text = destination
        self.postgres_urls = list(postgres)
        self.mysql_urls = list(mysql)
        self.paths = dict(paths or {})
        self.deploys = list(deploys)
        self._every = every
        self._daily = daily
        self.keep = keep if keep is not None else Retention()
        self.ssh = ssh
        self.rsync_args = list(rsync_args)
        # Parsed by validate(); kept None until then so a bad .tac fails at validate time.
        self.databases: list[Database] = []
        self.destination: Location | None = None
        self.schedule: Schedule | None = None

    def __repr__(self) -> str:
        return f"<Backup {self.name!r} to {self.destination_text!r}>"

    def validate(self, host=None) -> None:
        """Parse and check every field; raise L{ConfigError} with the first problem."""
        try:
            self._validate()
        except ValueError as e:
            raise ConfigError(f"backup {self.name!r}: {e}")

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError("name must be letters, digits, '.', '_' or '-'")
        self.destination = parseLocation(self.destination_text, ssh=self.ssh)
        databases = [parseDatabase(u, "postgresql") for u in self.postgres_urls]
        databases += [parseDatabase(u, "mysql") for u in self.mysql_urls]
        keys = [d.key for d in databases]
        if len(set(keys)) != len(keys):
            raise ValueError("the same database is listed twice")
        self.databases = databases
        for label, path in self.paths.items():
            if not isinstance(label, str) or not _NAME.match(label):
                raise ValueError(f"path label {label!r} must be letters, digits, '.', '_' or '-'")
            if not isinstance(path, str) or not os.path.isabs(path):
                raise ValueError(f"path {label!r} must be an absolute directory, not {path!r}")
        if not databases and not self.paths:
            raise ValueError("nothing to back up: give postgres=, mysql= or paths=")
        for deploy in self.deploys:
            if not isinstance(deploy, str) or not deploy:
                raise ValueError(f"deploy names must be strings, not {deploy!r}")
        self.schedule = parseSchedule(self._every, self._daily)
        if not isinstance(self.keep, Retention):
            raise ValueError(f"keep= must be a Retention, not {self.keep!r}")
        self.keep.validate()
        if not all(isinstance(a, str) for a in self.rsync_args):
            raise ValueError("rsync_args must be strings")

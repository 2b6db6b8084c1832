"""Command lines for the database clients (pg_dump, pg_restore, psql, mysqldump, mysql) and the
small stream parsers that count rows in a dump as it goes by.

Everything here builds argv lists and environment dicts; the runner executes them.  Passwords go
through the environment (C{PGPASSWORD}, C{MYSQL_PWD}), never the argv that C{ps} shows.
"""

from __future__ import annotations

import re
from collections import Counter

from salvusctl.backup.declare import Database

__all__ = [
    "clientEnv",
    "pgDumpCommand",
    "pgRestoreCommand",
    "pgDataSqlCommand",
    "psqlCommand",
    "mysqldumpCommand",
    "mysqlCommand",
    "quotePg",
    "quoteMy",
    "PgCopyCounter",
    "MysqlInsertCounter",
    "parseCounts",
    "countQuery",
]


def clientEnv(db: Database) -> dict[str, str]:
    """The environment that carries the password to the client programs."""
    if not db.password:
        return {}
    return {"PGPASSWORD": db.password} if db.kind == "postgresql" else {"MYSQL_PWD": db.password}


def _pgConn(db: Database, dbname: str) -> list[str]:
    return ["-h", db.host, "-p", str(db.port), "-U", db.user, "-d", dbname]


def pgDumpCommand(db: Database) -> list[str]:
    """C{pg_dump -Fc} to stdout (the runner writes and hashes it in one pass)."""
    return ["pg_dump", "-Fc", "--no-password"] + _pgConn(db, db.name)


def pgRestoreCommand(db: Database, target: str, dump_path: str) -> list[str]:
    """Load a custom-format dump into an existing, empty database C{target}."""
    return ["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "--no-password"] + _pgConn(
        db, target
    ) + [dump_path]


def pgDataSqlCommand(dump_path: str) -> list[str]:
    """Print a dump's data as SQL (C{COPY} blocks) without a server: used to count rows."""
    return ["pg_restore", "--data-only", "-f", "-", dump_path]


def psqlCommand(
    db: Database, statements: list[str], dbname: str = "postgres", single: bool = True
) -> list[str]:
    """psql running C{statements} (one transaction when C{single}), unaligned tuples-only output."""
    argv = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "--no-password"]
    argv += _pgConn(db, dbname)
    if single:
        argv.append("-1")
    for statement in statements:
        argv += ["-c", statement]
    return argv


def mysqldumpCommand(db: Database) -> list[str]:
    """C{mysqldump --single-transaction}, one INSERT per row so the dump's rows can be counted."""
    return [
        "mysqldump",
        "--single-transaction",
        "--skip-extended-insert",
        "--routines",
        "--triggers",
        "--no-tablespaces",
        "-h",
        db.host,
        "-P",
        str(db.port),
        "-u",
        db.user,
        db.name,
    ]


def mysqlCommand(db: Database, sql: str, dbname: str | None = None) -> list[str]:
    """The mysql client running C{sql} in batch mode (tab-separated, no headers)."""
    argv = ["mysql", "--batch", "--skip-column-names", "-h", db.host, "-P", str(db.port), "-u", db.user]
    if dbname:
        argv.append(dbname)
    return argv + ["-e", sql]


def quotePg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quoteMy(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _unquotePg(name: str) -> str:
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', name)
    return ".".join(q.replace('""', '"') if q else p for q, p in parts)


class _LineCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            self.line(line)

    def finish(self) -> dict[str, int]:
        if self._buffer:
            self.line(self._buffer)
            self._buffer = b""
        return dict(self.counts)

    def line(self, line: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class PgCopyCounter(_LineCounter):
    """Counts data lines of each C{COPY schema.table (...) FROM stdin;} block (C{\\.} ends one)."""

    _COPY = re.compile(rb"^COPY (.+?) (?:\(.*\) )?FROM stdin;$")

    def __init__(self) -> None:
        super().__init__()
        self._table: str | None = None

    def line(self, line: bytes) -> None:
        if self._table is not None:
            if line == b"\\.":
                self._table = None
            else:
                self.counts[self._table] += 1
            return
        match = self._COPY.match(line)
        if match:
            self._table = _unquotePg(match.group(1).decode("utf-8", "replace"))
            self.counts.setdefault(self._table, 0)


class MysqlInsertCounter(_LineCounter):
    """Counts C{INSERT INTO `t` VALUES} lines (the dump has one row per INSERT); tables with
    no rows are seen through their C{CREATE TABLE} line."""

    _INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES ")
    _CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")

    def line(self, line: bytes) -> None:
        match = self._INSERT.match(line)
        if match:
            self.counts[match.group(1).decode("utf-8", "replace").replace("``", "`")] += 1
            return
        match = self._CREATE.match(line)
        if match:
            self.counts.setdefault(match.group(1).decode("utf-8", "replace").replace("``", "`"), 0)


def countQuery(kind: str, tables: list[str]) -> str:
    """One SQL statement giving C{name<TAB>count(*)} for every table (exact, not estimates)."""
    parts = []
    for table in sorted(tables):
        if kind == "postgresql":
            schema, _, name = table.partition(".")
            literal = "'" + table.replace("'", "''") + "'"
            parts.append(f"SELECT {literal}, count(*) FROM {quotePg(schema)}.{quotePg(name)}")
        else:
            literal = "'" + table.replace("\\", "\\\\").replace("'", "''") + "'"
            parts.append(f"SELECT {literal}, count(*) FROM {quoteMy(table)}")
    return " UNION ALL ".join(parts)


def tablesQuery(kind: str, dbname: str) -> str:
    """The query listing a database's base tables (C{schema.table} for PostgreSQL)."""
    if kind == "postgresql":
        return (
            "SELECT schemaname || '.' || tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        )
    literal = "'" + dbname.replace("'", "''") + "'"
    return (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        f"{literal} AND table_type = 'BASE TABLE' ORDER BY 1"
    )


def parseCounts(output: bytes) -> dict[str, int]:
    """Read C{name<TAB>count} lines."""
    counts = {}
    for line in output.decode("utf-8", "replace").splitlines():
        if "\t" in line:
            name, _, value = line.rpartition("\t")
            counts[name] = int(value)
    return counts


__all__ += ["tablesQuery"]

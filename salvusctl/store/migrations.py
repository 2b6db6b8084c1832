"""Versioned schema migrations, applied at start by every store.

Each component (C{core}, C{monitor}, C{balancer} …) owns a list of steps.  The store records what it
applied in C{salvus_migrations}, so starting twice — or two hosts at once on one PostgreSQL — applies
each step exactly once (the PostgreSQL store holds an advisory lock while migrating).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from salvusctl.store.dialects import SQLDialect, dialectNamed

__all__ = ["Migration", "CORE_MIGRATIONS", "MIGRATIONS_TABLE"]

MIGRATIONS_TABLE = "salvus_migrations"


@dataclass(frozen=True)
class Migration:
    """One schema step.

    @ivar sql: statements run in one transaction: one string for every dialect, or a function of
        the store's L{SQLDialect} that writes them from its capabilities (what services outside
        the store use, so a new backend needs no new text there), or a dict keyed by dialect name
        (the store's own tables).  Statements are separated by C{;} at the end of a line.
    """

    version: int
    description: str
    sql: str | dict[str, str] | Callable[[SQLDialect], str]

    def statements(self, dialect: SQLDialect | str) -> list[str]:
        """The statements of this step for one dialect (a descriptor or its name)."""
        dialect = dialectNamed(dialect)
        if isinstance(self.sql, str):
            text = self.sql
        elif isinstance(self.sql, dict):
            text = self.sql[dialect.name]
        else:
            text = self.sql(dialect)
        parts = [p.strip() for p in text.split(";\n")]
        return [p.rstrip(";").strip() for p in parts if p.strip()]


#: The foundation tables, one text for every backend; what differs is the store's own words below.
_CORE_TABLES = """
CREATE TABLE services (
    id {serialKey},
    type TEXT NOT NULL,
    site TEXT,
    address TEXT,
    port INTEGER,
    running BOOLEAN NOT NULL DEFAULT {true},
    "user" TEXT,
    pid INTEGER,
    monitor_pid INTEGER,
    host TEXT,
    started_at DOUBLE PRECISION,
    stopped_at DOUBLE PRECISION
);
CREATE INDEX services_running ON services (running, id);
CREATE TABLE status (
    service_id {bigint} NOT NULL REFERENCES services (id),
    timestamp DOUBLE PRECISION NOT NULL,
    load DOUBLE PRECISION,
    percent_mem DOUBLE PRECISION,
    percent_cpu DOUBLE PRECISION,
    cputime DOUBLE PRECISION,
    walltime DOUBLE PRECISION,
    virtual_size BIGINT,
    resident_size BIGINT
);
CREATE INDEX status_service_time ON status (service_id, timestamp{newest});
"""

#: The words of the foundation tables that are each store's own: the statements stay the text they
#: always were on both stores.
_CORE_WORDS = {
    "sqlite": {"true": "1", "newest": ""},
    "postgresql": {"true": "TRUE", "newest": " DESC"},
}


def _coreTables(sql: SQLDialect) -> str:
    return _CORE_TABLES.format(serialKey=sql.serialKey, bigint=sql.bigint, **_CORE_WORDS[sql.name])


CORE_MIGRATIONS = [Migration(1, "services and status", _coreTables)]

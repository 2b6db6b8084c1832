"""What each store's SQL can do, said once: the one place a backend's name meets its features.

Services keep their own tables and queries, but write them against these capabilities
(C{store.sql.serialKey}, C{store.sql.shared}, C{store.sql.coveringIndexes} …), never against a
backend's name.  So a new backend is a descriptor here and a store class beside the others; no
service module changes.  Stdlib only: declarations and schemas import it without loading a store.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SQLDialect", "SQLITE", "POSTGRESQL", "DIALECTS", "dialectNamed"]


@dataclass(frozen=True)
class SQLDialect:
    """The SQL one store speaks, as the capabilities services choose between.

    @ivar name: the store URL scheme (C{sqlite}, C{postgresql}); for display only.
    @ivar shared: several hosts can use one database at once, so they see each other's rows
        (cluster peers, shared balancer states); False for a store only this host opens.
    @ivar bigint: the column type of a 64-bit integer.
    @ivar serial: the column type of an id the database numbers itself (followed by PRIMARY KEY).
    @ivar serialKey: a whole auto-numbered primary key column definition.
    @ivar rowId: the hidden address of a row in a plain table (C{rowid}, C{ctid}).
    @ivar rowKey: a row's address that stays unique across a partitioned table's partitions.
    @ivar dbClock: an SQL expression for the database's clock in seconds since the epoch, when it
        is not the host's own (None: the host's clock is the database's, pass it as C{?}).
    @ivar serverStarted: an SQL expression for when the database server last started, or None.
    @ivar multiRowInsert: each statement costs a round trip, so many rows go best as one
        C{INSERT … VALUES (…), (…)}; False where C{executemany} is already the fastest.
    @ivar coveringIndexes: C{CREATE INDEX … INCLUDE (…)} exists.
    @ivar lateralJoins: C{LEFT JOIN LATERAL (…)} exists.
    @ivar sampledStatistics: the planner plans from statistics sampled by ANALYZE, which lag behind
        the newest rows; queries over recent rows then spell out the index to use.
    @ivar partitions: tables can be partitioned by range (C{CREATE TABLE … PARTITION OF}), with
        C{pg_inherits} listing the partitions and transaction-scoped advisory locks.
    @ivar relaxedCommit: a statement that lets this transaction's commit return before the disk
        has it (replaceable rows only), or None.
    @ivar sequences: C{CREATE SEQUENCE} and C{nextval} exist.
    @ivar deleteUsing: C{DELETE FROM t a USING t b WHERE …} (a self-join) exists, and is how to
        remove duplicate rows (C{MIN} of the row address may not exist).
    """

    name: str
    shared: bool
    bigint: str
    serial: str
    serialKey: str
    rowId: str
    rowKey: str
    dbClock: str | None
    serverStarted: str | None
    multiRowInsert: bool
    coveringIndexes: bool
    lateralJoins: bool
    sampledStatistics: bool
    partitions: bool
    relaxedCommit: str | None
    sequences: bool
    deleteUsing: bool


SQLITE = SQLDialect(
    name="sqlite",
    shared=False,
    bigint="INTEGER",
    serial="INTEGER",
    serialKey="INTEGER PRIMARY KEY AUTOINCREMENT",
    rowId="rowid",
    rowKey="rowid",
    dbClock=None,
    serverStarted=None,
    multiRowInsert=False,
    coveringIndexes=False,
    lateralJoins=False,
    sampledStatistics=False,
    partitions=False,
    relaxedCommit=None,
    sequences=False,
    deleteUsing=False,
)

POSTGRESQL = SQLDialect(
    name="postgresql",
    shared=True,
    bigint="BIGINT",
    serial="BIGSERIAL",
    serialKey="BIGSERIAL PRIMARY KEY",
    rowId="ctid",
    # The ctid of a partitioned table's rows repeats across partitions: tableoid tells them apart.
    rowKey="tableoid, ctid",
    dbClock="CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)",
    serverStarted="CAST(EXTRACT(EPOCH FROM pg_postmaster_start_time()) AS DOUBLE PRECISION)",
    multiRowInsert=True,
    coveringIndexes=True,
    lateralJoins=True,
    sampledStatistics=True,
    partitions=True,
    relaxedCommit="SET LOCAL synchronous_commit TO OFF",
    sequences=True,
    deleteUsing=True,
)

DIALECTS = {d.name: d for d in (SQLITE, POSTGRESQL)}


def dialectNamed(dialect: SQLDialect | str) -> SQLDialect:
    """The descriptor itself, or the one a name (C{'sqlite'}, C{'postgresql'}) names.

    @raise ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(dialect, SQLDialect):
        return dialect
    try:
        return DIALECTS[dialect]
    except (KeyError, TypeError):
        raise ValueError(f"unknown SQL dialect {dialect!r}: one of {sorted(DIALECTS)}") from None

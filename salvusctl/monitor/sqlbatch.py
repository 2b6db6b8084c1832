"""Many rows in few statements, on either store.

SQLite's C{executemany} is already one prepared statement run per row inside the transaction, the
fastest it has.  The PostgreSQL store runs asynchronous psycopg2 statements one at a time (one
round trip each), so there rows go as multi-row C{INSERT … VALUES (…), (…)} statements of up to
C{chunk} rows: a tick of hundreds of rows costs a handful of round trips.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import inlineCallbacks

from salvusctl.store.dialects import SQLDialect

__all__ = ["insertMany"]


@inlineCallbacks
def insertMany(cursor, sql: SQLDialect, prefix: str, rows: Sequence[tuple], chunk: int = 400,
               suffix: str = ""):
    """Insert C{rows} with C{prefix} (C{"INSERT INTO t (a, b)"}) inside the caller's transaction.

    C{suffix} follows the values (C{" ON CONFLICT DO NOTHING"}, which both dialects accept).

    Written as a generator so it waits for each statement on PostgreSQL; on SQLite each call has
    finished when it returns.
    """
    if not rows:
        return 0
    width = len(rows[0])
    one = "(" + ", ".join("?" for _ in range(width)) + ")"
    if not sql.multiRowInsert:
        yield cursor.executemany(f"{prefix} VALUES {one}{suffix}", rows)
        return len(rows)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        args = [value for row in part for value in row]
        yield cursor.execute(f"{prefix} VALUES " + ", ".join(one for _ in part) + suffix, args)
    return len(rows)

"""The cursor a C{runInteraction} function receives on PostgreSQL, and parameter checking."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from txpostgres import txpostgres

from salvusctl.store.errors import StoreError
from salvusctl.store.sql import countPlaceholders, toPyformat

__all__ = ["InteractionCursor", "prepare"]

# "INSERT INTO t (a, b) VALUES (?, ?)" and nothing after: batchable into multi-row INSERTs.
_MULTIROW = re.compile(
    r"^\s*(?P<head>INSERT\s+INTO\s+[^;'\"?%$]*?)\s+VALUES\s*(?P<values>\([^()'\";$%]*\))\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_BATCH = 500


def prepare(sql: str, args: Any) -> tuple[str, tuple | None]:
    """The statement and parameters for psycopg2, checked against the C{?} count."""
    if isinstance(args, Mapping) or isinstance(args, (str, bytes)):
        raise StoreError(f"arguments must be a sequence matching the ? placeholders, not {args!r}")
    args = tuple(args) if args else ()
    wanted = countPlaceholders(sql)
    if wanted != len(args):
        raise StoreError(
            f"statement has {wanted} ? placeholder(s) but {len(args)} argument(s) were given: {sql[:200]}"
        )
    if not args:
        return sql, None
    return toPyformat(sql), args


class InteractionCursor:
    """The cursor a C{runInteraction} function receives on PostgreSQL.

    C{execute}/C{executemany} take C{?} placeholders and return a Deferred firing with this
    cursor; write interactions as generators under C{inlineCallbacks} and C{yield} each call
    (that also works on SQLite, whose cursor returns itself).  Statements run one after another
    even when not yielded; the transaction commits only after the last has finished, and the
    first failure rolls it back.
    """

    def __init__(self, cursor: txpostgres.Cursor):
        self._cursor = cursor
        self._tail: Deferred = succeed(None)
        self._pending = 0
        self._failure: Failure | None = None
        self._outs: list[Deferred] = []
        self._rowcount = -1

    def _queue(self, thunk) -> Deferred:
        out: Deferred = Deferred()
        self._outs.append(out)
        self._pending += 1

        def step(_):
            if self._failure is not None:
                # PostgreSQL ignores everything after an error until the transaction ends.
                self._pending -= 1
                out.errback(self._failure)
                return None
            d = maybeDeferred(thunk)

            def finished(result):
                self._pending -= 1
                if isinstance(result, Failure):
                    if self._failure is None:
                        self._failure = result
                    out.errback(result)
                else:
                    out.callback(self)
                return None

            return d.addBoth(finished)

        self._tail.addCallback(step)
        return out

    def execute(self, sql: str, args: Any = ()) -> Deferred:
        text, params = prepare(sql, args)

        def run():
            return self._cursor.execute(text, params).addCallback(self._setRowcount)

        return self._queue(run)

    def executemany(self, sql: str, seq: Any) -> Deferred:
        rows = [tuple(row) for row in seq]
        text = toPyformat(sql)
        match = _MULTIROW.match(sql)

        def run():
            # psycopg2 refuses executemany on an asynchronous connection.  A plain
            # "INSERT … VALUES (…)" becomes multi-row INSERTs (one round trip per batch);
            # anything else runs one statement a row.
            total = 0
            d: Deferred = succeed(None)

            def count(c):
                nonlocal total
                total += max(c.rowcount, 0)

            if match is not None:
                head, template = match.group("head"), toPyformat(match.group("values"))
                for i in range(0, len(rows), _BATCH):
                    batch = rows[i : i + _BATCH]

                    def many(_, batch=batch):
                        values = b",".join(self._cursor.mogrify(template, row) for row in batch)
                        # No parameters: psycopg2 sends the text as it is.
                        return self._cursor.execute(head.encode() + b" VALUES " + values)

                    d.addCallback(many).addCallback(count)
            else:
                for row in rows:
                    d.addCallback(lambda _, row=row: self._cursor.execute(text, row))
                    d.addCallback(count)
            return d.addCallback(lambda _: setattr(self, "_rowcount", total))

        return self._queue(run)

    def _setRowcount(self, c):
        self._rowcount = c.rowcount

    def _ready(self) -> None:
        if self._pending:
            raise StoreError("fetch before the statement finished: yield cursor.execute(...) first")

    def fetchone(self):
        self._ready()
        return self._cursor.fetchone()

    def fetchall(self):
        self._ready()
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self):
        """Always None on PostgreSQL: use C{INSERT … RETURNING id} (works on SQLite too)."""
        return None

    def _settle(self, result):
        """After the interaction: wait for its statements, then commit or roll back."""

        def done(_):
            for out in self._outs:
                out.addErrback(lambda f: None)  # reported below, or already seen by the caller
            if isinstance(result, Failure):
                return result
            if self._failure is not None:
                return self._failure
            return result

        return self._tail.addCallback(done)

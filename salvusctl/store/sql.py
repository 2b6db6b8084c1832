"""SQL text helpers shared by the stores: one placeholder style (C{?}) for both dialects.

psycopg2 formats the whole statement with Python's C{%} operator whenever parameters are given, so
for PostgreSQL every C{?} placeholder becomes C{%s} and every literal C{%} — inside quoted strings
too, since psycopg2 does not parse SQL — becomes C{%%}.  A C{?} inside a quoted string, a quoted
identifier, a dollar-quoted body or a comment is text, not a placeholder, and is kept.
"""

from __future__ import annotations

import re

__all__ = ["toPyformat", "countPlaceholders", "checkChannel"]

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CHANNEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def checkChannel(channel: object) -> str:
    """A notification channel name, checked the same on both stores (PostgreSQL identifier rules,
    so a channel that works on SQLite works on a fleet too)."""
    from salvusctl.store.errors import StoreError

    if not isinstance(channel, str) or not _CHANNEL.match(channel):
        raise StoreError(
            f"bad channel name {channel!r}: letters, digits and _ (at most 63), not starting with a digit"
        )
    return channel


def _scan(sql: str):
    """Yield C{(kind, text)} pieces: C{'code'} outside quotes/comments, C{'quoted'} inside."""
    i = 0
    n = len(sql)
    start = 0
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            if i > start:
                yield "code", sql[start:i]
            j = i + 1
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote: an escaped quote
                        j += 2
                        continue
                    break
                j += 1
            yield "quoted", sql[i : j + 1]
            i = start = j + 1
        elif ch == "-" and sql.startswith("--", i):
            if i > start:
                yield "code", sql[start:i]
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield "quoted", sql[i:j]
            i = start = j
        elif ch == "/" and sql.startswith("/*", i):
            if i > start:
                yield "code", sql[start:i]
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            yield "quoted", sql[i:j]
            i = start = j
        elif ch == "$":
            match = _dollarQuote(sql, i)
            if match is None:
                i += 1
                continue
            if i > start:
                yield "code", sql[start:i]
            tag = match.group(0)
            j = sql.find(tag, match.end())
            j = n if j < 0 else j + len(tag)
            yield "quoted", sql[i:j]
            i = start = j
        else:
            i += 1
    if start < n:
        yield "code", sql[start:]


def _dollarQuote(sql: str, i: int):
    # "$1" is a positional parameter and "a$b" part of an identifier: only "$tag$" / "$$"
    # not preceded by an identifier character opens a dollar quote.
    if i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_"):
        return None
    return _DOLLAR_TAG.match(sql, i)


def toPyformat(sql: str) -> str:
    """Rewrite C{?} placeholders as psycopg2's C{%s}, doubling every literal C{%}.

    >>> toPyformat("SELECT * FROM t WHERE a = ? AND b LIKE '50%?'")
    "SELECT * FROM t WHERE a = %s AND b LIKE '50%%?'"
    """
    out = []
    for kind, text in _scan(sql):
        text = text.replace("%", "%%")
        if kind == "code":
            text = text.replace("?", "%s")
        out.append(text)
    return "".join(out)


def countPlaceholders(sql: str) -> int:
    """How many C{?} placeholders a statement has (outside quotes and comments)."""
    return sum(text.count("?") for kind, text in _scan(sql) if kind == "code")

"""Stores: SQLite (embedded default) and PostgreSQL (a fleet), one L{IStore} interface."""

from __future__ import annotations

from salvusctl.errors import ConfigError
from salvusctl.store.errors import QueueFull, StoreClosed, StoreCorrupt, StoreError, StoreUnavailable
from salvusctl.store.migrations import Migration
from salvusctl.store.url import DEFAULT_STORE_URL, StoreURL, parseStoreURL

__all__ = [
    "makeStore",
    "parseStoreURL",
    "StoreURL",
    "DEFAULT_STORE_URL",
    "Migration",
    "StoreError",
    "StoreClosed",
    "StoreCorrupt",
    "StoreUnavailable",
    "QueueFull",
]


def makeStore(url: str, reactor, base_dir: str = "."):
    """Make the store a URL names (not started).  Relative SQLite paths are under C{base_dir}."""
    import os

    parsed = parseStoreURL(url)
    if parsed.scheme == "sqlite":
        from salvusctl.store.sqlite import SQLiteStore

        path = parsed.path
        if not os.path.isabs(path) and path != ":memory:":
            path = os.path.join(base_dir, path)
        return SQLiteStore(reactor, path)
    if parsed.scheme == "postgresql":
        try:
            from salvusctl.store.postgres import PostgresStore
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ConfigError(f"PostgreSQL store unavailable: {e}")
        return PostgresStore(reactor, parsed, **parsed.storeOptions())
    raise ConfigError(f"unknown store scheme {parsed.scheme!r}")

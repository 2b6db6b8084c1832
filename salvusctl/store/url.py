"""Store URLs: C{sqlite:var/salvus.db} (the default) or C{postgresql://user@host:port/db}."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from salvusctl.errors import ConfigError

__all__ = ["StoreURL", "parseStoreURL", "DEFAULT_STORE_URL"]

DEFAULT_STORE_URL = "sqlite:var/salvus.db"


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL.  C{path} for SQLite; the connection keywords for PostgreSQL."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    database: str = ""

    def dsnKeywords(self) -> dict[str, str | int]:
        """Keywords for C{psycopg2.connect}."""
        kw: dict[str, str | int] = {"dbname": self.database}
        if self.host:
            kw["host"] = self.host
            kw["port"] = self.port
        if self.user:
            kw["user"] = self.user
        if self.password:
            kw["password"] = self.password
        return kw

    def redacted(self) -> str:
        """The URL without its password, safe to log."""
        if self.scheme == "sqlite":
            return f"sqlite:{self.path}"
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{self.host}:{self.port}/{self.database}"


def parseStoreURL(url: str) -> StoreURL:
    """Parse a store URL or raise L{ConfigError} saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"store URL must be a non-empty string, not {url!r}")
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"store URL {url!r} names no database file")
        return StoreURL("sqlite", path=path)
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        try:
            port = parts.port or 5432
        except ValueError:
            raise ConfigError(f"store URL {url!r} has a bad port")
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(f"store URL {url!r} names no database")
        return StoreURL(
            "postgresql",
            host=parts.hostname or "",
            port=port,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=database,
        )
    raise ConfigError(
        f"unknown store URL {url!r}: use sqlite:PATH or postgresql://user@host:port/db"
    )

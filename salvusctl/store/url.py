"""Store URLs: C{sqlite:var/salvus.db} (the default) or C{postgresql://user@host:port/db}.

A PostgreSQL URL may carry the pool's settings as query options, checked here so that a bad one
fails at start-up with the rest of the config:
C{postgresql://salvus@db:5432/salvus?pool_size=8&queue_limit=50000&close_timeout=5&sslmode=require}.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from salvusctl.errors import ConfigError

__all__ = ["StoreURL", "parseStoreURL", "DEFAULT_STORE_URL", "POSTGRES_OPTIONS"]

DEFAULT_STORE_URL = "sqlite:var/salvus.db"

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _positiveInt(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {text!r}")
    return value


def _nonNegativeFloat(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a number of seconds, at least 0, not {text!r}")
    return value


def _sslmode(name: str, text: str) -> str:
    if text not in _SSLMODES:
        raise ValueError(f"{name} must be one of {', '.join(_SSLMODES)}, not {text!r}")
    return text


#: Query options a C{postgresql://} URL may carry, with their checkers.
POSTGRES_OPTIONS = {
    "pool_size": _positiveInt,
    "queue_limit": _positiveInt,
    "close_timeout": _nonNegativeFloat,
    "start_timeout": _nonNegativeFloat,
    "sslmode": _sslmode,
}


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
    options: tuple[tuple[str, object], ...] = ()

    def option(self, name: str, default=None):
        """One query option's checked value, or C{default}."""
        return dict(self.options).get(name, default)

    def storeOptions(self) -> dict[str, object]:
        """The options that are the store's own (pool size, queue limit, close and start timeouts)."""
        own = ("pool_size", "queue_limit", "close_timeout", "start_timeout")
        return {k: v for k, v in self.options if k in own}

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
        if self.option("sslmode"):
            kw["sslmode"] = self.option("sslmode")
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
        path = url[len("sqlite:") :]
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
            raise ConfigError(f"store URL {_safe(url)!r} has a bad port")
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(f"store URL {_safe(url)!r} names no database")
        if "/" in database:
            raise ConfigError(f"store URL {_safe(url)!r}: bad database name {database!r}")
        options = []
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise ConfigError(f"store URL {_safe(url)!r} has a malformed query string")
        for name, text in pairs:
            check = POSTGRES_OPTIONS.get(name)
            if check is None:
                raise ConfigError(
                    f"store URL {_safe(url)!r}: unknown option {name!r}"
                    f" (known: {', '.join(sorted(POSTGRES_OPTIONS))})"
                )
            try:
                options.append((name, check(name, text)))
            except ValueError as e:
                raise ConfigError(f"store URL {_safe(url)!r}: {e}")
        return StoreURL(
            "postgresql",
            host=parts.hostname or "",
            port=port,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=database,
            options=tuple(options),
        )
    raise ConfigError(f"unknown store URL {_safe(url)!r}: use sqlite:PATH or postgresql://user@host:port/db")


def _safe(url: str) -> str:
    """The URL with any password masked, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url

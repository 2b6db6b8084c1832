"""The C{Admin} declaration a host's C{.tac} adds: where the admin listens and how it looks."""

from __future__ import annotations

import ipaddress
from typing import Any

from salvusctl.errors import ConfigError

__all__ = ["Admin", "parseListener", "isLoopback"]

def parseListener(description: str) -> tuple[str, list[Any], dict[str, Any]]:
    """(kind, args, kwargs) of a server endpoint string; ConfigError if it does not parse.

    An C{ssl:} listener without C{privateKey=} is accepted as is: the admin makes its own
    certificate for it at start.
    """
    from salvusctl.endpoints import checkServerEndpoint, parseListener

    if not isinstance(description, str) or not description:
        raise ConfigError(f"admin listener must be an endpoint string, not {description!r}")
    try:
        parsed = parseListener(description, "admin listener")
    except ValueError as e:
        raise ConfigError(str(e))
    kind, kwargs = parsed.kind, parsed.options
    if kind == "ssl" and "sslmethod" in kwargs:
        raise ConfigError(f"admin listener {description!r}: sslmethod= is not supported "
                          "(the admin accepts TLS 1.2 and 1.3 only)")
    if kind != "ssl" or "privateKey" in kwargs:
        try:
            checkServerEndpoint(description)
        except Exception as e:
            raise ConfigError(f"bad admin listener {description!r}: {e}")
    return kind, list(parsed.args), dict(kwargs)


def isLoopback(interface: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for all interfaces ('' or None)."""
    if not interface:
        return False
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


class Admin:
    """The admin (XML-RPC, pages, metrics) on one or more endpoints.

    @param listen: endpoint strings: C{ssl:8443} (a self-signed certificate is made under var/
        when no C{privateKey=} is given), C{unix:var/admin.sock} (created 0600),
        C{tcp:9001:interface=127.0.0.1} (plain HTTP: loopback only unless C{allow_plain_http}).
    @param users: the users file (default C{var/admin-users}); kept out of the config on purpose.
    @param allow_plain_http: accept a plain-HTTP listener on a non-loopback interface.
    @param refresh: seconds between page reloads (0: never).
    @param project_url: a link shown in the pages' header.
    @param bootstrap_user: when the users file has no user, create this operator with a random
        password and print it once.
    @param max_request_bytes: larger request bodies are refused with 413.
    @param login_limit: failed logins per client address within C{login_window} seconds before
        that address is refused (429) until the window passes.
    @param header_timeout: seconds a client has to send a whole request head (slow clients get
        408 and are disconnected).
    @param max_connections_per_address: open connections per client IP address on each
        listener; more are closed at once (the unix socket has no cap).
    """

    component = "admin"

    def __init__(
        self,
        *listen: str,
        users: str | None = None,
        allow_plain_http: bool = False,
        refresh: int = 10,
        project_url: str | None = None,
        title: str = "Salvus",
        bootstrap_user: str | None = None,
        max_request_bytes: int = 1024 * 1024,
        login_limit: int = 5,
        login_window: float = 60.0,
        header_timeout: float = 10.0,
        max_connections_per_address: int = 64,
    ):
        self.listen = list(listen)
        self.users = users
        self.allow_plain_http = allow_plain_http
        self.refresh = refresh
        self.project_url = project_url
        self.title = title
        self.bootstrap_user = bootstrap_user
        self.max_request_bytes = max_request_bytes
        self.login_limit = login_limit
        self.login_window = login_window
        self.header_timeout = header_timeout
        self.max_connections_per_address = max_connections_per_address

    def __repr__(self) -> str:
        return f"Admin({', '.join(map(repr, self.listen))})"

    def endpoints(self) -> list[str]:
        """What the host checks for clashes.  An C{ssl:} listener whose certificate is made at
        start is named by its TCP port (the host's check would otherwise try to load a key file
        that does not exist yet)."""
        out = []
        for description in self.listen:
            try:
                kind, args, kwargs = parseListener(description)
            except ConfigError:
                out.append(description)  # validate() reports it
                continue
            if kind == "ssl" and "privateKey" not in kwargs:
                port = kwargs.get("port", args[0] if args else "")
                interface = str(kwargs.get("interface", "")).replace(":", "\\:")
                description = f"tcp:{port}" + (f":interface={interface}" if interface else "")
            out.append(description)
        return out

    def validate(self, host: Any) -> None:
        if not self.listen:
            raise ConfigError("Admin() needs at least one listener, e.g. Admin('ssl:8443')")
        for description in self.listen:
            kind, args, kwargs = parseListener(description)
            if kind in ("tcp", "tcp6"):
                interface = kwargs.get("interface", "")
                if not isLoopback(interface) and not self.allow_plain_http:
                    raise ConfigError(
                        f"admin listener {description!r} serves plain HTTP beyond loopback: use ssl:, "
                        "add interface=127.0.0.1, or pass allow_plain_http=True"
                    )
        if isinstance(self.refresh, bool) or not isinstance(self.refresh, int) or self.refresh < 0:
            raise ConfigError(f"admin refresh must be a whole number of seconds >= 0, not {self.refresh!r}")
        if self.project_url is not None and (
            not isinstance(self.project_url, str) or not self.project_url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"admin project_url must be an http(s) URL, not {self.project_url!r}")
        if not isinstance(self.max_request_bytes, int) or self.max_request_bytes < 4096:
            raise ConfigError("admin max_request_bytes must be an integer >= 4096")
        if not isinstance(self.login_limit, int) or self.login_limit < 1:
            raise ConfigError("admin login_limit must be an integer >= 1")
        timeout, cap = self.header_timeout, self.max_connections_per_address
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ConfigError(f"admin header_timeout must be seconds in (0, 3600], not {timeout!r}")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(f"admin max_connections_per_address must be an integer >= 1, not {cap!r}")
        if self.users is not None and not isinstance(self.users, str):
            raise ConfigError("admin users must be a file path")

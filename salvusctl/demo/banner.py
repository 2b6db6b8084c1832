"""What the demo host says once it is up: the URLs to open, where the password is, what to try next.

A new user runs C{make run} and then, as the README writes it, a bare C{salvusctl status}.  That
works because this service, at first start, writes C{var/salvusctl.conf} (mode 0600, like the
users file beside it): the admin's unix socket, the bootstrap user and its password.  The CLI reads
that file when it is given no URL (see L{salvusctl.cli.main}); the socket is itself 0600, so the
file and the socket are open to the same local account only.

The lines are printed after every service has started (so after the admin and the balancer
listen), never before: a port clash stops the host first, with one line and no banner.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

__all__ = ["DemoBanner", "CONF_NAME", "writeClientConf", "bannerLines"]

CONF_NAME = "salvusctl.conf"

log = Logger()

_PORT = re.compile(r"^(tcp|ssl):(?:port=)?(\d+)")


def _urls(listen: list[str]) -> list[tuple[str, str]]:
    """(scheme, URL) of each C{tcp:}/C{ssl:} endpoint string, on 127.0.0.1 (where the demo binds)."""
    found = []
    for description in listen:
        match = _PORT.match(description)
        if match:
            scheme = "https" if match.group(1) == "ssl" else "http"
            found.append((scheme, f"{scheme}://127.0.0.1:{match.group(2)}/"))
    return found


def _socketPath(listen: list[str]) -> str | None:
    for description in listen:
        if description.startswith("unix:"):
            path = description[len("unix:"):].split(":")[0]
            if path.startswith("address="):
                path = path[len("address="):]
            return os.path.abspath(path)  # twistd binds a relative path against its working directory
    return None


def writeClientConf(path: str, url: str, user: str, password: str) -> None:
    """Write the CLI's settings file, created 0600 and replaced whole (never half-written)."""
    text = (
        "# Written by the demo host at first start: how salvusctl reaches it (mode 0600).\n"
        f"[salvusctl]\nurl = {url}\nuser = {user}\npassword = {password}\n"
    )
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _salvusctl(cwd: str) -> str:
    """The path of the C{salvusctl} beside this Python (the venv's), relative when it is under C{cwd}."""
    candidate = os.path.join(os.path.dirname(sys.executable), "salvusctl")
    if not os.path.exists(candidate):
        return "salvusctl"
    relative = os.path.relpath(candidate, cwd)
    return relative if not relative.startswith("..") else candidate


def bannerLines(
    web: list[str], admin: list[str], user: str | None, conf: str | None, password_new: bool,
    certificate: str | None, fingerprint: str | None, command: str,
) -> list[str]:
    """The lines printed once the demo host is up (pure, so the wording is tested on its own)."""
    lines = ["salvus demo: up"]
    for url in web:
        lines.append(f"salvus demo: open {url}  (the balanced demo workers)")
    for url in admin:
        lines.append(f"salvus demo: open {url}  (the admin pages" + (f", user {user})" if user else ")"))
    if certificate:
        lines.append(f"salvus demo: admin certificate {certificate}"
                     + (f" (SHA-256 {fingerprint})" if fingerprint else ""))
    if conf:
        lines.append(f"salvus demo: the {user} password is in {conf} (password = …, mode 0600)"
                     + ("" if password_new else "; `salvusctl user passwd admin` sets a new one"))
    elif user:
        lines.append(f"salvus demo: the {user} password was written at first start to "
                     f"var/admin/{user}.password; `salvusctl user passwd {user}` sets a new one")
    lines.append(f"salvus demo: next, try: {command}")
    return lines


class DemoBanner(Service):
    """Started last in the demo host: writes C{var/salvusctl.conf} at first start, then prints
    L{bannerLines} once the admin's listeners are bound.

    @param context: the built host's context (its admin service, its declarations).
    @param out: where the lines go (stdout: twistd sends it to the log with C{--logfile}).
    """

    name = "demo-banner"

    def __init__(self, context: Any, out: TextIO | None = None, cwd: str | None = None):
        self.context = context
        self.out = out
        self.cwd = cwd

    def startService(self) -> None:
        super().startService()
        admin = self.context.services.get("admin")
        ready = getattr(admin, "ready", None) or defer.succeed(None)
        ready.addCallback(lambda _: self._up(admin))
        ready.addErrback(lambda f: log.failure("demo banner", f))

    def _up(self, admin: Any) -> None:
        host = self.context.host
        var_dir = self.context.var_dir
        cwd = self.cwd or os.getcwd()
        web = [url for d in host.declarations("balancer") for _, url in _urls(list(d.listen))]
        admin_urls: list[str] = []
        user = sock = None
        for declaration in host.declarations("admin"):
            admin_urls += [url for scheme, url in _urls(list(declaration.listen)) if scheme == "https"]
            user = user or declaration.bootstrap_user
            sock = sock or _socketPath(list(declaration.listen))
        conf = os.path.join(var_dir, CONF_NAME)
        password = (getattr(admin, "bootstrap_passwords", None) or {}).get(user) if user else None
        if password is not None and sock is not None:
            writeClientConf(conf, "unix://" + sock, user, password)
        command = _salvusctl(cwd)
        if os.path.abspath(os.path.join(cwd, "var")) != var_dir:
            command += f" -c {conf}"
        command += " status"
        certificate = os.path.join(var_dir, "admin", "admin.crt")
        lines = bannerLines(
            web, admin_urls, user, conf if os.path.exists(conf) else None, password is not None,
            certificate if os.path.exists(certificate) else None,
            getattr(admin, "fingerprint", None), command,
        )
        out = self.out or sys.stdout
        out.write("\n".join(lines) + "\n")
        out.flush()

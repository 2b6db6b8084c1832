"""Declaring a host: what a C{.tac} file calls.

A L{Host} collects I{declarations} (a store URL, deploys, balanced services, monitor, alerts, admin
listeners …) and validates all of them before anything starts; L{salvusctl.host.building} then
turns them into one L{salvusctl.host.building.HostService}.

Declarations are plain objects with a C{component} name, a C{validate(host)} method that raises
L{ConfigError}, and an optional C{endpoints()} method listing the endpoint strings they listen on
(so two declarations on one port are refused at start).  Which components exist, and what builds
and reloads each, is named once, in L{salvusctl.host.components.COMPONENTS}.

Endpoint strings are checked by the leaf L{salvusctl.host.listenkeys}, which the declaration
modules import too; this module imports the service declarations only inside L{Host.deploy} and
L{Host.balance}, and the builder only inside L{Host.build}.
"""

from __future__ import annotations

import contextvars
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.host.listenkeys import iterEndpoints, listenKey
from salvusctl.store.url import DEFAULT_STORE_URL, parseStoreURL

__all__ = ["Host", "declaringOnly", "iterEndpoints", "callerLocation"]

# Set while a config file is executed only to read its declarations (salvusctl.host.loading.loadHost):
# the file's own `application = host.application()` then builds nothing, so re-reading a running
# host's file for a reload binds no port and builds no second service tree.
declaringOnly: contextvars.ContextVar[bool] = contextvars.ContextVar("salvus_declaring_only", default=False)

# The salvusctl package directory: frames inside it are not the caller's.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def callerLocation() -> tuple[str | None, int | None]:
    """The first frame outside salvusctl: the .tac line that made a declaration."""
    here = _PACKAGE
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(here + os.sep):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None, None


class Host:
    """One host's declaration: what a C{.tac} file builds.

    @param name: the host's name (default: this machine's hostname); shown in logs, the admin
        and the shared store.
    @param store: a store URL: C{sqlite:var/salvus.db} (default) or C{postgresql://…}.
    @param var: the state directory (SQLite file, run directories, logs, certificates).

    @ivar source: a callable that reads this host's config again and returns a new L{Host}
        (set by L{salvusctl.host.loading.loadHost} and for the default host); None when the host was
        composed in code.  A reload re-reads the config through it.
    @ivar origin: how another process reads the same config: C{{"config": FILE}}, plus
        C{"store"} when the host's store was overridden (set by L{salvusctl.host.loading.loadHost} and
        C{twistd salvus --store}); None when the config is not a file.  A read-only diff reads the
        file through it, out of this process (L{salvusctl.host.reader}).
    """

    def __init__(self, name: str | None = None, store: str = DEFAULT_STORE_URL, var: str = "var"):
        self.name = name or socket.gethostname()
        self.store_url = store
        self.var_dir = os.path.abspath(var)
        self._declarations: list[tuple[Any, str | None, int | None]] = []
        self._built: Any = None  # the HostService, once built
        self.context: Any = None  # its HostContext, once built
        self._store_location = callerLocation()
        self.source: Callable[[], Host] | None = None
        self.origin: dict[str, str] | None = None

    # -- declarations ----------------------------------------------------------------------------

    def add(self, declaration: Any) -> Any:
        """Add a declaration (a deploy, a balanced service …); returns it for chaining."""
        if not getattr(declaration, "component", None):
            raise ConfigError(f"{declaration!r} is not a Salvus declaration", *callerLocation())
        filename, lineno = callerLocation()
        self._declarations.append((declaration, filename, lineno))
        return declaration

    def deploy(self, name: str, command, **options: Any) -> Any:
        """Declare a supervised deploy (see docs/supervisor.md)."""
        from salvusctl.supervisor.deploy import Deploy

        return self.add(Deploy(name, command=command, **options))

    def balance(self, name: str, listen, groups, **options: Any) -> Any:
        """Declare a balanced TCP service (see docs/balancer.md)."""
        from salvusctl.balancer.declare import Balanced

        return self.add(Balanced(name, listen=listen, groups=groups, **options))

    def declarations(self, component: str | None = None) -> list[Any]:
        """The declarations of one component (or all), in declaration order."""
        return [d for d, _, _ in self._declarations if component in (None, d.component)]

    # -- validation and build --------------------------------------------------------------------

    def validate(self) -> None:
        """Check everything before anything starts; raise L{ConfigError} naming the .tac line."""
        try:
            parseStoreURL(self.store_url)
        except ConfigError as e:
            raise ConfigError(e.message, *self._store_location)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"host name must be a non-empty string, not {self.name!r}")
        seen: dict[str, tuple[str | None, int | None]] = {}
        for declaration, filename, lineno in self._declarations:
            try:
                validate = getattr(declaration, "validate", None)
                if validate is not None:
                    validate(self)
            except ConfigError as e:
                raise ConfigError(e.message, e.filename or filename, e.lineno or lineno)
            endpoints = getattr(declaration, "endpoints", None)
            for description in endpoints() if endpoints is not None else ():
                try:
                    key = listenKey(description)
                except ConfigError as e:
                    raise ConfigError(e.message, filename, lineno)
                if key in seen:
                    where = seen[key]
                    other = f"{where[0]}:{where[1]}" if where[0] else "another declaration"
                    raise ConfigError(
                        f"{description!r} listens on the same port as {other}", filename, lineno
                    )
                seen[key] = (filename, lineno)

    def build(self, reactor) -> Any:
        """Validate and build the host's service tree (no I/O happens until it starts): see
        L{salvusctl.host.building.build}."""
        if self._built is not None:
            return self._built
        from salvusctl.host.building import build

        self._built, self.context = build(self, reactor)
        return self._built

    def application(self, reactor=None):
        """For C{twistd -ny host.tac}: an Application holding this host (global reactor).

        A bad declaration exits with one line on stderr instead of a traceback.
        """
        from twisted.application.service import Application

        if declaringOnly.get():
            return Application("salvus")  # the file is only being read (a reload): build nothing
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        try:
            service = self.build(reactor)
        except ConfigError as e:
            sys.stderr.write(f"salvus: error: {e}\n")
            raise SystemExit(1)
        from salvusctl.host.building import exitOnFatal

        exitOnFatal(reactor, service)  # a store that cannot start exits 1 here too
        application = Application("salvus")
        service.setServiceParent(application)
        return application

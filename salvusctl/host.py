"""The composition API that a host's C{.tac} file calls.

A L{Host} collects I{declarations} (a store URL, deploys, balanced services, monitor, alerts, admin
listeners …), validates all of them before anything starts, and builds one L{HostService}: a
C{MultiService} of named children that starts in dependency order and stops in reverse, one child at
a time, waiting for each.

Declarations are plain objects with a C{component} name, a C{validate(host)} method that raises
L{ConfigError}, and an optional C{endpoints()} method listing the endpoint strings they listen on
(so two declarations on one port are refused at start).  Each component has one builder that turns
all of its declarations into one service; the table of builders below is the only place that names
every component.
"""

from __future__ import annotations

import contextvars
import importlib
import itertools
import os
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from salvusctl.errors import ConfigError
from salvusctl.store import DEFAULT_STORE_URL, makeStore, parseStoreURL

__all__ = ["Host", "HostContext", "HostService", "BUILD_ORDER"]

log = Logger()

# Set while a config file is executed only to read its declarations (salvusctl.config.loadHost):
# the file's own `application = host.application()` then builds nothing, so re-reading a running
# host's file for a reload binds no port and builds no second service tree.
declaringOnly: contextvars.ContextVar[bool] = contextvars.ContextVar("salvus_declaring_only", default=False)

# component name -> "module:function"; a builder is called as builder(context, declarations) and
# returns an IService (or None when it has nothing to run).  Start order is this order.
BUILD_ORDER: list[tuple[str, str]] = [
    ("supervisor", "salvusctl.supervisor.build:buildSupervisor"),
    ("balancer", "salvusctl.balancer.build:buildBalancer"),
    ("monitor", "salvusctl.monitor.build:buildMonitor"),
    ("alerts", "salvusctl.alerts.build:buildAlerts"),
    ("backup", "salvusctl.backup.build:buildBackup"),
    ("cluster", "salvusctl.cluster.build:buildCluster"),
    ("admin", "salvusctl.admin.build:buildAdmin"),
]


@dataclass
class HostContext:
    """What each component builder receives: the injected reactor, the store, and its peers.

    @ivar services: the services built so far, by component name, so later components can find
        earlier ones (the balancer finds the supervisor, the admin finds everything).
    @ivar reloader: the host's L{salvusctl.reload.HostReloader}, set once every service is built
        (the admin reaches it through here for C{salvus.diff} / C{salvus.reconcile}).
    """

    reactor: Any
    host: Host
    store: Any
    var_dir: str
    services: dict[str, IService] = field(default_factory=dict)
    reloader: Any = None

    def path(self, *parts: str) -> str:
        """A path under the host's state directory."""
        return os.path.join(self.var_dir, *parts)


class StoreService(MultiService):
    """Starts the store first and closes it last, after every other service has stopped.

    A store that cannot start (a refused or, with C{start_timeout}, unreachable server, an
    unwritable or corrupt SQLite file) is fatal: a host without its store would run on writing
    nothing.  C{onFatal} receives the one-line reason; C{salvusctl.tap} sets it to print that
    line and exit non-zero, so a service manager sees the failure and restarts the host.
    """

    name = "store"

    def __init__(self, store):
        super().__init__()
        self.store = store
        self.ready: Deferred | None = None
        #: Called with the reason, one line, when the store fails to start.
        self.onFatal: Callable[[str], Any] = self._logFatal

    def startService(self):
        super().startService()
        self.ready = self.store.start()
        self.ready.addErrback(self._failed)

    def _failed(self, failure):
        from salvusctl.store.errors import StoreClosed, StoreError

        if failure.check(StoreClosed) and not self.running:
            return None  # the host stopped before its database was reachable: not a fault
        if failure.check(StoreError):
            reason = str(failure.value).strip().splitlines()[0]
        else:
            log.failure("store {url} failed to start", failure, url=self.store.url)
            reason = f"store {self.store.url} failed to start: {failure.getErrorMessage()}"
        self.onFatal(reason)
        return None

    @staticmethod
    def _logFatal(reason: str) -> None:
        log.critical("{reason}", reason=reason)

    def stopService(self):
        super().stopService()
        return self.store.close()


class HostService(MultiService):
    """A host: named children started in order and stopped in reverse, one at a time.

    C{MultiService} stops all children at once; a host must not close its store while the
    supervisor is still recording exits, so children are stopped sequentially here.
    """

    def __init__(self, host_name: str):
        super().__init__()
        self.host_name = host_name
        self.setName(host_name)

    @inlineCallbacks
    def stopService(self):
        from twisted.application.service import Service

        Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=child.name)


def _callerLocation() -> tuple[str | None, int | None]:
    """The first frame outside salvusctl: the .tac line that made a declaration."""
    here = os.path.dirname(os.path.abspath(__file__))
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
        (set by L{salvusctl.config.loadHost} and for the default host); None when the host was
        composed in code.  A reload re-reads the config through it.
    @ivar origin: how another process reads the same config: C{{"config": FILE}}, plus
        C{"store"} when the host's store was overridden (set by L{salvusctl.config.loadHost} and
        C{twistd salvus --store}); None when the config is not a file.  A read-only diff reads the
        file through it, out of this process (L{salvusctl.configreader}).
    """

    def __init__(self, name: str | None = None, store: str = DEFAULT_STORE_URL, var: str = "var"):
        self.name = name or socket.gethostname()
        self.store_url = store
        self.var_dir = os.path.abspath(var)
        self._declarations: list[tuple[Any, str | None, int | None]] = []
        self._built: HostService | None = None
        self._store_location = _callerLocation()
        self.source: Callable[[], Host] | None = None
        self.origin: dict[str, str] | None = None

    # -- declarations ----------------------------------------------------------------------------

    def add(self, declaration: Any) -> Any:
        """Add a declaration (a deploy, a balanced service …); returns it for chaining."""
        if not getattr(declaration, "component", None):
            raise ConfigError(f"{declaration!r} is not a Salvus declaration", *_callerLocation())
        filename, lineno = _callerLocation()
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
                    key = _listenKey(description)
                except ConfigError as e:
                    raise ConfigError(e.message, filename, lineno)
                if key in seen:
                    where = seen[key]
                    other = f"{where[0]}:{where[1]}" if where[0] else "another declaration"
                    raise ConfigError(
                        f"{description!r} listens on the same port as {other}", filename, lineno
                    )
                seen[key] = (filename, lineno)

    def build(self, reactor) -> HostService:
        """Validate and build the host's service tree (no I/O happens until it starts)."""
        if self._built is not None:
            return self._built
        self.validate()
        store = makeStore(self.store_url, reactor, base_dir=os.path.dirname(self.var_dir))
        top = HostService(self.name)
        store_service = StoreService(store)
        store_service.setServiceParent(top)
        context = HostContext(reactor=reactor, host=self, store=store, var_dir=self.var_dir)
        context.services["store"] = store_service
        for component, target in BUILD_ORDER:
            declarations = self.declarations(component)
            if not declarations:
                continue
            builder = _load(target)
            service = builder(context, declarations)
            if service is None:
                continue
            service.setName(component)
            service.setServiceParent(top)
            context.services[component] = service
        from salvusctl.reload import HostReloader

        context.reloader = HostReloader(self, context)
        self._built = top
        self.context = context
        return top

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
        from salvusctl.tap import exitOnFatal

        exitOnFatal(reactor, service)  # a store that cannot start exits 1 here too
        application = Application("salvus")
        service.setServiceParent(application)
        return application


def _load(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


_ephemeral = itertools.count()


def _listenKey(description: str) -> str:
    """Normalise an endpoint string to what it binds: C{tcp:8080} and C{tcp:port=8080} clash."""
    from salvusctl.endpoints import checkServerEndpoint, parseEndpoint

    try:
        parsed = parseEndpoint(description)
        kind = parsed.kind
        if kind not in ("ssl", "unix"):
            # A full parse catches unknown kinds and options; ssl is not fully parsed here, as that
            # would load key files that may be made only at start.
            checkServerEndpoint(description)
    except Exception as e:
        raise ConfigError(f"bad endpoint {description!r}: {e}")
    if kind in ("tcp", "ssl", "tcp6"):
        port = parsed.port or ""
        if port == "0":
            return f"ephemeral:{next(_ephemeral)}"
        # Any two listeners on one port number clash unless both name distinct interfaces;
        # refusing the overlap is the safe reading of a config.
        return f"tcp:{port}"
    if kind == "unix":
        return "unix:" + os.path.abspath(parsed.address)
    return description


def iterEndpoints(descriptions: Iterable[str]) -> list[str]:
    """Check endpoint strings parse; used by declarations' C{validate}."""
    out = []
    for description in descriptions:
        _listenKey(description)
        out.append(description)
    return out


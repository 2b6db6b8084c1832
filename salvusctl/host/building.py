"""Building a declared host into its service tree.

L{build} turns a validated L{salvusctl.host.Host} into one L{HostService}: a C{MultiService} of
named children, the store first, then one service per component in the order of
L{salvusctl.host.components.COMPONENTS}, started in that order and stopped in reverse, one child at
a time, waiting for each.  Each component's builder receives a L{HostContext} and all of the
component's declarations, and the services built before it that its row C{needs}, as keyword
arguments.  Once every builder ran, one wiring phase calls each component's
C{wire} entry with the whole context (a component plugs into the others there, whichever was
built first), and the host's reloader is made over the same context.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from salvusctl.host.components import COMPONENTS, buildOne, wire
from salvusctl.store import makeStore

__all__ = ["build", "HostContext", "HostService", "StoreService", "exitOnFatal", "BUILD_ORDER"]

log = Logger()

#: (component name, "module:function") in start order: the builders of the components table.
BUILD_ORDER: list[tuple[str, str]] = [(c.name, c.build) for c in COMPONENTS]


@dataclass
class HostContext:
    """What each component builder receives: the injected reactor, the store, and its peers.

    @ivar services: the services built so far, by component name, so later components can find
        earlier ones (the balancer finds the supervisor, the admin finds everything).
    @ivar reloader: the host's L{salvusctl.host.reload.HostReloader}, set once every service is
        built (the admin reaches it through here for C{salvus.diff} / C{salvus.reconcile}).
    """

    reactor: Any
    host: Any
    store: Any
    var_dir: str
    services: dict[str, IService] = field(default_factory=dict)
    reloader: Any = None

    def storeReady(self) -> Deferred | None:
        """The store service's C{ready}: fires once the store has started (None before the host
        starts).  A service that reads the store at start waits for it."""
        return getattr(self.services.get("store"), "ready", None)

    def path(self, *parts: str) -> str:
        """A path under the host's state directory."""
        return os.path.join(self.var_dir, *parts)


class StoreService(MultiService):
    """Starts the store first and closes it last, after every other service has stopped.

    A store that cannot start (a refused or, with C{start_timeout}, unreachable server, an
    unwritable or corrupt SQLite file) is fatal: a host without its store would run on writing
    nothing.  C{onFatal} receives the one-line reason; L{exitOnFatal} sets it to print that
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
        Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=child.name)


def build(host: Any, reactor: Any) -> tuple[HostService, HostContext]:
    """Validate C{host} and build its service tree and context (no I/O happens until it starts).

    Only the components the host declares are imported.
    """
    host.validate()
    store = makeStore(host.store_url, reactor, base_dir=os.path.dirname(host.var_dir))
    top = HostService(host.name)
    store_service = StoreService(store)
    store_service.setServiceParent(top)
    context = HostContext(reactor=reactor, host=host, store=store, var_dir=host.var_dir)
    context.services["store"] = store_service
    for entry in COMPONENTS:
        declarations = host.declarations(entry.name)
        if not declarations:
            continue
        service = buildOne(context, entry, declarations)
        if service is None:
            continue
        service.setName(entry.name)
        service.setServiceParent(top)
        context.services[entry.name] = service
    wire(context)
    from salvusctl.host.reload import HostReloader

    context.reloader = HostReloader(host, context)
    return top, context


def exitOnFatal(reactor: Any, service: Any) -> None:
    """A store that cannot start stops the host: one line on stderr, then exit status 1.

    twistd itself always exits 0 once its reactor has stopped, so the status is set by an
    C{atexit} hook that runs after twistd has shut down cleanly (services stopped, pid file
    removed).  A service manager then sees a failed start and restarts the host; an operator
    reads the reason in one line.
    """
    import atexit

    failed: list[str] = []

    def exitNonZero() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    def fatal(reason: str) -> None:
        if failed:
            return
        failed.append(reason)
        # twistd has replaced sys.stderr by its log by now: the line goes to the real stderr
        # (and so, with -n, the log and the terminal each show it once).
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"salvus: error: {reason}\n")
        stream.flush()
        atexit.register(exitNonZero)
        reactor.callLater(0, stop)

    for child in service:
        if hasattr(child, "onFatal"):
            child.onFatal = fatal

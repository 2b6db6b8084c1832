"""C{buildAdmin}: the host's C{Admin} declarations as one service of listeners."""

from __future__ import annotations

import datetime
import os
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from salvusctl.admin.auth import LoginRateLimiter, PasswordChecks
from salvusctl.admin.certs import ensureCertificate
from salvusctl.admin.declare import Admin, isLoopback, parseListener
from salvusctl.admin.hostcheck import HostNames, certificateNames
from salvusctl.admin.metrics import TransitionCounter
from salvusctl.admin.site import makeSite
from salvusctl.admin.state import AdminOptions, AdminState
from salvusctl.admin.tls import tlsEndpoint
from salvusctl.admin.unixsocket import clearStaleSocket, makeSocketDirectory
from salvusctl.admin.users import UsersFile, UsersFileError, ensureAdminUser, writePasswordFile
from salvusctl.errors import ConfigError

__all__ = ["buildAdmin", "wireAdmin", "AdminService"]

log = Logger()


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class AdminService(Service):
    """Listens on every admin endpoint; stops listening (and waits) on stop.

    @ivar ports: the listening ports, once started (tests read ephemeral port numbers here).
    @ivar ready: fires with C{ports} when every listener is bound.
    @ivar fingerprint: the self-signed certificate's fingerprint, when one is used.
    """

    def __init__(self, reactor: Any, declarations: list[Admin], state: AdminState, var_dir: str):
        self.reactor = reactor
        self.declarations = declarations
        self.state = state
        self.var_dir = var_dir
        self.limiter = LoginRateLimiter(reactor)
        self.checks = PasswordChecks()  # one bound on password checks for every listener
        self.pool: Any = None  # the password checks' own threads, while running (see threadedVerify)
        self.ports: list[Any] = []
        self.sites: list[Any] = []  # one per declaration, once started
        self.ready: defer.Deferred | None = None
        self.fingerprint: str | None = None
        self.bootstrap_passwords: dict[str, str] = {}

    def usersPath(self, declaration: Admin) -> str:
        return os.path.abspath(declaration.users or os.path.join(self.var_dir, "admin-users"))

    def _certificate(self) -> tuple[str, str]:
        key, cert, fingerprint, created = ensureCertificate(
            os.path.join(self.var_dir, "admin"),
            self.state.host_name,
            datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.UTC),
        )
        self.fingerprint = fingerprint
        log.info(
            "admin certificate {path} ({how}); SHA-256 fingerprint {fingerprint}",
            path=cert,
            how="created" if created else "existing",
            fingerprint=fingerprint,
        )
        if created:
            print(f"salvus admin: new certificate {cert}\nsalvus admin: SHA-256 fingerprint {fingerprint}")
        return key, cert

    def _endpointString(self, declaration: Admin, description: str, site: Any = None) -> tuple[str, str]:
        kind, args, kwargs = parseListener(description)
        names = getattr(site, "hostNames", None)
        if names is not None and kind != "unix":
            names.add([str(kwargs.get("interface", ""))])
        if kind == "ssl" and "privateKey" not in kwargs:
            key, cert = self._certificate()
            description += f":privateKey={_escape(key)}:certKey={_escape(cert)}"
            if names is not None:
                names.add(certificateNames(cert))
        elif kind == "ssl" and names is not None:
            names.add(certificateNames(str(kwargs.get("certKey", kwargs["privateKey"]))))
        elif kind == "unix" and "mode" not in kwargs:
            description += ":mode=600"
        elif kind in ("tcp", "tcp6") and not isLoopback(kwargs.get("interface")):
            log.warn(
                "admin listener {d} serves plain HTTP beyond loopback: passwords travel in clear",
                d=description,
            )
        return kind, description

    def _endpoint(self, kind: str, description: str) -> Any:
        """The server endpoint of one listener: TLS ones with the admin's own TLS settings
        (L{salvusctl.admin.tls}: TLS 1.2+, AEAD suites), the others as Twisted parses them.

        TCP listeners get the balancer's accept backlog (somaxconn) unless they name one:
        with Twisted's 50, a burst of connections (slow clients refused at the per-address
        cap) fills the queue, and a normal client's SYN waits a second for its retransmission.
        """
        from salvusctl.balancer.service import withBacklog

        description = withBacklog(description)
        if kind == "ssl":
            return tlsEndpoint(self.reactor, description)
        return serverFromString(self.reactor, description)

    def _bootstrap(self, declaration: Admin) -> None:
        path = self.usersPath(declaration)
        if not declaration.bootstrap_user:
            try:
                empty = not UsersFile(path).users()
            except UsersFileError as e:
                log.error("admin users file: {error}", error=e)
                return
            if empty:
                log.warn(
                    "admin: no users in {path}, nobody can log in; add one with "
                    "`salvusctl user add NAME --file {path}`",
                    path=path,
                )
            return
        password = ensureAdminUser(path, declaration.bootstrap_user)
        if password is not None:
            self.bootstrap_passwords[declaration.bootstrap_user] = password
            secret = writePasswordFile(
                os.path.join(self.var_dir, "admin"), declaration.bootstrap_user, password
            )
            # Never the password itself: stdout goes to twistd's log file (--logfile) or a journal.
            print(
                f"salvus admin: created user {declaration.bootstrap_user!r} in {path}\n"
                f"salvus admin: its password is in {secret} (mode 0600; read it, then delete it "
                f"or set a new one with `salvusctl user passwd {declaration.bootstrap_user}`)"
            )

    def _site(self, declaration: Admin) -> Any:
        """The web site one declaration's listeners serve (its users file, options and limits)."""
        state = AdminState(
            services=self.state.services,
            clock=self.reactor,
            host_name=self.state.host_name,
            store=self.state.store,
            transitions=self.state.transitions,
            context=self.state.context,
            options=AdminOptions(
                refresh=declaration.refresh, project_url=declaration.project_url, title=declaration.title
            ),
        )
        users = UsersFile(self.usersPath(declaration))
        self.limiter.limit = declaration.login_limit
        self.limiter.window = declaration.login_window
        return makeSite(state, users, self.limiter, declaration.max_request_bytes, self.checks, self._pool(),
                        declaration.header_timeout, declaration.max_connections_per_address)

    def _pool(self) -> Any:
        """The password checks' thread pool (none under a reactor without threads: inline)."""
        if self.pool is None and hasattr(self.reactor, "callInThread"):
            from twisted.python.threadpool import ThreadPool

            self.pool = ThreadPool(0, self.checks.concurrency, "salvus-admin-passwords")
            self.pool.start()
        return self.pool

    #: Admin options a reload applies to the running listeners; C{listen} needs a restart.
    LIVE_OPTIONS = ("users", "allow_plain_http", "refresh", "project_url", "title", "bootstrap_user",
                    "max_request_bytes", "login_limit", "login_window", "header_timeout",
                    "max_connections_per_address")

    def reconfigure(self, declarations: list[Admin]) -> list[str]:
        """Serve new options on the listeners already bound (a host reload); returns the names
        of the options that changed.

        Each listener keeps its socket and its open connections; its site gets a new root (users
        file, roles, page options) and request bound, so the next request is answered under the
        new settings.  The login rate limiter keeps the failures it has counted.  Listeners must
        be the same: L{salvusctl.admin.reload} explains why a new one needs a restart.
        """
        if [d.listen for d in declarations] != [d.listen for d in self.declarations]:
            raise ValueError("admin listeners differ: restart the host to bind new ones")
        changed = sorted({name for old, new in zip(self.declarations, declarations, strict=True)
                          for name in self.LIVE_OPTIONS if getattr(old, name) != getattr(new, name)})
        self.declarations = list(declarations)
        for declaration, site in zip(declarations, self.sites, strict=False):
            if {"users", "bootstrap_user"} & set(changed):
                self._bootstrap(declaration)
            fresh = self._site(declaration)
            site.resource = fresh.resource
            site.requestFactory = fresh.requestFactory
            # New connections get the new bounds; open ones keep the deadline they started with.
            site.headTimeout, site.maxPerAddress = fresh.headTimeout, fresh.maxPerAddress
        for declaration in declarations:  # one limiter for all listeners: the last one's limits
            self.limiter.limit, self.limiter.window = declaration.login_limit, declaration.login_window
        for name in changed:
            log.info("admin: {name} changed by a reload", name=name)
        return changed

    def privilegedStartService(self) -> None:
        """Bind every listener (before twistd drops privileges), failing loudly on the first error.

        A listener that cannot bind (port taken, socket path not writable, unreadable key) raises
        here, so the host stops with that one error instead of running without its admin.
        """
        super().privilegedStartService()
        if self.ready is not None:
            return
        self._observe()
        listening = []
        self.sites = []
        for declaration in self.declarations:
            self._bootstrap(declaration)
            site = self._site(declaration)
            site.hostNames = HostNames([self.state.host_name])
            self.sites.append(site)
            for description in declaration.listen:
                kind, full = self._endpointString(declaration, description, site)
                if kind == "unix":
                    _, args, kwargs = parseListener(description)
                    d = self._replaceStale(str(args[0] if args else kwargs.get("address", "")))
                    if d is not None:
                        listening.append(d)
                        continue
                try:
                    endpoint = self._endpoint(kind, full)
                except ValueError as e:
                    listening.append(defer.fail(e))
                    continue
                d = endpoint.listen(site)
                d.addCallback(self._listening, kind, full)
                listening.append(d)
        self.ready = defer.gatherResults(listening, consumeErrors=True)
        failures: list[Any] = []
        self.ready.addErrback(failures.append)
        if failures:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            error = failures[0].value
            if isinstance(error, defer.FirstError):
                error = error.subFailure.value
            log.error("admin cannot listen: {error}", error=error)
            raise error

    def _replaceStale(self, path: str) -> defer.Deferred | None:
        """Remove a stale socket at C{path} (see L{clearStaleSocket}); a failed Deferred with one
        clear line when a live process serves it."""
        try:
            makeSocketDirectory(path)
            if clearStaleSocket(path):
                log.warn("admin: replaced the stale socket {path} (nobody answered on it)", path=path)
        except ConfigError as e:
            return defer.fail(e)
        return None

    def startService(self) -> None:
        super().startService()
        if self.ready is None:
            self.privilegedStartService()

    def _listening(self, port: Any, kind: str, description: str) -> Any:
        self.ports.append(port)
        if kind == "unix":
            os.chmod(port.getHost().name, 0o600)
        log.info("admin listening on {d}", d=description.split(":privateKey=")[0])
        return port

    def _observe(self) -> None:
        """Count the supervisor's state changes for /metrics while the admin runs."""
        supervisor = self.state.services.get("supervisor")
        if supervisor is not None and self.state.transitions is None:
            self.state.transitions = TransitionCounter()
            supervisor.addObserver(self.state.transitions)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        supervisor = self.state.services.get("supervisor")
        if supervisor is not None and self.state.transitions is not None:
            supervisor.removeObserver(self.state.transitions)
            self.state.transitions = None
        ports, self.ports = self.ports, []
        if self.pool is not None:
            pool, self.pool = self.pool, None
            self.reactor.callInThread(pool.stop)  # joins its threads, off the reactor's thread
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def buildAdmin(context: Any, declarations: list[Admin]) -> AdminService | None:
    """One service for all of a host's C{Admin} declarations (None when there are none)."""
    if not declarations:
        return None
    state = AdminState(
        services=context.services, clock=context.reactor, host_name=context.host.name, store=context.store,
        context=context,
    )
    return AdminService(context.reactor, list(declarations), state, context.var_dir)


def wireAdmin(context: Any, service: AdminService) -> None:
    """The host's wiring phase for the admin: the supervisor's children learn its socket."""
    _tellChildrenTheSocket(context.services.get("supervisor"), service.declarations)


def _tellChildrenTheSocket(supervisor: Any, declarations: list[Admin]) -> None:
    """Give the supervisor the first unix listener's URL for its children's
    C{SUPERVISOR_SERVER_URL} (what C{supervisor.childutils.getRPCInterface} connects to; its
    peer credentials let them in without a password, see L{salvusctl.admin.auth.Gate})."""
    if supervisor is None or not hasattr(supervisor, "serverURL"):
        return
    for declaration in declarations:
        for description in declaration.listen:
            kind, args, kwargs = parseListener(description)
            if kind == "unix":
                path = str(args[0] if args else kwargs.get("address", ""))
                supervisor.serverURL = "unix://" + os.path.abspath(path)
                return

"""Authentication for every admin route: C{twisted.cred} basic auth, roles, rate limiting.

The site's root is a L{Gate}: it adds the security headers and logs the client in through a
portal whose L{UsersChecker} checks the users file under the L{LoginRateLimiter} (attempts
counted per user and client before they are checked, 429 beyond the limit) and the bounded
L{PasswordChecks} queue.  The avatar is the application resource with the logged-in L{User}
attached to the request, so pages and XML-RPC decide what a viewer or an operator may do.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from collections import OrderedDict, deque
from typing import Any

from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server, util
from twisted.web.guard import BasicCredentialFactory
from zope.interface import implementer

from salvusctl.admin.users import DUMMY_HASH, OPERATOR, User, UsersFile, UsersFileError, verifyPassword

__all__ = [
    "LoginRateLimiter",
    "PasswordChecks",
    "TooManyAttempts",
    "UsersChecker",
    "AdminRealm",
    "AddressedBasicCredentialFactory",
    "Gate",
    "BoundedRequest",
    "currentUser",
    "clientKey",
    "makeGate",
]

_USER_ATTRIBUTE = "_salvus_user"

log = Logger()


def clientKey(request: Any) -> str:
    """The rate-limiting key of a request's client: its IP, or C{unix:uid=N} for a local socket
    (the peer's uid from C{SO_PEERCRED}, so one local account's failures never lock out
    another's; plain C{unix} when the platform does not say)."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host:
        return host
    channel = getattr(request, "channel", None)
    uid = _peerUid(getattr(channel, "transport", None))
    return "unix" if uid is None else f"unix:uid={uid}"


def _peerUid(transport: Any) -> int | None:
    peer = getattr(transport, "_salvusPeerUid", False)
    if peer is not False:
        return peer
    uid = None
    sock = getattr(transport, "socket", None)
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is not None and option is not None:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", raw)
        except (OSError, struct.error):
            uid = None
    try:
        transport._salvusPeerUid = uid
    except AttributeError:
        pass
    return uid


def currentUser(request: Any) -> User | None:
    """The L{User} that authenticated this request (None before authentication)."""
    return getattr(request, _USER_ATTRIBUTE, None)


class TooManyAttempts(cred_error.LoginFailed):
    """A login refused before its password was checked: too many recent failures, or too many
    password checks already waiting.  The gate answers 429 with C{Retry-After: wait}."""

    def __init__(self, wait: float, reason: str):
        super().__init__(reason)
        self.wait = wait


class _Pair:
    """The record of one (user, client): recent attempts, and the lock they earned."""

    __slots__ = ("times", "until", "lockouts", "last")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.until = 0.0
        self.lockouts = 0
        self.last = 0.0


def _local(client: str) -> bool:
    return client.startswith("unix")


class LoginRateLimiter:
    """Limits password guesses per (user, client) and per user, counting each attempt before it
    is checked.

    Why this shape:

      - An attempt counts as soon as it arrives (L{attempt}), not when its password check ends:
        otherwise 200 guesses sent at once all pass the check on arrival.  A success takes its
        own attempt back (L{succeeded}); a check that never ran takes it back too (L{cancel}).
      - Failures are counted per (user, client).  C{limit} attempts within C{window} seconds lock
        that pair for C{window}; each further lock of the same pair doubles, up to C{max_backoff}.
        Another user at the same address is not affected: a correct password is never refused
        because someone else guessed at another account, and one local user cannot keep the
        operators out by failing on purpose.
      - Per user, across clients, C{limit * user_factor} attempts within C{window} (a guesser
        spread over many addresses) refuse that user from clients it has not logged in from
        before; clients where it did log in, and the unix socket (whose client key is the peer's
        uid), stay the way in.
      - A success clears only the record of its own user at its own client.

    Memory is bounded: at most C{max_clients} pair records and as many per-user records, the
    oldest unlocked ones forgotten first.

    @param clock: provides C{seconds()} (the reactor, or a C{Clock} in tests).
    """

    def __init__(
        self,
        clock: Any,
        limit: int = 5,
        window: float = 60.0,
        max_clients: int = 10000,
        user_factor: int = 10,
        max_backoff: float = 900.0,
    ):
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.user_factor = user_factor
        self.max_backoff = max_backoff
        self._pairs: OrderedDict[tuple[str, str], _Pair] = OrderedDict()
        self._users: OrderedDict[str, deque[float]] = OrderedDict()
        self._trusted: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    # -- bookkeeping -------------------------------------------------------------------------------

    def _prune(self, times: deque[float], now: float) -> deque[float]:
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def _bound(self, table: OrderedDict, locked: Any = None) -> None:
        while len(table) > self.max_clients:
            victim = next(iter(table))
            if locked is not None:
                for key in table:
                    if not locked(table[key]):
                        victim = key
                        break
            del table[victim]

    def _pair(self, user: str, client: str, create: bool = False) -> _Pair | None:
        key = (user, client)
        pair = self._pairs.get(key)
        if pair is None and create:
            pair = self._pairs[key] = _Pair()
            now = self.clock.seconds()
            self._bound(self._pairs, lambda p: p.until > now)
        elif pair is not None:
            self._pairs.move_to_end(key)
        return pair

    def _userTimes(self, user: str, create: bool = False) -> deque[float] | None:
        times = self._users.get(user)
        if times is None and create:
            times = self._users[user] = deque(maxlen=self.limit * self.user_factor * 2)
            self._bound(self._users)
        return times

    def trusted(self, user: str, client: str) -> bool:
        """Whether C{user} logged in from C{client} before (the per-user limit spares it)."""
        return _local(client) or client in self._trusted.get(user, ())

    # -- the verbs ---------------------------------------------------------------------------------

    def blockedFor(self, user: str, client: str) -> float:
        """Seconds until C{user} may try again from C{client} (0 when it may try now)."""
        now = self.clock.seconds()
        pair = self._pair(user, client)
        if pair is not None and pair.until > now:
            return pair.until - now
        times = self._users.get(user)
        if times is not None and not self.trusted(user, client):
            self._prune(times, now)
            if len(times) >= self.limit * self.user_factor:
                return max(0.0, times[0] + self.window - now)
        return 0.0

    def attempt(self, user: str, client: str) -> None:
        """Count one login attempt of C{user} from C{client}, before its password is checked."""
        now = self.clock.seconds()
        pair = self._pair(user, client, create=True)
        if pair.until and pair.until <= now - self.max_backoff:
            pair.lockouts = 0  # a long quiet spell forgets earlier locks
        pair.last = now
        self._prune(pair.times, now).append(now)
        if len(pair.times) >= self.limit:
            pair.lockouts += 1
            pair.until = now + min(self.window * 2 ** (pair.lockouts - 1), self.max_backoff)
            pair.times.clear()
        self._userTimes(user, create=True).append(now)

    def cancel(self, user: str, client: str) -> None:
        """Take back an attempt whose password was never checked (the checks were all busy)."""
        pair = self._pair(user, client)
        if pair is not None and pair.times:
            pair.times.pop()
        times = self._users.get(user)
        if times:
            times.pop()

    def failed(self, user: str, client: str) -> None:
        """An attempt failed: it was counted when it arrived, so nothing more is recorded."""

    def succeeded(self, user: str, client: str) -> None:
        """C{user} logged in from C{client}: forget that pair's failures, take this attempt out of
        the user's count, and remember the client as one the user logs in from."""
        self._pairs.pop((user, client), None)
        times = self._users.get(user)
        if times:
            times.pop()
        clients = self._trusted.setdefault(user, OrderedDict())
        clients[client] = self.clock.seconds()
        clients.move_to_end(client)
        while len(clients) > 16:
            clients.popitem(last=False)
        self._trusted.move_to_end(user)
        self._bound(self._trusted)

    def size(self) -> int:
        """How many records are kept (tests check the bound)."""
        return len(self._pairs) + len(self._users) + len(self._trusted)


class PasswordChecks:
    """At most C{concurrency} password checks at once, at most C{max_waiting} more queued (and
    C{per_client} queued or running per client); beyond that L{run} raises L{TooManyAttempts}.

    Each scrypt check holds 16 MiB for tens of milliseconds: without a bound, a burst of
    logins (even for unknown users, which cost as much as known ones) makes as many of them
    run at once as the thread pool has threads, and queues the rest without limit.
    """

    def __init__(self, concurrency: int = 2, max_waiting: int = 32, per_client: int = 4):
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.per_client = per_client
        self.running = 0
        self._waiting: deque[tuple[str, defer.Deferred, Any, tuple]] = deque()
        self._perClient: dict[str, int] = {}

    def run(self, client: str, f: Any, *args: Any) -> defer.Deferred:
        """C{f(*args)} (which returns a Deferred) when a slot is free."""
        if self._perClient.get(client, 0) >= self.per_client:
            raise TooManyAttempts(1.0, "too many password checks from this client at once")
        if self.running >= self.concurrency and len(self._waiting) >= self.max_waiting:
            raise TooManyAttempts(1.0, "too many password checks waiting")
        self._perClient[client] = self._perClient.get(client, 0) + 1
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((client, d, f, args))
        self._next()
        return d

    def _next(self) -> None:
        while self._waiting and self.running < self.concurrency:
            client, d, f, args = self._waiting.popleft()
            self.running += 1
            result = defer.maybeDeferred(f, *args)
            result.addBoth(self._done, client)
            result.chainDeferred(d)

    def _done(self, result: Any, client: str) -> Any:
        self.running -= 1
        left = self._perClient.get(client, 1) - 1
        if left:
            self._perClient[client] = left
        else:
            self._perClient.pop(client, None)
        self._next()
        return result


class AddressedBasicCredentialFactory(BasicCredentialFactory):
    """HTTP basic credentials that remember which client sent them (for the rate limiter)."""

    def decode(self, response: bytes, request: Any):
        credentials = super().decode(response, request)
        credentials.clientKey = clientKey(request)
        return credentials


@implementer(ICredentialsChecker)
class UsersChecker:
    """Checks usernames and passwords against the L{UsersFile}, under the L{LoginRateLimiter}.

    Each attempt is counted before its password is checked, and the slow checks go through one
    bounded L{PasswordChecks} queue; a refused attempt fails with L{TooManyAttempts} (429).

    @param verify: runs C{verifyPassword(password, hash)} and returns a Deferred of its result.
        The admin service runs it in the reactor's thread pool, so a scrypt check (tens of ms)
        never stalls other clients; the default runs it inline (tests, tools).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        users: UsersFile,
        limiter: LoginRateLimiter,
        verify: Any = None,
        checks: PasswordChecks | None = None,
    ):
        self.users = users
        self.limiter = limiter
        self.checks = checks or PasswordChecks()
        self.verify = verify or (
            lambda password, stored: defer.maybeDeferred(verifyPassword, password, stored)
        )

    def requestAvatarId(self, credentials):
        key = getattr(credentials, "clientKey", "unknown")
        try:
            name = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            name, password = "", None
        wait = self.limiter.blockedFor(name, key)
        if wait > 0:
            return defer.fail(TooManyAttempts(wait, "too many failed logins"))
        self.limiter.attempt(name, key)
        if password is None:
            _logFailure(name, key, "bad credentials encoding")
            return defer.fail(cred_error.UnauthorizedLogin("bad credentials encoding"))
        try:
            user, cache_key, cached = self.users.lookup(name, password)
        except UsersFileError as e:
            self.limiter.cancel(name, key)
            log.error("admin login refused: {error}", error=e)
            return defer.fail(cred_error.UnauthorizedLogin(str(e)))
        if cached:
            self.limiter.succeeded(name, key)
            return defer.succeed(user.name.encode("utf-8"))
        try:
            d = self.checks.run(key, self.verify, password, user.hash if user is not None else DUMMY_HASH)
        except TooManyAttempts as e:
            self.limiter.cancel(name, key)
            return defer.fail(e)

        def checked(ok):
            if not ok or user is None:
                self.limiter.failed(name, key)
                _logFailure(name, key, "unknown user" if user is None else "wrong password")
                raise cred_error.UnauthorizedLogin("wrong user name or password")
            self.users.remember(name, cache_key, user)
            self.limiter.succeeded(name, key)
            return user.name.encode("utf-8")

        return d.addCallback(checked)


def _logFailure(name: str, client: str, why: str) -> None:
    """The audit line of a failed login: who was tried, from where (the name is quoted: it is
    whatever the client sent, cut to 64 characters)."""
    log.info(
        "admin login failed for user {user!r} from {client}: {why}", user=name[:64], client=client, why=why
    )


class _UserRoot(resource.Resource):
    """The avatar: attaches the user to the request, then serves the application unchanged."""

    isLeaf = False

    def __init__(self, user: User, app: resource.IResource):
        super().__init__()
        self.user = user
        self.app = app

    def getChildWithDefault(self, path, request):
        setattr(request, _USER_ATTRIBUTE, self.user)
        request.postpath.insert(0, request.prepath.pop())
        return self.app

    def render(self, request):
        setattr(request, _USER_ATTRIBUTE, self.user)
        return self.app.render(request)


@implementer(IRealm)
class AdminRealm:
    """Maps an authenticated user name to the application resource seen as that user."""

    def __init__(self, users: UsersFile, app: resource.IResource):
        self.users = users
        self.app = app

    def requestAvatar(self, avatarId, mind, *interfaces):
        if resource.IResource not in interfaces:
            raise NotImplementedError("the admin only serves web resources")
        user = self.users.get(avatarId.decode("utf-8"))
        if user is None:
            raise cred_error.UnauthorizedLogin("user removed")
        return resource.IResource, _UserRoot(user, self.app), lambda: None


def securityHeaders(request: Any) -> None:
    """Headers every admin response carries, whatever route produced it (and no C{Server:}
    header naming Twisted's version for a scanner to match)."""
    request.responseHeaders.removeHeader(b"server")
    request.setHeader(
        b"content-security-policy",
        b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" even on its
    # own forms, and the CSRF check refuses null; other sites still get no Referer at all.
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"cache-control", b"no-store")
    if request.isSecure():
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


class _TooManyFailures(resource.Resource):
    isLeaf = True

    def __init__(self, retry_after: float, reason: str = "too many failed logins; try again later"):
        super().__init__()
        self.retry_after = retry_after
        self.reason = reason

    def render(self, request):
        request.setResponseCode(429)
        request.setHeader(b"retry-after", b"%d" % max(1, int(self.retry_after + 0.999)))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.reason.encode("utf-8") + b"\n"


class _Unauthorized(resource.Resource):
    """401 with a basic challenge."""

    isLeaf = True

    def __init__(self, realm: bytes):
        super().__init__()
        self.realm = realm

    def render(self, request):
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'basic realm="' + self.realm + b'"')
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"" if request.method == b"HEAD" else b"authentication required\n"


class _Failed(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"internal error (logged on the host)\n"


class Gate(resource.Resource):
    """The site root: security headers, then basic authentication through the portal.

    It replaces C{twisted.web.guard.HTTPAuthSessionWrapper} because that one turns every failed
    login into 401, and a login refused by the rate limiter must say 429 with C{Retry-After}.
    """

    isLeaf = False

    def __init__(self, portal: Portal, limiter: LoginRateLimiter, realm: bytes = b"salvus",
                 app: resource.IResource | None = None, operatorUids: frozenset[int] | None = None):
        super().__init__()
        self.portal = portal
        self.limiter = limiter
        self.realm = realm
        self.factory = AddressedBasicCredentialFactory(realm)
        self.app = app
        self.operatorUids = frozenset({0, os.getuid()}) if operatorUids is None else operatorUids

    def _authorized(self, request) -> resource.IResource:
        header = request.getHeader(b"authorization")
        if not header:
            peer = self._peerOperator(request)
            if peer is not None:
                return _UserRoot(peer, self.app)
            return _Unauthorized(self.realm)
        scheme, _, response = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return _Unauthorized(self.realm)
        try:
            credentials = self.factory.decode(response.strip(), request)
        except cred_error.LoginFailed:
            return _Unauthorized(self.realm)
        if not credentials.username and not credentials.password:
            # supervisor.childutils sends an empty user and password: no login, so the peer's
            # credentials decide, as with no header at all.
            peer = self._peerOperator(request)
            return _UserRoot(peer, self.app) if peer is not None else _Unauthorized(self.realm)
        d = self.portal.login(credentials, None, resource.IResource)
        d.addCallbacks(lambda result: result[1], self._loginFailed)
        return util.DeferredResource(d)

    def _peerOperator(self, request) -> User | None:
        """An operator for a request with no password over the unix socket whose peer (by the
        kernel's C{SO_PEERCRED}) is root or the host's own uid, as supervisord trusts a local
        root or same-user client of its socket; anyone else must log in."""
        if self.app is None or getattr(request.getClientAddress(), "host", None):
            return None
        uid = _peerUid(getattr(getattr(request, "channel", None), "transport", None))
        if uid is None or uid not in self.operatorUids:
            return None
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = f"uid{uid}"
        return User(name=f"{name}@unix", role=OPERATOR, hash="")

    def _loginFailed(self, failure) -> resource.IResource:
        if failure.check(TooManyAttempts):
            return _TooManyFailures(failure.value.wait, str(failure.value) + "; try again later")
        if failure.check(cred_error.Unauthorized, cred_error.LoginFailed):
            return _Unauthorized(self.realm)
        log.failure("admin login failed unexpectedly", failure)
        return _Failed()

    def getChildWithDefault(self, path, request):
        securityHeaders(request)
        request.postpath.insert(0, request.prepath.pop())
        return self._authorized(request)

    def render(self, request):
        securityHeaders(request)
        return self._authorized(request).render(request)


class BoundedRequest(server.Request):
    """A request whose body is bounded: larger bodies are discarded as they arrive and get 413.

    Twisted buffers a whole request body (to a temporary file) before any resource sees it; this
    keeps a huge XML-RPC payload from costing memory or disk at all.
    """

    maxBody = 1024 * 1024

    def gotLength(self, length):
        self._bodySeen = 0
        self._tooLarge = length is not None and length > self.maxBody
        if self._tooLarge:
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._bodySeen = getattr(self, "_bodySeen", 0) + len(data)
        if getattr(self, "_tooLarge", False):
            return
        if self._bodySeen > self.maxBody:
            self._tooLarge = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def _onNetwork(self) -> bool:
        """Whether this request came over TCP or TLS (False: the unix socket, no address)."""
        from twisted.internet.address import IPv4Address, IPv6Address

        return isinstance(self.getHost(), (IPv4Address, IPv6Address))

    def getRequestHostname(self) -> bytes:
        """The C{Host} header's name; C{localhost} on the unix socket when there is none.

        Twisted falls back to the listening address's C{host}, which a unix socket address does
        not have: an HTTP/1.0 request without C{Host} (nc, socat, a bare script) would end in an
        AttributeError inside Klein instead of a page.
        """
        if not self._onNetwork() and not self.getHeader(b"host"):
            return b"localhost"
        return super().getRequestHostname()

    def prePathURL(self) -> bytes:
        """The absolute URL up to this resource; on the unix socket C{http://NAME/…} with no
        port (Twisted reads the listening address's C{port}, which a socket path has not)."""
        if self._onNetwork():
            return super().prePathURL()
        from urllib.parse import quote

        path = "/".join(quote(s.decode("latin-1"), safe="") for s in self.prepath)
        return b"http://" + self.getRequestHostname() + b"/" + path.encode("ascii")

    def _misdirected(self) -> tuple[int, bytes] | None:
        """The status and reason refusing this request's C{Host} header (None: accepted): 421
        for a name this listener does not answer to, 400 for none at all; see L{hostcheck}.

        Only a site given C{hostNames} checks, and only on TCP and TLS connections: the unix
        socket has no names.  An HTTP/1.0 request may omit the header; HTTP/1.1 must send one.
        """
        from twisted.internet.address import IPv4Address, IPv6Address

        names = getattr(self.channel.site, "hostNames", None)
        local = self.channel.transport.getHost() if self.channel.transport is not None else None
        if names is None or not isinstance(local, (IPv4Address, IPv6Address)):
            return None
        values = self.requestHeaders.getRawHeaders(b"host") or []
        if not values:
            return None if self.clientproto == b"HTTP/1.0" else (400, b"request has no Host header\n")
        if len(values) == 1 and names.allows(values[0].decode("latin-1"), local.host):
            return None
        return 421, b"this listener does not answer to Host: %s\n" % b", ".join(values)[:200]

    def process(self):
        refused = self._misdirected()
        if refused is not None:
            self.site = self.channel.site
            securityHeaders(self)
            self.setResponseCode(refused[0])
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"connection", b"close")
            self.write(refused[1])
            self.finish()
            return
        if getattr(self, "_tooLarge", False):
            self.site = self.channel.site
            securityHeaders(self)
            self.setResponseCode(413)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"connection", b"close")
            self.write(b"request body larger than %d bytes\n" % self.maxBody)
            self.finish()
            return
        super().process()


def makeGate(
    app: resource.IResource,
    users: UsersFile,
    limiter: LoginRateLimiter,
    realm_name: bytes = b"salvus",
    verify: Any = None,
    checks: PasswordChecks | None = None,
) -> Gate:
    """The authenticated root resource serving C{app} (C{verify}, C{checks}: see L{UsersChecker})."""
    portal = Portal(AdminRealm(users, app), [UsersChecker(users, limiter, verify, checks)])
    return Gate(portal, limiter, realm_name, app=app)

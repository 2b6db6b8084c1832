"""Authentication for every admin route: C{twisted.cred} basic auth, roles, rate limiting.

The site's root is a L{Gate}: it adds the security headers, turns away clients that failed to log
in too often (429), and hands everything else to Twisted's C{HTTPAuthSessionWrapper}, whose portal
checks the users file.  The avatar is the application resource with the logged-in L{User} attached
to the request, so pages and XML-RPC decide what a viewer or an operator may do.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from zope.interface import implementer

from salvusctl.admin.users import DUMMY_HASH, User, UsersFile, UsersFileError, verifyPassword

__all__ = [
    "LoginRateLimiter",
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
    """The rate-limiting key of a request's client: its IP, or C{unix} for a local socket."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if host else "unix"


def currentUser(request: Any) -> User | None:
    """The L{User} that authenticated this request (None before authentication)."""
    return getattr(request, _USER_ATTRIBUTE, None)


class LoginRateLimiter:
    """Counts failed logins per client address in a sliding window.

    After C{limit} failures within C{window} seconds an address is refused until the oldest of
    them leaves the window; a successful login clears its record.

    @param clock: provides C{seconds()} (the reactor, or a C{Clock} in tests).
    """

    def __init__(self, clock: Any, limit: int = 5, window: float = 60.0, max_clients: int = 10000):
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock.seconds()
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def blockedFor(self, key: str) -> float:
        """Seconds until C{key} may try again (0 when it may try now)."""
        times = self._recent(key)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock.seconds())

    def failed(self, key: str) -> None:
        """Record one failed login from C{key}."""
        if key not in self._failures and len(self._failures) >= self.max_clients:
            # Bounded memory under a spray of addresses: forget the oldest record.
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(key, deque(maxlen=self.limit * 2)).append(self.clock.seconds())

    def succeeded(self, key: str) -> None:
        """Forget C{key}'s failures."""
        self._failures.pop(key, None)


class AddressedBasicCredentialFactory(BasicCredentialFactory):
    """HTTP basic credentials that remember which client sent them (for the rate limiter)."""

    def decode(self, response: bytes, request: Any):
        credentials = super().decode(response, request)
        credentials.clientKey = clientKey(request)
        return credentials


@implementer(ICredentialsChecker)
class UsersChecker:
    """Checks usernames and passwords against the L{UsersFile}; records failures per client.

    @param verify: runs C{verifyPassword(password, hash)} and returns a Deferred of its result.
        The admin service runs it in the reactor's thread pool, so a scrypt check (tens of ms)
        never stalls other clients; the default runs it inline (tests, tools).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: UsersFile, limiter: LoginRateLimiter, verify: Any = None):
        self.users = users
        self.limiter = limiter
        self.verify = verify or (
            lambda password, stored: defer.maybeDeferred(verifyPassword, password, stored)
        )

    def requestAvatarId(self, credentials):
        key = getattr(credentials, "clientKey", "unknown")
        try:
            name = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            self.limiter.failed(key)
            return defer.fail(cred_error.UnauthorizedLogin("bad credentials encoding"))
        try:
            user, cache_key, cached = self.users.lookup(name, password)
        except UsersFileError as e:
            log.error("admin login refused: {error}", error=e)
            return defer.fail(cred_error.UnauthorizedLogin(str(e)))
        if cached:
            self.limiter.succeeded(key)
            return defer.succeed(user.name.encode("utf-8"))
        d = self.verify(password, user.hash if user is not None else DUMMY_HASH)

        def checked(ok):
            if not ok or user is None:
                self.limiter.failed(key)
                raise cred_error.UnauthorizedLogin("wrong user name or password")
            self.users.remember(name, cache_key, user)
            self.limiter.succeeded(key)
            return user.name.encode("utf-8")

        return d.addCallback(checked)


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
    """Headers every admin response carries, whatever route produced it."""
    request.setHeader(
        b"content-security-policy",
        b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")
    if request.isSecure():
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


class _TooManyFailures(resource.Resource):
    isLeaf = True

    def __init__(self, retry_after: float):
        super().__init__()
        self.retry_after = retry_after

    def render(self, request):
        request.setResponseCode(429)
        request.setHeader(b"retry-after", b"%d" % max(1, int(self.retry_after + 0.999)))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"too many failed logins from this address; try again later\n"


class Gate(resource.Resource):
    """The site root: security headers, the failed-login limit, then authentication."""

    isLeaf = False

    def __init__(self, guarded: resource.IResource, limiter: LoginRateLimiter):
        super().__init__()
        self.guarded = guarded
        self.limiter = limiter

    def _refused(self, request):
        wait = self.limiter.blockedFor(clientKey(request))
        return _TooManyFailures(wait) if wait > 0 else None

    def getChildWithDefault(self, path, request):
        securityHeaders(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return self.guarded.getChildWithDefault(path, request)

    def render(self, request):
        securityHeaders(request)
        refused = self._refused(request)
        if refused is not None:
            return refused.render(request)
        return self.guarded.render(request)


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

    def process(self):
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
) -> Gate:
    """The authenticated root resource serving C{app} (C{verify}: see L{UsersChecker})."""
    portal = Portal(AdminRealm(users, app), [UsersChecker(users, limiter, verify)])
    wrapper = HTTPAuthSessionWrapper(portal, [AddressedBasicCredentialFactory(realm_name)])
    return Gate(wrapper, limiter)

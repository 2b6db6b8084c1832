"""The admin's web site: one authenticated root over the pages, C{/RPC2} and C{/metrics}."""

from __future__ import annotations

from twisted.web.server import Site

from salvusctl.admin.auth import BoundedRequest, LoginRateLimiter, makeGate
from salvusctl.admin.state import AdminState
from salvusctl.admin.users import UsersFile

__all__ = ["makeSite", "makeRoot"]


def makeRoot(state: AdminState, users: UsersFile, limiter: LoginRateLimiter, verify=None):
    """The authenticated root resource (what a C{StubTreq} in a test drives)."""
    from salvusctl.admin.pages import AdminPages

    pages = AdminPages(state)
    return makeGate(pages.resource(), users, limiter, verify=verify)


def threadedVerify(reactor):
    """Password checks in the reactor's thread pool: scrypt must not stall other clients."""
    from twisted.internet.threads import deferToThreadPool

    from salvusctl.admin.users import verifyPassword

    def verify(password: str, stored: str):
        return deferToThreadPool(reactor, reactor.getThreadPool(), verifyPassword, password, stored)

    return verify


def makeSite(
    state: AdminState, users: UsersFile, limiter: LoginRateLimiter, max_request_bytes: int = 1024 * 1024
) -> Site:
    """A C{Site} for real listeners: bounded request bodies, no tracebacks shown, no access log noise."""

    class Request(BoundedRequest):
        maxBody = max_request_bytes

    verify = threadedVerify(state.clock) if hasattr(state.clock, "getThreadPool") else None
    site = Site(makeRoot(state, users, limiter, verify), requestFactory=Request, reactor=state.clock)
    site.displayTracebacks = False
    return site

"""The admin's web site: one authenticated root over the pages, C{/RPC2} and C{/metrics}."""

from __future__ import annotations

from twisted.web.server import Site

from salvusctl.admin.auth import BoundedRequest, LoginRateLimiter, makeGate
from salvusctl.admin.state import AdminState
from salvusctl.admin.users import UsersFile

__all__ = ["makeSite", "makeRoot"]


def makeRoot(state: AdminState, users: UsersFile, limiter: LoginRateLimiter):
    """The authenticated root resource (what a C{StubTreq} in a test drives)."""
    from salvusctl.admin.pages import AdminPages

    pages = AdminPages(state)
    return makeGate(pages.resource(), users, limiter)


def makeSite(
    state: AdminState, users: UsersFile, limiter: LoginRateLimiter, max_request_bytes: int = 1024 * 1024
) -> Site:
    """A C{Site} for real listeners: bounded request bodies, no tracebacks shown, no access log noise."""

    class Request(BoundedRequest):
        maxBody = max_request_bytes

    site = Site(makeRoot(state, users, limiter), requestFactory=Request, reactor=state.clock)
    site.displayTracebacks = False
    return site

"""The admin's web site: one authenticated root over the pages, C{/RPC2} and C{/metrics}."""

from __future__ import annotations

from twisted.web.server import Site

from salvusctl.admin.auth import BoundedRequest, LoginRateLimiter, PasswordChecks, makeGate
from salvusctl.admin.slowclients import HEAD_TIMEOUT, MAX_PER_ADDRESS, GuardedSite
from salvusctl.admin.state import AdminState
from salvusctl.admin.users import UsersFile

__all__ = ["makeSite", "makeRoot"]


def makeRoot(
    state: AdminState,
    users: UsersFile,
    limiter: LoginRateLimiter,
    verify=None,
    checks: PasswordChecks | None = None,
):
    """The authenticated root resource (what a C{StubTreq} in a test drives)."""
    from salvusctl.admin.pages import AdminPages

    pages = AdminPages(state)
    return makeGate(pages.resource(), users, limiter, verify=verify, checks=checks)


def threadedVerify(reactor, pool):
    """Password checks in C{pool}'s threads: scrypt must not stall other clients.

    The pool is the admin's own, as small as L{PasswordChecks}' concurrency: each scrypt check
    allocates 16 MiB, and glibc keeps that much in each thread's arena afterwards, so checks
    spread over the reactor's ten threads would keep ten times that.
    """
    from twisted.internet.threads import deferToThreadPool

    from salvusctl.admin.users import verifyPassword

    def verify(password: str, stored: str):
        return deferToThreadPool(reactor, pool, verifyPassword, password, stored)

    return verify


def makeSite(
    state: AdminState,
    users: UsersFile,
    limiter: LoginRateLimiter,
    max_request_bytes: int = 1024 * 1024,
    checks: PasswordChecks | None = None,
    pool=None,
    head_timeout: float = HEAD_TIMEOUT,
    max_per_address: int = MAX_PER_ADDRESS,
) -> Site:
    """A C{Site} for real listeners: bounded request bodies, request heads within C{head_timeout}
    seconds, at most C{max_per_address} connections per client address (L{GuardedSite}), no
    tracebacks shown, no access log noise."""

    class Request(BoundedRequest):
        maxBody = max_request_bytes

    verify = threadedVerify(state.clock, pool) if pool is not None else None
    site = GuardedSite(makeRoot(state, users, limiter, verify, checks), requestFactory=Request,
                       reactor=state.clock, headTimeout=head_timeout, maxPerAddress=max_per_address)
    site.displayTracebacks = False
    return site

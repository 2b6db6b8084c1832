"""Backend DNS names, resolved with Twisted's resolver and cached with a TTL.

Resolution is kept off the per-connection path: a periodic refresh updates each named host's
C{ip}, and connections use whatever address is current.  A failed lookup keeps the last good
address (and logs), so a DNS outage does not take a healthy backend out of rotation; a name never
resolved keeps its host out of rotation until it resolves.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from salvusctl.balancer.model import BackendHost

__all__ = ["DNSCache", "namesResolver"]

log = Logger()


def namesResolver(reactor: Any) -> Any:
    """A C{twisted.names} resolver (reads resolv.conf and hosts) with C{getHostByName}.

    Used when a service declares C{dns="names"}: lookups never block a thread, unlike the
    reactor's default thread-pool resolver.
    """
    from twisted.names import cache, client, hosts, resolve

    return resolve.ResolverChain([
        hosts.Resolver(b"/etc/hosts"),
        cache.CacheResolver(reactor=reactor),
        client.Resolver(resolv=b"/etc/resolv.conf", reactor=reactor),
    ])


class DNSCache:
    """Name → (address, expiry); refreshes hosts whose entry has expired.

    @param resolver: an L{IResolverSimple} (C{getHostByName}); default the reactor's, which is
        C{twisted.names} when the host installs it.
    """

    def __init__(self, reactor: Any, resolver: Any = None, ttl: float = 60.0):
        self.reactor = reactor
        self.resolver = resolver if resolver is not None else getattr(reactor, "resolver", None)
        self.ttl = float(ttl)
        self.entries: dict[str, dict] = {}

    def refresh(self, hosts: list[BackendHost]) -> Deferred:
        """Look up every named host whose entry is missing or expired; fires when all are done."""
        now = self.reactor.seconds()
        pending: dict[str, list[BackendHost]] = {}
        for host in hosts:
            if _isLiteral(host.address):
                continue
            entry = self.entries.get(host.address)
            if entry is not None and entry["expires"] > now:
                if entry["address"] is not None and host.ip != entry["address"]:
                    self._apply(host, entry["address"])
                continue
            pending.setdefault(host.address, []).append(host)
        ds = [self._lookup(name, named) for name, named in pending.items()]
        return DeferredList(ds, consumeErrors=True)

    def _lookup(self, name: str, hosts: list[BackendHost]) -> Deferred:
        from twisted.internet.defer import fail, maybeDeferred

        if self.resolver is None:
            d = fail(RuntimeError("no resolver"))
        else:
            d = maybeDeferred(self.resolver.getHostByName, name)

        def ok(address):
            self.entries[name] = {"address": address, "expires": self.reactor.seconds() + self.ttl,
                                  "error": None}
            for host in hosts:
                self._apply(host, address)

        def failed(failure):
            entry = self.entries.setdefault(name, {"address": None, "expires": 0.0, "error": None})
            entry["error"] = failure.getErrorMessage()
            # retry sooner than a full TTL, keeping the last good address meanwhile
            entry["expires"] = self.reactor.seconds() + min(self.ttl, 5.0)
            log.warn("DNS lookup of {name} failed ({error}); keeping {address}", name=name,
                     error=entry["error"], address=entry["address"])

        d.addCallbacks(ok, failed)
        return d

    def _apply(self, host: BackendHost, address: str) -> None:
        if host.ip != address:
            if host.ip is not None:
                log.info("host {host}: {name} now resolves to {address}", host=host.name,
                         name=host.address, address=address)
            host.ip = address
            host._changed()


def _isLiteral(address: str) -> bool:
    from salvusctl.balancer.model import _isIP

    return _isIP(address)

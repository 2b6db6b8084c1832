"""Sticky by client IP: a client keeps its backend while the backend stays in rotation.

The cache is bounded (least recently used entries go first) and entries expire after C{ttl}
seconds of disuse; the balancer calls L{Sticky.cleanup} periodically so an idle cache shrinks.  A
client whose host left rotation is rescheduled (least connections) and re-pinned.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from zope.interface import implementer

from salvusctl.balancer.schedulers.leastconns import LeastConns
from salvusctl.interfaces import IScheduler

__all__ = ["Sticky"]


@implementer(IScheduler)
class Sticky:
    """Client IP → host, bounded (C{max_entries}) and expiring (C{ttl} seconds)."""

    name = "sticky"

    def __init__(self, clock: Any, rng: Any = None, ttl: float = 1800.0, max_entries: int = 100_000):
        if clock is None:
            raise TypeError("sticky needs a clock")
        if ttl <= 0 or max_entries <= 0:
            raise TypeError("ttl and max_entries must be > 0")
        self._clock = clock
        self.ttl = float(ttl)
        self.max_entries = int(max_entries)
        self._cache: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._fallback = LeastConns()
        self._present: frozenset[int] | None = None
        #: called as C{onAssign(ip, host)} when a client is pinned anew (shared with the other
        #: front-ends of the store, L{salvusctl.balancer.shared}); None: nobody is told
        self.onAssign: Any = None

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        ip = _ip(client_address)
        now = self._clock.seconds()
        entry = self._cache.get(ip)
        if entry is not None:
            host, expires = entry
            if expires > now and host in hosts:
                self._cache[ip] = (host, now + self.ttl)
                self._cache.move_to_end(ip)
                return host
        host = self._fallback.choose(hosts, client_address)
        self.adopt(ip, host)
        if self.onAssign is not None and (entry is None or entry[0] is not host):
            self.onAssign(ip, host)
        return host

    def adopt(self, ip: str, host: Any) -> None:
        """Pin C{ip} to C{host} for C{ttl} from now (a new choice, or another front-end's)."""
        self._cache[ip] = (host, self._clock.seconds() + self.ttl)
        self._cache.move_to_end(ip)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def cleanup(self) -> int:
        """Drop expired entries; returns how many went.  Entries are in last-use order."""
        now = self._clock.seconds()
        dropped = 0
        cache = self._cache
        while cache:
            ip, (_host, expires) = next(iter(cache.items()))
            if expires > now:
                break
            del cache[ip]
            dropped += 1
        return dropped

    def hostsChanged(self, hosts):
        # state changes call this often; only a host leaving the group needs a sweep
        present = frozenset(id(h) for h in hosts)
        removed = self._present - present if self._present is not None else frozenset()
        self._present = present
        if removed:
            for ip in [ip for ip, (h, _) in self._cache.items() if id(h) in removed]:
                del self._cache[ip]

    def __len__(self) -> int:
        return len(self._cache)


def _ip(client_address: Any) -> str:
    host = getattr(client_address, "host", None)
    if host is not None:
        return host
    if isinstance(client_address, tuple):
        return str(client_address[0])
    return str(client_address)

"""Publishing the latest status to memcached, so other hosts read it without the database.

A C{ClientService} keeps one connection (reconnecting with backoff when memcached dies or restarts).
While it is down, publishing is skipped and counted, never queued: the next tick's sample supersedes
the missed one, and the monitor works unchanged (in memory and in the store).

Keys: C{<prefix>:<host>} holds the host sample and the instance names, C{<prefix>:<host>:<name>}
one instance's latest sample, both as JSON, expiring after C{expire} seconds so a dead host's
figures do not linger as current.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.memcache import MemCacheProtocol

__all__ = ["MemcachePublisher", "memcacheKey"]

log = Logger()

_UNSAFE = re.compile(r"[^\x21-\x7e]")


def memcacheKey(*parts: str) -> bytes:
    """A memcached key: printable ASCII without spaces, at most 250 bytes."""
    key = _UNSAFE.sub("_", ":".join(parts)).encode("ascii")
    if len(key) > 250:
        raise ValueError(f"memcached key too long ({len(key)} bytes): {key[:60]!r}…")
    return key


class _Protocol(MemCacheProtocol):
    """Twisted's memcache client with its timeouts on the injected clock."""

    clock: Any = None
    onLost: Any = None

    def callLater(self, period, func):
        return self.clock.callLater(period, func)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.onLost is not None:
            self.onLost(self)


class MemcachePublisher:
    """Writes each tick's latest status to memcached; degrades to a no-op while it is down.

    @param endpoint: an C{IStreamClientEndpoint} to memcached.
    @param expire: seconds a published value stays valid (default: a few sample intervals).
    """

    def __init__(self, reactor, endpoint, prefix: str = "salvus", expire: int = 60,
                 timeout: float = 2.0):
        self._reactor = reactor
        self._prefix = prefix
        self.expire = int(expire)
        self._timeout = timeout
        self._proto: _Protocol | None = None
        self.published = 0
        self.skipped = 0
        self.failed = 0
        self._wasDown = False
        factory = Factory.forProtocol(self._build)
        factory.noisy = False
        self._service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            clock=reactor,
            prepareConnection=self._connected,
        )

    def _build(self) -> _Protocol:
        proto = _Protocol(timeOut=self._timeout)
        proto.clock = self._reactor
        proto.onLost = self._lost
        return proto

    def _connected(self, proto) -> None:
        # ClientService hands over its proxy; keep the protocol itself (connectionLost's "self").
        self._proto = getattr(proto, "_protocol", proto)
        if self._wasDown:
            log.info("monitor: memcached is back; publishing the latest status again")
        self._wasDown = False

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None
            self._wasDown = True
            log.warn("monitor: memcached connection lost; latest status stays in memory until"
                     " it returns")

    @property
    def connected(self) -> bool:
        return self._proto is not None

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred:
        return self._service.stopService()

    def publish(self, host: str, snapshot: Mapping[str, Any]) -> Deferred | None:
        """Write one snapshot (returns a Deferred for tests; failures are counted, not raised)."""
        proto = self._proto
        if proto is None:
            self.skipped += 1
            return None
        instances = snapshot.get("instances") or {}
        index = {
            "timestamp": snapshot.get("timestamp"),
            "host": snapshot.get("host"),
            "instances": sorted(instances),
        }
        writes = [(memcacheKey(self._prefix, host), index)]
        for name, entry in instances.items():
            writes.append((memcacheKey(self._prefix, host, name), entry))
        ds = []
        for key, value in writes:
            body = json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")
            d = proto.set(key, body, expireTime=self.expire)
            d.addErrback(self._failed)
            ds.append(d)
        self.published += 1
        return DeferredList(ds)

    def _failed(self, failure) -> None:
        self.failed += 1
        return None

    def read(self, host: str, name: str | None = None) -> Deferred:
        """Read back one host's index or one instance (what another host does); None if absent."""
        proto = self._proto
        if proto is None:
            from twisted.internet.defer import fail

            return fail(ConnectionError("memcached is not connected"))
        key = memcacheKey(self._prefix, host) if name is None else memcacheKey(self._prefix, host, name)

        def decode(result):
            _flags, value = result
            return None if value is None else json.loads(value)

        return proto.get(key).addCallback(decode)

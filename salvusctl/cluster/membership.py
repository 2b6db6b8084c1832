"""Membership: this host's heartbeat in C{cluster_hosts}, and its view of every other host.

Each beat writes this host's row (C{last_seen}: the database's clock as it commits) and reads every
row back with the database's clock; a peer's state is L{peerState} of its row at that clock.  Two
things keep a database outage from marking every host down when it ends: a beat replayed from
the store's queue is stamped when the database wrote it, not when it was made; and after the
database server restarts, or after this host could not read it for longer than two heartbeats,
each host has its C{missed} intervals counted from then (L{peerState}'s C{watching_since}) to be
heard from again.  While the store is unreachable the last view is kept as it is.  A change of
state (joined, up, down, left) is logged once and passed to the observers (the balancer feed
drops a down host's instances).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

from salvusctl.cluster.domain import DOWN, LEFT, UP, Peer
from salvusctl.store.errors import StoreError

__all__ = ["Membership"]

log = Logger()

Observer = Callable[[str, "str | None", str, Peer], Any]


class Membership:
    """This host's row and the last view of all rows.

    @param tables: an L{IClusterStore}.
    @ivar peers: host name -> L{Peer} as of the last L{refresh} (this host included).
    """

    def __init__(self, clock: Any, tables: Any, name: str, address: str | None, admin_url: str | None,
                 heartbeat: float, missed: int, version: str):
        self.clock = clock
        self.tables = tables
        self.name = name
        self.address = address
        self.admin_url = admin_url
        self.heartbeat = float(heartbeat)
        self.missed = int(missed)
        self.version = version
        self.started: float | None = None
        self.peers: dict[str, Peer] = {}
        self.observers: list[Observer] = []
        self._beating: Deferred | None = None
        self._unreachable = False
        #: The database's clock at the last successful read, and when this host could last begin
        #: watching (the server's start, or the end of this host's own blindness).
        self._lastRead: float | None = None
        self.watching_since: float | None = None
        #: This host's clock at the last successful read (how old the view is).
        self.read_at: float | None = None

    def addObserver(self, observer: Observer) -> None:
        """Call C{observer(name, old_state, new_state, peer)} when a host's state changes
        (C{old_state} None for a host seen for the first time)."""
        self.observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    def beat(self) -> Deferred:
        """Write this host's heartbeat, then refresh the view; fires when both are done.

        At most one beat is under way: while the store is unreachable the write waits in its
        queue, and later beats do not pile up behind it.  Never fails (errors are logged).
        """
        if self._beating is not None:
            return succeed(None)
        now = self.clock.seconds()
        if self.started is None:
            self.started = now
        d = self.tables.beat(self.name, self.address, self.admin_url, self.started, now,
                             self.heartbeat, self.missed, self.version)
        d.addCallback(lambda _: self.refresh())
        d.addErrback(self._failed, "heartbeat")
        self._beating = d

        def done(result):
            self._beating = None
            return result

        d.addBoth(done)
        return d

    def _failed(self, failure, what: str) -> None:
        if failure.check(StoreError):
            if not self._unreachable:
                self._unreachable = True
                log.warn("cluster: {what} failed: {why}; peers will see {name} as down until the store"
                         " answers", what=what, why=failure.getErrorMessage(), name=self.name)
            return None
        log.failure("cluster: {what} failed", failure, what=what)
        return None

    @inlineCallbacks
    def refresh(self):
        """Read every host's row and compute its state now; report the changes."""
        rows, dbNow, dbStarted = yield self.tables.view()
        if self._unreachable:
            self._unreachable = False
            log.info("cluster: store reachable again; {name} is heartbeating", name=self.name)
        local = self.clock.seconds()
        now = local if dbNow is None else dbNow
        self.read_at = local
        self._watch(now, dbStarted)
        seen = {}
        for row in rows:
            peer = Peer.fromRow(tuple(row), now, self.watching_since)
            seen[peer.name] = peer
        old, self.peers = self.peers, seen
        for name, peer in seen.items():
            before = old[name].state if name in old else None
            if before != peer.state:
                self._changed(name, before, peer)
        return seen

    def _watch(self, now: float, dbStarted: float | None) -> None:
        """Move C{watching_since} forward after a server start or this host's own blindness."""
        since = self.watching_since
        if dbStarted is not None and (since is None or dbStarted > since):
            since = dbStarted
        if self._lastRead is not None and now - self._lastRead > 2 * self.heartbeat:
            if since is None or now > since:
                since = now
                log.info("cluster: {name} could not read the host list for {gap:.1f}s: every host has"
                         " {missed} heartbeats from now to be heard from", name=self.name,
                         gap=now - self._lastRead, missed=self.missed)
        self.watching_since = since
        self._lastRead = now if self._lastRead is None else max(self._lastRead, now)

    def _changed(self, name: str, before: str | None, peer: Peer) -> None:
        if name != self.name:
            if before is None and peer.state == UP:
                log.info("cluster: {name} is up ({address}, version {version})", name=name,
                         address=peer.address, version=peer.version)
            elif peer.state == DOWN:
                log.warn("cluster: {name} is down: no heartbeat for {age:.1f}s ({missed} x {hb:g}s)",
                         name=name, age=peer.seen_at - peer.last_seen, missed=peer.missed, hb=peer.heartbeat)
            elif peer.state == LEFT and before is not None:
                log.info("cluster: {name} left", name=name)
            elif peer.state == UP and before is not None:
                log.info("cluster: {name} is up again", name=name)
        for observer in list(self.observers):
            try:
                observer(name, before, peer.state, peer)
            except Exception:
                log.failure("cluster: membership observer {o!r} failed", o=observer)

    def leave(self) -> Deferred:
        """Mark this host C{left} (a clean stop), withdrawing what it published."""
        return self.tables.leave(self.name, self.clock.seconds())

    def hosts(self, stale: str = "") -> list[dict[str, Any]]:
        """The last view as plain data, by name.

        Each host's dict also says how old the view is (C{view_age}: seconds since it was read,
        by this host's clock) and whether it is C{stale}: given a reason (the store did not answer
        the read just tried), or older than two heartbeats.  A stale view's states and ages are
        those of when it was read — a host shown up may have stopped since — and C{age} counts
        the view's age in, since nothing newer is known of any host.
        """
        now = self.clock.seconds()
        view_age = 0.0 if self.read_at is None else max(0.0, now - self.read_at)
        is_stale = bool(stale) or view_age > 2 * self.heartbeat
        reason = stale or (f"the host list was last read {view_age:.1f}s ago" if is_stale else "")
        out = []
        for _, peer in sorted(self.peers.items()):
            data = peer.asData()
            data["age"] = data["age"] + view_age
            data.update(view_age=view_age, stale=is_stale, stale_reason=reason)
            out.append(data)
        return out

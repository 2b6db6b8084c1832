"""Host states shared by every front-end that balances the same service on one store.

Two front-ends declaring the same C{Balanced} service each run their own balancer, with their own
health checks.  What an operator sets on one (drain, maint, up, a weight) and what one learns
about a backend's health (a check or a connect marked it down, a check readmitted it) is written
to C{balancer_shared}, one row per (service, group, host), followed by a C{NOTIFY} on
L{CHANNEL} naming the row.  Every front-end LISTENs, reads the named row and applies it: within
milliseconds on PostgreSQL.  At start each reads the whole table, so a front-end that restarts
comes back with what was set while it was away; the housekeeping reads it again, so a
notification lost while a LISTEN connection was reconnecting is made up for.

Ordering: each write takes the next C{seq} (a sequence on PostgreSQL).  A row is applied only if
its C{seq} is above the last one applied for that host, and never while this front-end's own
newer write for it is still on its way: every front-end ends with the row the database holds,
whichever write committed last.

A peer's "down" marks the host down here too, with a reason naming the peer; this front-end's
own checks then readmit it after their C{rise} good checks (or a peer's "up" does).  A peer's
"up" never overrides this front-end's own failed checks.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from salvusctl.balancer import states
from salvusctl.store.dialects import SQLDialect
from salvusctl.store.migrations import Migration

__all__ = ["CHANNEL", "STICKY_CHANNEL", "MIGRATION", "STICKY_MIGRATION", "SharedStates"]

log = Logger()

CHANNEL = "salvus_balancer_states"
STICKY_CHANNEL = "salvus_balancer_sticky"
#: sticky pins made within this many seconds are written (and notified) together
STICKY_BATCH = 0.05
#: pins per notification (a NOTIFY payload must stay under 8000 bytes)
STICKY_CHUNK = 100

_TABLE = """
CREATE TABLE balancer_shared (
    service TEXT NOT NULL,
    grp TEXT NOT NULL,
    host TEXT NOT NULL,
    admin TEXT NOT NULL,
    weight INTEGER NOT NULL,
    healthy INTEGER NOT NULL,
    reason TEXT,
    origin TEXT NOT NULL,
    seq BIGINT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, grp, host)
);
"""

MIGRATION = Migration(
    2,
    "balancer host states shared between front-ends",
    lambda sql: ("CREATE SEQUENCE balancer_shared_seq;\n" if sql.sequences else "") + _TABLE,
)

STICKY_MIGRATION = Migration(
    3,
    "sticky pins shared between front-ends",
    """
CREATE TABLE balancer_sticky (
    service TEXT NOT NULL,
    grp TEXT NOT NULL,
    client TEXT NOT NULL,
    host TEXT NOT NULL,
    origin TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, grp, client)
);
""",
)

def _nextSeq(sql: SQLDialect) -> str:
    if sql.sequences:
        return "nextval('balancer_shared_seq')"
    # without sequences the store has one writer at a time (SQLite): the maximum is safe there
    return "(SELECT COALESCE(MAX(seq), 0) + 1 FROM balancer_shared)"


_COLUMNS = ("service", "grp", "host", "admin", "weight", "healthy", "reason", "origin", "seq")

#: what a host marked down by a peer's report carries in its reason
PEER_MARK = " (seen by "


class SharedStates:
    """Publishes this front-end's host changes and applies the other front-ends'.

    @param balanced: service name → L{BalancedService}, the balancer's own dict (read live).
    @param origin: this front-end's name, shown in the reasons it causes elsewhere.
    """

    def __init__(self, reactor: Any, store: Any, balanced: dict[str, Any], origin: str):
        self.reactor = reactor
        self.store = store
        self.balanced = balanced
        self.origin = origin
        #: (service, grp, host) → the highest seq applied here
        self.applied: dict[tuple[str, str, str], int] = {}
        #: (service, grp, host) → this front-end's writes not yet committed
        self.pending: dict[tuple[str, str, str], int] = {}
        self.listening = False
        #: rows applied from the table (for the logs and the tests)
        self.changes = 0
        #: (service, grp) → {client ip: host name} pinned here and not yet written
        self._pins: dict[tuple[str, str], dict[str, str]] = {}
        self._pinCall: Any = None
        self._hooked: dict[int, Any] = {}

    # -- start -------------------------------------------------------------------------------------

    def start(self) -> Deferred:
        """LISTEN, then read the whole table (after LISTEN, so nothing falls in between)."""
        if self.listening:
            return self.catchUp()
        self.listening = True
        d = self.store.listen(CHANNEL, self._notified)
        d.addCallback(lambda _: self.store.listen(STICKY_CHANNEL, self._pinsNotified))
        d.addCallback(lambda _: self.catchUp())
        d.addCallback(lambda n: self._loadPins().addCallback(lambda _: n))
        return d

    def catchUp(self) -> Deferred:
        """Read every row and apply those newer than what was applied (start, housekeeping)."""
        self.hookSticky()
        d = self.store.runQuery(f"SELECT {', '.join(_COLUMNS)} FROM balancer_shared")
        d.addCallback(self._applyRows)
        return d

    def stop(self) -> Deferred:
        """Write the pins not yet written (the store closes after the balancer)."""
        if self._pinCall is not None and self._pinCall.active():
            self._pinCall.cancel()
        return self._writePins()

    # -- sticky pins -------------------------------------------------------------------------------

    def _stickyGroups(self):
        from salvusctl.balancer.schedulers.sticky import Sticky

        for svc in self.balanced.values():
            for group in svc.groups.values():
                if isinstance(group.scheduler, Sticky) and not getattr(group, "deploy", None):
                    yield svc.name, group

    def hookSticky(self) -> None:
        """Have every sticky scheduler report its new pins (again after a scheduler switch)."""
        for service, group in self._stickyGroups():
            scheduler = group.scheduler
            if self._hooked.get(id(scheduler)) is not scheduler:
                self._hooked[id(scheduler)] = scheduler
                scheduler.onAssign = (lambda ip, host, key=(service, group.name):
                                      self._pinned(key, ip, host))

    def _pinned(self, key: tuple[str, str], ip: str, host: Any) -> None:
        self._pins.setdefault(key, {})[ip] = host.name
        if self._pinCall is None or not self._pinCall.active():
            self._pinCall = self.reactor.callLater(STICKY_BATCH, self._writePins)

    def _writePins(self) -> Deferred:
        self._pinCall = None
        pins, self._pins = self._pins, {}
        now = self.reactor.seconds()
        rows = [(s, g, ip, h, self.origin, now) for (s, g), m in pins.items() for ip, h in m.items()]
        if not rows:
            return succeed(None)
        sql = ("INSERT INTO balancer_sticky (service, grp, client, host, origin, changed_at) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, grp, client) DO UPDATE SET "
               "host = excluded.host, origin = excluded.origin, changed_at = excluded.changed_at")
        d = self.store.runInteraction(lambda cursor: cursor.executemany(sql, rows))

        def written(_):
            for (s, g), m in pins.items():
                items = sorted(m.items())
                for i in range(0, len(items), STICKY_CHUNK):
                    payload = json.dumps({"origin": self.origin, "service": s, "grp": g,
                                          "pins": items[i:i + STICKY_CHUNK]})
                    self.store.notify(STICKY_CHANNEL, payload)

        d.addCallback(written)
        d.addErrback(lambda f: log.warn("cannot share {n} sticky pins: {why}", n=len(rows),
                                        why=f.getErrorMessage()))
        return d

    def _pinsNotified(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            if data["origin"] == self.origin:
                return
            self._adopt(data["service"], data["grp"], [(ip, h) for ip, h in data["pins"]])
        except (ValueError, TypeError, KeyError):
            log.warn("ignoring a malformed {channel} notification: {p!r}", channel=STICKY_CHANNEL,
                     p=payload[:200])

    def _adopt(self, service: str, grp: str, pins) -> int:
        svc = self.balanced.get(service)
        group = svc.groups.get(grp) if svc is not None else None
        adopt = getattr(getattr(group, "scheduler", None), "adopt", None)
        if adopt is None:
            return 0
        n = 0
        for ip, name in pins:
            host = group.hosts.get(name)
            if host is not None:
                adopt(ip, host)
                n += 1
        return n

    def _loadPins(self) -> Deferred:
        """At start: the pins the other front-ends made within each sticky group's C{ttl}."""
        groups = list(self._stickyGroups())
        if not groups:
            return succeed(0)
        ttl = max(g.scheduler.ttl for _, g in groups)
        now = self.reactor.seconds()
        d = self.store.runOperation("DELETE FROM balancer_sticky WHERE changed_at < ?", (now - ttl,))
        d.addCallback(lambda _: self.store.runQuery(
            "SELECT service, grp, client, host FROM balancer_sticky ORDER BY changed_at"))

        def got(rows):
            return sum(self._adopt(s, g, [(ip, h)]) for s, g, ip, h in rows)

        d.addCallback(got)
        d.addErrback(lambda f: log.warn("cannot read the shared sticky pins: {why}",
                                        why=f.getErrorMessage()))
        return d

    # -- publishing --------------------------------------------------------------------------------

    def publish(self, service: str, group: str, host: Any) -> Deferred:
        """Write C{host}'s admin state, weight and health as this front-end sees them now."""
        svc = self.balanced.get(service)
        g = svc.groups.get(group) if svc is not None else None
        if g is None or not _shared(g, host.name):
            return succeed(None)
        key = (service, group, host.name)
        reason = host.down_reason
        if reason and PEER_MARK in reason:
            reason = reason.split(PEER_MARK, 1)[0]
        sql = ("INSERT INTO balancer_shared (service, grp, host, admin, weight, healthy, reason, "
               "origin, seq, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
               f"{_nextSeq(self.store.sql)}, ?) ON CONFLICT (service, grp, host) DO UPDATE SET "
               "admin = excluded.admin, weight = excluded.weight, healthy = excluded.healthy, "
               "reason = excluded.reason, origin = excluded.origin, seq = excluded.seq, "
               "changed_at = excluded.changed_at")
        args = (service, group, host.name, host.admin, host.weight, 1 if host.healthy else 0,
                reason, self.origin, self.reactor.seconds())
        self.pending[key] = self.pending.get(key, 0) + 1
        d = self.store.runOperation(sql, args)

        def written(result):
            self._settled(key)
            return self.store.notify(CHANNEL, json.dumps(list(key)))

        def failed(failure):
            self._settled(key)
            log.warn("cannot share the state of {s}/{g}/{h}: {why}", s=service, g=group, h=host.name,
                     why=failure.getErrorMessage())

        d.addCallbacks(written, failed)
        return d

    def _settled(self, key: tuple[str, str, str]) -> None:
        n = self.pending.get(key, 0) - 1
        if n > 0:
            self.pending[key] = n
        else:
            self.pending.pop(key, None)

    # -- applying ----------------------------------------------------------------------------------

    def _notified(self, payload: str) -> None:
        try:
            service, group, host = json.loads(payload)
        except (ValueError, TypeError):
            log.warn("ignoring a malformed {channel} notification: {p!r}", channel=CHANNEL, p=payload)
            return
        d = self.store.runQuery(f"SELECT {', '.join(_COLUMNS)} FROM balancer_shared "
                                "WHERE service = ? AND grp = ? AND host = ?", (service, group, host))
        d.addCallback(self._applyRows)
        d.addErrback(lambda f: log.warn("cannot read the shared state of {s}/{g}/{h}: {why}",
                                        s=service, g=group, h=host, why=f.getErrorMessage()))

    def _applyRows(self, rows: list[tuple]) -> int:
        n = 0
        for row in rows:
            try:
                if self.apply(dict(zip(_COLUMNS, row, strict=True))):
                    n += 1
            except Exception:
                log.failure("applying a shared balancer state failed: {row!r}", row=row)
        return n

    def apply(self, row: dict) -> bool:
        """Apply one row if it is newer than what this front-end holds; True if it was."""
        key = (row["service"], row["grp"], row["host"])
        seq = int(row["seq"])
        if seq <= self.applied.get(key, 0) or self.pending.get(key):
            return False
        svc = self.balanced.get(row["service"])
        group = svc.groups.get(row["grp"]) if svc is not None else None
        host = group.hosts.get(row["host"]) if group is not None else None
        if host is None or not _shared(group, host.name):
            return False
        self.applied[key] = seq
        self.changes += 1
        if row["admin"] in states.ADMIN_STATES:
            host.setAdmin(row["admin"])
        weight = int(row["weight"] or 0)
        if weight > 0 and weight != host.weight:
            host.setWeight(weight)
        mine = row["origin"] == self.origin
        if not row["healthy"] and host.healthy and not mine:
            host.markDown(f"{row['reason'] or 'down'}{PEER_MARK}{row['origin']})")
            log.info("{s}/{g}/{h} is down as {peer} saw it: {why}", s=key[0], g=key[1], h=key[2],
                     peer=row["origin"], why=row["reason"])
        elif row["healthy"] and not host.healthy and PEER_MARK in (host.down_reason or ""):
            host.markUp()
        if host.state == states.UP:
            svc._serveQueue()
        return True


def _follows(group: Any) -> bool:
    """A group whose hosts come and go with deploy instances: a local deploy's are this host's
    own, and a cluster deploy's states come from the workers themselves (both front-ends follow
    the same published rows); a drain kept for C{worker:0@w1} must not fall on its next run."""
    return bool(getattr(group, "deploy", None) or getattr(group, "cluster_deploy", None))


def _shared(group: Any, name: str) -> bool:
    """Whether host C{name}'s states are shared: every host of a group of declared or added
    servers, and in a group that follows a deploy only the servers its declaration lists (they
    stay put; its instances' states come from the deploy)."""
    return not _follows(group) or name in getattr(group, "fixed", ())

"""The cluster service of one host: membership, mailbox, publisher and balancer feed together.

Start (once the store is ready): LISTEN on the two cluster channels, write the first heartbeat,
publish this host's ready instances, then beat every C{heartbeat} seconds — each beat refreshes
the view of the peers, looks at the mailbox and brings the cluster-wide balancer groups in step,
whatever notifications were lost.  A clean stop marks the host C{left} and withdraws what it
published, before the store closes (the host stops its children in reverse order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

import salvusctl
from salvusctl.cluster.domain import BadMessage, checkKind
from salvusctl.cluster.handlers import Pings, installBuiltins
from salvusctl.cluster.membership import Membership
from salvusctl.cluster.messaging import Mailbox
from salvusctl.cluster.pool import ClusterPool
from salvusctl.cluster.publish import InstancePublisher
from salvusctl.cluster.schema import BROADCAST, CHANNEL_HOSTS, CHANNEL_MESSAGES
from salvusctl.cluster.tables import ClusterTables
from salvusctl.interfaces import ICluster

__all__ = ["ClusterService"]

log = Logger()


@implementer(ICluster)
class ClusterService(Service):
    """This host in a cluster of hosts sharing one store.

    @param store: the host's L{IStore} (not started yet: the cluster's migrations are added here).
    @param store_ready: a callable returning a Deferred that fires once the store is ready (the
        host's store service), or None to start at once.
    @param supervisor: this host's L{ISupervisor} (publishes its instances; runs deploy verbs).
    @param balancer: this host's balancer (its C{cluster_deploy} groups are fed), or None.
    @param tables: an L{IClusterStore} on C{store} (default: L{ClusterTables}).
    """

    def __init__(self, reactor: Any, store: Any, name: str, address: str = "127.0.0.1",
                 admin_url: str | None = None, heartbeat: float = 5.0, missed: int = 3,
                 supervisor: Any = None, balancer: Any = None, publish: list[str] | None = None,
                 drain_delay: float = 1.0, retention: float = 7 * 86400.0, max_messages: int = 100_000,
                 prune_interval: float = 3600.0, store_ready: Callable[[], Deferred] | None = None,
                 handlers: dict[str, Callable] | None = None, tables: Any = None,
                 stop_timeout: float = 5.0, clients_socket: str | None = None,
                 identify: Callable[[int], str | None] | None = None, links: Any = None):
        self.reactor = reactor
        self.store = store
        self.host_name = name
        self.address = address
        self.heartbeat = float(heartbeat)
        self.retention = float(retention)
        self.max_messages = int(max_messages)
        self.prune_interval = float(prune_interval)
        self.store_ready = store_ready
        self.stop_timeout = stop_timeout
        self.tables = tables if tables is not None else ClusterTables(store)
        self.membership = Membership(reactor, self.tables, name, address, admin_url, heartbeat, missed,
                                     salvusctl.__version__)
        self.mailbox = Mailbox(reactor, self.tables, name, store.notify)
        self.pings = Pings(reactor, self.mailbox)
        self.supervisor = supervisor
        installBuiltins(self.mailbox, self.pings, supervisor)
        for kind, handler in (handlers or {}).items():
            self.mailbox.addHandler(kind, handler)
        self.publisher = (
            InstancePublisher(reactor, self.tables, name, supervisor, address, publish, drain_delay,
                              changed=self._published)
            if supervisor is not None and publish != [] else None
        )
        self.clients = None
        if clients_socket is not None:
            from salvusctl.cluster.clientbuild import attachClients

            self.clients = attachClients(self, clients_socket, identify, migrate=tables is None, links=links)
        self.pool = ClusterPool(self.tables, balancer, self.membership) if balancer is not None else None
        self.joined: Deferred = Deferred()
        self._starting: Deferred | None = None
        self._loop: LoopingCall | None = None
        self._pruneLoop: LoopingCall | None = None
        self._listening = False

    @property
    def shared(self) -> bool:
        """True when other hosts can share this store (PostgreSQL)."""
        return self.store.sql.shared

    # -- lifecycle -------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        ready = self.store_ready() if callable(self.store_ready) else succeed(None)
        self._starting = ready
        ready.addCallback(lambda _: self._begin() if self.running else None)
        ready.addErrback(lambda f: log.failure("cluster: {name} did not start", f, name=self.host_name))

    @inlineCallbacks
    def _begin(self):
        if not self.shared:
            log.info("cluster: the store is {dialect}: {name} is a cluster of one (point every host at"
                     " one PostgreSQL store to see its peers)", dialect=self.store.sql.name,
                     name=self.host_name)
        if not self._listening:
            self._listening = True
            yield self.store.listen(CHANNEL_MESSAGES, self.mailbox.notified)
            yield self.store.listen(CHANNEL_HOSTS, self._hostsNotified)
        if not self.running:
            return
        self.mailbox.start()
        if self.clients is not None:
            yield self.clients.start()
        yield self.membership.beat()
        if not self.running:
            return
        log.info("cluster: {name} joined at {address} ({n} hosts known)", name=self.host_name,
                 address=self.address, n=len(self.membership.peers))
        self._wake(CHANNEL_HOSTS, self.host_name)
        if self.publisher is not None:
            self.publisher.start()
        if self.pool is not None:
            self.pool.start()
            self.pool.refresh()
        self.mailbox.poll()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.heartbeat, now=False)
        self._pruneLoop = LoopingCall(self._prune)
        self._pruneLoop.clock = self.reactor
        self._pruneLoop.start(self.prune_interval, now=True)
        if not self.joined.called:
            self.joined.callback(self)

    def _tick(self) -> Deferred:
        """One heartbeat: write it, refresh the view, read the mailbox, sync the balancer.  Each
        step logs and survives its own error (a LoopingCall whose call fails stops for good)."""
        d = self.membership.beat()
        d.addCallback(lambda _: self.mailbox.poll())
        if self.clients is not None:
            d.addCallback(lambda _: self.clients.reassert().addErrback(
                lambda f: log.warn("cluster: checking this host's clients failed: {why}",
                                   why=f.getErrorMessage())))
        if self.pool is not None:
            d.addCallback(lambda _: self.pool.refresh())
        d.addErrback(lambda f: log.failure("cluster: heartbeat step failed", f))
        return d

    def reconfigure(self, retention: float, max_messages: int, prune_interval: float,
                    drain_delay: float) -> list[str]:
        """Take a reload's retention and drain settings; returns the names that changed.

        The next retention run (and the next stop's drain) reads them; a new interval restarts
        the retention loop on the injected clock, its first run one new interval away.
        """
        before = (self.retention, self.max_messages, self.prune_interval, self.drainDelay())
        self.retention, self.max_messages = float(retention), int(max_messages)
        self.prune_interval = float(prune_interval)
        if self.publisher is not None:
            self.publisher.drain_delay = drain_delay
        names = ("retention", "max_messages", "prune_interval", "drain_delay")
        after = (self.retention, self.max_messages, self.prune_interval, self.drainDelay())
        changed = [n for n, a, b in zip(names, before, after, strict=True) if a != b]
        if "prune_interval" in changed and self._pruneLoop is not None and self._pruneLoop.running:
            self._pruneLoop.stop()
            self._pruneLoop = LoopingCall(self._prune)
            self._pruneLoop.clock = self.reactor
            self._pruneLoop.start(self.prune_interval, now=False)
        return changed

    def drainDelay(self) -> float | None:
        """Seconds a stopping instance stays published as draining (None: nothing is published)."""
        return None if self.publisher is None else self.publisher.drain_delay

    def _prune(self) -> Deferred:
        d = self.mailbox.prune(self.retention, self.max_messages)
        d.addCallback(lambda _: self.tables.forgetHosts(self.reactor.seconds() - self.retention))
        if self.clients is not None:
            d.addCallback(lambda _: self.clients.registry.prune(self.reactor.seconds() - self.retention))
        d.addErrback(lambda f: log.warn("cluster: retention run failed: {why}", why=f.getErrorMessage()))
        return d

    @inlineCallbacks
    def stopService(self):
        wasRunning = self.running
        super().stopService()
        if not wasRunning:
            return
        for loop in (self._loop, self._pruneLoop):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._pruneLoop = None
        if self.pool is not None:
            self.pool.stop()
        if not self.joined.called:
            return  # never joined: nothing to take back
        if self.publisher is not None:
            # Front-ends stop sending new connections to this host's instances before the
            # supervisor (stopped after this service) signals them.
            draining = self.publisher.stop()
            if draining is not None:
                draining.addTimeout(self.stop_timeout, self.reactor)
                try:
                    yield draining
                except Exception:
                    log.warn("cluster: draining this host's instances took too long; leaving now")
        self.pings.cancelAll()
        if self.clients is not None:
            closing = self.clients.stop()
            closing.addTimeout(self.stop_timeout, self.reactor)
            try:
                yield closing
            except Exception:
                log.warn("cluster: marking this host's clients gone took too long; peers do it"
                         " when it is down")
        stopping = self.mailbox.stop()
        stopping.addTimeout(self.stop_timeout, self.reactor)
        try:
            yield stopping
        except Exception:
            log.warn("cluster: a message handler was still running at stop; its message stays"
                     " 'delivered'")
        # Bounded: while the store is unreachable the write waits in its queue (the store's own
        # close flushes it, within its own bound); the host does not hang on it here.
        leaving = self.membership.leave()
        leaving.addCallback(lambda _: self._wake(CHANNEL_HOSTS, self.host_name))
        leaving.addTimeout(self.stop_timeout, self.reactor)
        try:
            yield leaving
            log.info("cluster: {name} left the cluster", name=self.host_name)
        except Exception as e:
            log.warn("cluster: could not mark {name} as left ({why}); peers will see it down",
                     name=self.host_name, why=str(e) or type(e).__name__)

    # -- notifications ---------------------------------------------------------------------------

    def _wake(self, channel: str, payload: str) -> Deferred:
        d = maybeDeferred(self.store.notify, channel, payload)
        d.addErrback(lambda f: log.warn("cluster: NOTIFY {channel} failed: {why}", channel=channel,
                                        why=f.getErrorMessage()))
        return d

    def _published(self) -> None:
        self._wake(CHANNEL_HOSTS, self.host_name)

    def _hostsNotified(self, payload: str) -> None:
        if not self.running or not self.joined.called:
            return
        if payload != self.host_name:
            self.membership.refresh().addErrback(
                lambda f: log.warn("cluster: refreshing the host list failed: {why}", why=f.getErrorMessage())
            )
        if self.pool is not None:
            self.pool.refresh()

    # -- ICluster --------------------------------------------------------------------------------

    def hosts(self) -> Deferred:
        """Every member as a dict, read now; when the store does not answer, this host's last
        view, marked C{stale} (see L{Membership.hosts})."""
        d = self.membership.refresh()
        d.addCallback(lambda _: self.membership.hosts())

        def stale(failure):
            why = failure.getErrorMessage()
            log.warn("cluster: host list from memory: {why}", why=why)
            return self.membership.hosts(stale=f"the store did not answer ({why})")

        return d.addErrback(stale)

    def lastView(self) -> list[dict[str, Any]]:
        return self.membership.hosts()

    def _member(self, name: str) -> Deferred:
        """Fires when C{name} is a member (re-reading the table if it is not known yet); fails
        with C{KeyError} otherwise (a message nobody will ever read is a typo)."""
        if name in self.membership.peers:
            return succeed(name)

        def check(peers):
            if name not in peers:
                known = ", ".join(sorted(peers)) or "none"
                raise KeyError(f"no host {name!r} in the cluster (hosts: {known})")
            return name

        return self.membership.refresh().addCallback(check)

    def send(self, recipient: str, kind: str, body: Any = None) -> Deferred:
        """Queue a message for C{recipient} (a member's name, or C{'*'}); fires with its id.

        An unknown recipient fails with C{KeyError}; a bad kind or body with L{BadMessage}.
        """
        try:
            checkKind(kind)
        except BadMessage:
            from twisted.internet.defer import fail

            return fail()
        if recipient == BROADCAST:
            return self.mailbox.send(recipient, kind, body)
        return self._member(recipient).addCallback(lambda _: self.mailbox.send(recipient, kind, body))

    def ping(self, host: str, timeout: float = 10.0) -> Deferred:
        """Round-trip seconds of a C{ping} to C{host} (its C{pong} back through the store)."""
        return self._member(host).addCallback(lambda _: self.pings.ping(host, timeout))

    def messages(self, host: str | None = None, kind: str | None = None, limit: int = 50) -> Deferred:
        return self.tables.messages(host, kind, limit)

    def deliver(self, client: str, body: Any = None) -> Deferred:
        """Send C{body} to C{client} wherever it is connected (L{ClientHub.deliver})."""
        if self.clients is None:
            from twisted.internet.defer import fail

            from salvusctl.cluster.clients import NoClientsSocket

            return fail(NoClientsSocket(f"{self.host_name} has no clients socket"))
        return self.clients.deliver(client, body)

    def connectedClients(self, host: str | None = None, limit: int = 1000) -> Deferred:
        """The connected clients (of C{host} when given) as dicts, by client id."""
        if self.clients is None:
            return succeed([])
        d = self.clients.registry.clients(host, True, limit)
        return d.addCallback(lambda rows: [r.asDict() for r in rows])

    def addHandler(self, kind: str, handler: Callable) -> None:
        self.mailbox.addHandler(kind, handler)

    def info(self) -> dict[str, Any]:
        """This member's settings and counters as plain data."""
        return {
            "name": self.host_name,
            "address": self.address,
            "shared": self.shared,
            "store": getattr(self.store, "url", ""),
            "heartbeat": self.heartbeat,
            "missed": self.membership.missed,
            "handlers": sorted(self.mailbox.handlers),
            "acked": self.mailbox.counts["acked"],
            "failed": self.mailbox.counts["failed"],
            "published": sorted(self.publisher.published) if self.publisher is not None else [],
        }

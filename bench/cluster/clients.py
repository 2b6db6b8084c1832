"""Messages to connected clients across hosts: latency over the direct link and over the mailbox.

Three hosts (a, b, c), each a ClusterService with its own PostgreSQL store, clients socket and
TLS link listener, in one process on 127.0.0.1; an app on b's clients socket registers N clients.
Host a sends one message to each client in turn and waits until the app has it: the time from
C{deliver()} to the app's line is one latency.  Then the same with links off (the mailbox:
INSERT + NOTIFY, b reads and writes it).  Last, b freezes (no more heartbeats): how long until
its clients are marked gone, against the cluster's C{missed x heartbeat}.

    python bench/cluster/clients.py [--clients 1000] [--quick]

Needs PostgreSQL ($SALVUS_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/test): a
throw-away database is made and dropped.  The anchor is the mailbox (the path the cluster had).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from urllib.parse import urlsplit, urlunsplit

HEARTBEAT = 0.5
MISSED = 3


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def adminExecute(dsn: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 clients (a check that it runs)")
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.clients
    dsn = os.environ.get("SALVUS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"salvus_bench_{secrets.token_hex(4)}"
    adminExecute(dsn, f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    try:
        from twisted.internet import task

        results: dict = {}
        task.react(lambda reactor: run(reactor, url, n, results))
    except SystemExit as e:
        if e.code:
            raise
    finally:
        adminExecute(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    link, mailbox = results["link"], results["mailbox"]
    print(f"messages to {n} clients held by another host (one at a time, deliver() -> the app's line)")
    print(f"{'path':<10} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'p50 vs mailbox':>15}")
    for label, values in (("link", link), ("mailbox", mailbox)):
        p50 = percentile(values, 50)
        print(f"{label:<10} {p50 * 1000:8.2f} {percentile(values, 99) * 1000:8.2f} {max(values) * 1000:8.2f}"
              f" {p50 / percentile(mailbox, 50):15.2f}")
    print(f"link messages by the link: {results['by_link']}/{n}; delivered once each: {results['once']}")
    print(f"holding host frozen: its {n} clients gone after {results['gone']:.2f}s"
          f" (missed x heartbeat = {MISSED * HEARTBEAT:g}s)")
    return 0


def run(reactor, url: str, n: int, results: dict):
    from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
    from twisted.internet.task import deferLater

    from salvusctl.clientapi import clientsService
    from salvusctl.cluster.service import ClusterService
    from salvusctl.store.postgres import PostgresStore
    from salvusctl.store.url import parseStoreURL

    tag = secrets.token_hex(4)
    stores = []

    def member(name, links):
        store = PostgresStore(reactor, parseStoreURL(url), pool_size=3)
        stores.append(store)
        service = ClusterService(reactor, store, name, address="127.0.0.1", store_ready=store.start,
                                 heartbeat=HEARTBEAT, missed=MISSED,
                                 clients_socket=f"salvus-clients-bench-{tag}-{name}", links=links)
        service.startService()
        return service

    waiting: dict[str, Deferred] = {}
    received: dict[str, int] = {}

    def onMessage(client, body, uid):
        received[uid] = received.get(uid, 0) + 1
        d = waiting.pop(client, None)
        if d is not None:
            d.callback(time.perf_counter())

    @inlineCallbacks
    def measure(sender, clients):
        latencies, paths = [], []
        for client in clients:
            arrived = waiting[client] = Deferred()
            t0 = time.perf_counter()
            r = yield sender.deliver(client, {"t": t0})
            paths.append(r["path"])
            t1 = yield arrived
            latencies.append(t1 - t0)
        return latencies, paths

    @inlineCallbacks
    def go():
        a, b, c = member("a", {}), member("b", {}), member("c", False)
        yield gatherResults([a.joined, b.joined, c.joined])
        yield gatherResults([m.membership.refresh() for m in (a, b, c)])
        app = clientsService(reactor, onMessage, address=b.clients.address)
        app.startService()
        clients = [f"client-{i}" for i in range(n)]
        for client in clients:
            yield app.hub.connect(client)
        # The first message makes the link; wait until it is up, then measure.
        yield a.deliver(clients[0], "warm-up")
        while not a.clients.links.isUp("b"):
            yield deferLater(reactor, 0.01, lambda: None)
        results["link"], paths = yield measure(a, clients)
        results["by_link"] = paths.count("link")
        results["mailbox"], _ = yield measure(c, clients)  # c has no links: the mailbox
        results["once"] = all(count == 1 for count in received.values())
        b._loop.stop()  # b freezes
        frozen = time.perf_counter()
        while True:
            rows = yield a.connectedClients("b", limit=n + 1)
            if not rows:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        results["gone"] = time.perf_counter() - frozen
        yield app.stopService()
        for m in (a, b, c):
            yield m.stopService()
        for store in stores:
            yield store.close()

    return go()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

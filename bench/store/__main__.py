"""Store benchmark: write and read rates of both stores against their drivers used directly.

    python bench/store [--json PATH] [--writes N] [--postgres DSN]

Runs in one process, one after another, on this machine's shared cores, so read the ratios more
than the absolute figures.  The anchors are the bare drivers on the same database: C{sqlite3}
with the same pragmas, and blocking C{psycopg2} on one connection.  PostgreSQL runs in its own
temporary database (from C{--postgres} or C{SALVUS_TEST_POSTGRES}); without one it is skipped.

It also measures the PostgreSQL store's recovery: the time from C{pg_terminate_backend} on every
pool connection to the next write committed, and how fast a queue of writes made during an outage
is replayed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from twisted.internet.defer import gatherResults, inlineCallbacks  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402

from salvusctl.store import makeStore  # noqa: E402
from salvusctl.store.migrations import Migration  # noqa: E402

TABLE = Migration(1, "bench", "CREATE TABLE bench (k INTEGER NOT NULL, v DOUBLE PRECISION)")
BATCH = 100


def statusRows(sid: int, n: int, t0: float) -> list[dict]:
    return [
        {
            "service_id": sid,
            "timestamp": t0 + i,
            "load": 0.5,
            "percent_mem": 1.0,
            "percent_cpu": 2.0,
            "cputime": 3.0,
            "walltime": 4.0,
            "virtual_size": 5,
            "resident_size": 6,
        }
        for i in range(n)
    ]


@inlineCallbacks
def storeFigures(reactor, url: str, writes: int):
    store = makeStore(url, reactor)
    store.addMigrations("bench", [TABLE])
    yield store.start()
    out = {}

    t = time.perf_counter()
    for k in range(writes // 4):
        yield store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (k, k / 2))
    out["awaited_writes_per_s"] = (writes // 4) / (time.perf_counter() - t)

    t = time.perf_counter()
    yield gatherResults(
        [store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (k, k / 2)) for k in range(writes)]
    )
    out["concurrent_writes_per_s"] = writes / (time.perf_counter() - t)

    sid = yield store.recordServiceStart("bench", None, None, None, None, 1, None)
    t = time.perf_counter()
    for b in range(writes // BATCH):
        yield store.writeStatus(statusRows(sid, BATCH, b * BATCH))
    out["status_rows_per_s_batched"] = (writes // BATCH * BATCH) / (time.perf_counter() - t)

    t = time.perf_counter()
    reads = max(writes // 4, 1)
    yield gatherResults([store.latestStatus() for _ in range(reads)])
    out["latestStatus_per_s"] = reads / (time.perf_counter() - t)
    yield store.close()
    return out


def sqliteAnchor(path: str, writes: int) -> dict:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS anchor (k INTEGER NOT NULL, v DOUBLE PRECISION)")
    t = time.perf_counter()
    for k in range(writes):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO anchor (k, v) VALUES (?, ?)", (k, k / 2))
        conn.execute("COMMIT")
    rate = writes / (time.perf_counter() - t)
    conn.close()
    return {"writes_per_s": rate}


def postgresAnchor(url: str, writes: int) -> dict:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS anchor (k INTEGER NOT NULL, v DOUBLE PRECISION)")
    t = time.perf_counter()
    for k in range(writes):
        cur.execute("INSERT INTO anchor (k, v) VALUES (%s, %s)", (k, k / 2))
    rate = writes / (time.perf_counter() - t)
    conn.close()
    return {"writes_per_s": rate}


@inlineCallbacks
def interleavedRatio(reactor, url: str, anchor, writes: int, rounds: int = 5):
    """Store vs bare driver, alternating short runs, median of the per-round ratios: on shared
    cores a ratio measured side by side is steadier than two long runs one after the other."""
    store = makeStore(url, reactor)
    store.addMigrations("bench", [TABLE])
    yield store.start()
    ratios = []
    n = max(writes // rounds, 50)
    for _ in range(rounds):
        t = time.perf_counter()
        for k in range(n):
            yield store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (k, k / 2))
        mine = n / (time.perf_counter() - t)
        ratios.append(mine / anchor(n)["writes_per_s"])
    yield store.close()
    ratios.sort()
    return ratios[len(ratios) // 2]


@inlineCallbacks
def recoveryFigures(reactor, db, queued: int):
    from salvusctl.store.postgres import PostgresStore, backoff
    from salvusctl.store.url import parseStoreURL

    store = PostgresStore(reactor, parseStoreURL(db.url), reconnect_delays=backoff(0.05, 2, 1.0))
    store.addMigrations("bench", [TABLE])
    yield store.start()
    yield store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (0, 0))
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        db.terminate()
        yield store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (1, 1))
        samples.append(time.perf_counter() - t)
        yield deferLater(reactor, 0.05, lambda: None)
    samples.sort()

    # A burst queued while every connection is being re-established, then replayed.
    db.terminate()
    writes = [store.runOperation("INSERT INTO bench (k, v) VALUES (?, ?)", (k, 0)) for k in range(queued)]
    t = time.perf_counter()
    yield gatherResults(writes)
    replay = queued / (time.perf_counter() - t)
    stats = store.stats()
    yield store.close()
    return {
        "terminate_to_next_commit_ms_median": samples[len(samples) // 2] * 1000,
        "terminate_to_next_commit_ms_max": samples[-1] * 1000,
        "burst_through_reconnect_writes_per_s": replay,
        "replayed": stats["replayed"],
        "reconnects": stats["reconnects"],
    }


@inlineCallbacks
def main(reactor, args):
    results: dict = {"writes": args.writes}
    tmp = tempfile.mkdtemp(prefix="salvus-bench-")
    sqlite_path = os.path.join(tmp, "bench.db")
    results["sqlite"] = yield storeFigures(reactor, f"sqlite:{sqlite_path}", args.writes)
    results["sqlite_anchor"] = sqliteAnchor(os.path.join(tmp, "anchor.db"), args.writes)
    results["sqlite_ratio_awaited_vs_sqlite3_interleaved_median"] = yield interleavedRatio(
        reactor,
        f"sqlite:{os.path.join(tmp, 'ratio.db')}",
        lambda n: sqliteAnchor(os.path.join(tmp, "anchor.db"), n),
        args.writes,
    )
    if args.postgres:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
        from tests.store.pgtemp import TempDatabase

        db = TempDatabase(args.postgres).create()
        try:
            results["postgresql"] = yield storeFigures(reactor, db.url, args.writes)
            results["postgresql_anchor"] = postgresAnchor(db.url, args.writes)
            results["postgresql_ratio_concurrent_vs_psycopg2_same_run"] = (
                results["postgresql"]["concurrent_writes_per_s"]
                / results["postgresql_anchor"]["writes_per_s"]
            )
            results["postgresql_ratio_awaited_vs_psycopg2_interleaved_median"] = yield interleavedRatio(
                reactor, db.url, lambda n: postgresAnchor(db.url, n), args.writes
            )
            results["postgresql_recovery"] = yield recoveryFigures(reactor, db, args.writes)
        finally:
            db.drop()
    else:
        results["postgresql"] = "skipped: no --postgres DSN and SALVUS_TEST_POSTGRES unset"

    shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/store", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--writes", type=int, default=2000, help="writes per measurement")
    parser.add_argument("--postgres", default=os.environ.get("SALVUS_TEST_POSTGRES", ""))
    parser.add_argument("--quick", action="store_true",
                        help="seconds, not minutes: 50 writes (CI checks it runs; no figures judged)")
    args = parser.parse_args(argv)
    if args.quick:
        args.writes = min(args.writes, 50)
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    react(lambda reactor: main(reactor, arguments))

"""bench/monitor: query latency at a million status rows, ingest rate per store, sampling cost.

    python bench/monitor [--json PATH] [--rows 1000000] [--services 200] [--sample-seconds 15]
    python bench/monitor --quick      # seconds: 5 services, 10 processes (CI checks it runs)

1. PostgreSQL (a temporary database on SALVUS_TEST_POSTGRES, default
   postgresql://postgres@127.0.0.1:5432/test, dropped at the end): C{--rows} status rows over
   C{--services} running services at 5 s intervals; the monitor's own queries, through the
   PostgreSQL store, "latest status of all running instances" and "one instance's last hour":
   median and p95 of 50 runs each (target: < 10 ms).  Rows are interleaved as a live monitor
   writes them, statistics lag the last hour and nothing is vacuumed when first timed; then the
   same after VACUUM ANALYZE.
2. Ingest: the monitor's flush path (one transaction per tick of 200 instances: status,
   per-process, host and disk rows) on SQLite and on PostgreSQL, rows/s.
3. Sampling cost: the real psutil sampler on its thread, 200 real processes at 1 s, with SQLite
   writes: CPU seconds of this process / wall seconds (target: < 5 % of one core).

Two cores are shared with other work on this machine: read the figures as one run's ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import inlineCallbacks  # noqa: E402
from zope.interface import implementer  # noqa: E402

from salvusctl.interfaces import ISupervisor  # noqa: E402
from salvusctl.monitor import queries  # noqa: E402
from salvusctl.monitor.service import MonitorService  # noqa: E402
from salvusctl.store import makeStore  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@implementer(ISupervisor)
class StaticSupervisor:
    """Instances that are all RUNNING with fixed pids (the bench needs no process management)."""

    def __init__(self, pids: dict[str, int]):
        self._infos = [
            {"name": n, "group": n.split(":")[0], "state": "RUNNING", "pid": p, "port": 10000 + i}
            for i, (n, p) in enumerate(pids.items())
        ]

    def instanceInfos(self):
        return [dict(i) for i in self._infos]

    def instanceInfo(self, name):
        return next(dict(i) for i in self._infos if i["name"] == name)

    def addObserver(self, observer):
        pass

    def removeObserver(self, observer):
        pass

    def _no(self, *a, **kw):
        raise NotImplementedError

    startInstance = stopInstance = restartInstance = startDeploy = stopDeploy = _no
    startAll = stopAll = signalInstance = tailLog = _no


class FakeTreeSampler:
    """Samples without /proc, so ingest measures the store path only."""

    def sample(self, targets, now, deployDirs=None):
        instances = {}
        for name, pid in targets:
            proc = dict(pid=pid, ppid=1, name="w", cpu_percent=1.0, mem_percent=0.1, cputime=1.0,
                        walltime=5.0, vms=2000, rss=1000, threads=1, fds=3, status="sleeping")
            instances[name] = dict(pid=pid, timestamp=now, cpu_percent=1.0, mem_percent=0.1,
                                   rss=1000, vms=2000, cputime=1.0, walltime=5.0, threads=1, fds=3,
                                   status="sleeping", nprocs=1, processes=[proc])
        host = dict(timestamp=now, load1=0.1, load5=0.1, load15=0.1, cpu_percent=1.0, cpu_count=2,
                    mem_total=1, mem_free=1, mem_available=1, swap_total=0, swap_used=0,
                    mounts=[dict(mountpoint="/", device="d", fstype="ext4", total=1, used=1, free=0,
                                 percent=1.0)], deploys=[])
        return {"instances": instances, "host": host}


def pgAdmin(dsn):
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def tempDatabase(dsn: str) -> tuple[str, str]:
    from urllib.parse import urlsplit, urlunsplit

    name = "salvus_bench_" + secrets.token_hex(5)
    with pgAdmin(dsn).cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return name, urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def dropDatabase(dsn: str, name: str) -> None:
    with pgAdmin(dsn).cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def inline(fn, *args, **kwargs):
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(fn, *args, **kwargs)


def timings(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"median_ms": round(statistics.median(samples) * 1000, 3),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1] * 1000, 3)}


@inlineCallbacks
def pgQueries(reactor, url: str, rows: int, services: int):
    """Fill status with C{rows} rows server-side, then time the monitor's two queries."""
    import psycopg2

    store = makeStore(url, reactor)
    MonitorService(reactor, store, None, host_name="bench")  # registers the monitor's migrations
    yield store.start()
    per = rows // services
    now = time.time()
    start = now - per * 5.0
    conn = psycopg2.connect(url)
    conn.autocommit = True
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO services (type, site, port, running, pid, host, started_at)"
            " SELECT 'web', 'web:' || g, 10000 + g, TRUE, 1000 + g, 'bench', %s"
            " FROM generate_series(0, %s - 1) g",
            (start, services),
        )
        # Some history of exited lives too, as a long-running fleet has.
        cur.execute(
            "INSERT INTO services (type, site, port, running, pid, host, started_at, stopped_at)"
            " SELECT 'web', 'web:' || (g %% %s), 10000, FALSE, 1, 'bench', %s, %s"
            " FROM generate_series(1, %s) g",
            (services, start - 86400, start, services * 10),
        )
        # Rows interleaved as a live monitor writes them: one tick of every instance after the
        # other, so one instance's hour lies on as many heap pages as it has rows.  Statistics
        # are gathered before the last hour is written and nothing is vacuumed: a live table's
        # statistics always lag its newest rows, and its visibility map lags them too.
        fill = (
            "INSERT INTO status (service_id, timestamp, load, percent_mem, percent_cpu, cputime,"
            " walltime, virtual_size, resident_size, threads, fds, state, nprocs)"
            " SELECT sv.id, %s + i * 5.0, 0.5, random(), random() * 100, i * 0.01, i * 5.0,"
            " 200000000, 50000000, 4, 12, 'sleeping', 1"
            " FROM generate_series(%s, %s - 1) i CROSS JOIN services sv WHERE sv.running"
            " ORDER BY i, sv.id"
        )
        cur.execute("ALTER TABLE status SET (autovacuum_enabled = false)")
        recent = min(per, 720)
        cur.execute(fill, (start, 0, per - recent))
        cur.execute("ANALYZE")
        cur.execute(fill, (start, per - recent, per))
        cur.execute("SELECT COUNT(*) FROM status")
        total = cur.fetchone()[0]
    fill_s = time.perf_counter() - t0
    timed = yield _timeQueries(store, now, services)
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE status")
    vacuumed = yield _timeQueries(store, now, services)
    conn.close()
    yield store.close()
    return {"status_rows": total, "fill_seconds": round(fill_s, 1), **timed,
            "vacuumed": vacuumed, "running_services": services}


@inlineCallbacks
def _timeQueries(store, now: float, services: int):
    """The monitor's two queries through the store, 50 timed runs each after 5 warm-up runs."""
    latest, history = [], []
    for i in range(55):
        t = time.perf_counter()
        result = yield queries.runningWithStatus(store)
        latest.append(time.perf_counter() - t)
        assert len(result) == services and result[0]["sample"] is not None
        t = time.perf_counter()
        samples = yield queries.history(store, "bench", f"web:{i % services}", now - 3600)
        history.append(time.perf_counter() - t)
        assert 700 <= len(samples) <= 721, len(samples)
    return {"latest": timings(latest[5:]), "history": timings(history[5:]), "history_rows": len(samples)}


@inlineCallbacks
def sqliteQueries(reactor, path: str, rows: int, services: int):
    """The same two queries on the default SQLite store, filled the same way."""
    import sqlite3

    store = makeStore("sqlite:" + path, reactor)
    MonitorService(reactor, store, None, host_name="bench")
    yield store.start()
    yield store.close()
    per = rows // services
    now = time.time()
    start = now - per * 5.0
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < ?)"
            " INSERT INTO services (type, site, port, running, pid, host, started_at)"
            " SELECT 'web', 'web:' || n, 10000 + n, 1, 1000 + n, 'bench', ? FROM g",
            (services - 1, start),
        )
        conn.execute(
            "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < ?)"
            " INSERT INTO status (service_id, timestamp, load, percent_mem, percent_cpu, cputime,"
            " walltime, virtual_size, resident_size, threads, fds, state, nprocs)"
            " SELECT sv.id, ? + g.n * 5.0, 0.5, 0.1, 50.0, g.n * 0.01, g.n * 5.0, 200000000,"
            " 50000000, 4, 12, 'sleeping', 1 FROM g CROSS JOIN services sv ORDER BY g.n, sv.id",
            (per - 1, start),
        )
        conn.execute("ANALYZE")
    conn.close()
    store = makeStore("sqlite:" + path, reactor)
    yield store.start()
    latest, history = [], []
    for i in range(55):
        t = time.perf_counter()
        result = yield queries.runningWithStatus(store)
        latest.append(time.perf_counter() - t)
        assert len(result) == services
        t = time.perf_counter()
        samples = yield queries.history(store, "bench", f"web:{i % services}", now - 3600)
        history.append(time.perf_counter() - t)
        assert 700 <= len(samples) <= 721, len(samples)
    yield store.close()
    return {"latest": timings(latest[5:]), "history": timings(history[5:])}


@inlineCallbacks
def ingest(reactor, url: str, instances: int = 200, ticks: int = 60):
    """The monitor's flush path: ticks of C{instances} instances, one transaction each."""
    store = makeStore(url, reactor)
    pids = {f"web:{i}": 100000 + i for i in range(instances)}
    monitor = MonitorService(reactor, store, StaticSupervisor(pids), host_name="bench",
                             sampler=FakeTreeSampler(), run=inline, interval=3600, retention={})
    yield store.start()
    monitor.startService()
    yield monitor.sampleOnce()
    yield monitor.flush()  # services rows, the first tick
    written = 0
    elapsed = 0.0
    for _ in range(ticks):
        yield monitor.sampleOnce()
        rows = monitor.bufferedRows()
        t = time.perf_counter()
        yield monitor.flush()
        elapsed += time.perf_counter() - t
        written += rows
    yield monitor.stopService()
    yield store.close()
    return {"rows": written, "seconds": round(elapsed, 3), "rows_per_s": round(written / elapsed),
            "rows_per_tick": written // ticks}


@inlineCallbacks
def samplingCost(reactor, processes: int, seconds: float, directory: str):
    """The real monitor (psutil on its thread, SQLite writes) over real processes at 1 s."""
    procs = [subprocess.Popen(["sleep", "3600"]) for _ in range(processes)]
    try:
        store = makeStore("sqlite:" + os.path.join(directory, "cost.db"), reactor)
        pids = {f"w{i // 10}:{i % 10}": p.pid for i, p in enumerate(procs)}
        monitor = MonitorService(reactor, store, StaticSupervisor(pids), host_name="bench",
                                 interval=1.0, retention={})
        yield store.start()
        # Warm up (imports, first psutil reads, table pages) before measuring.
        yield task.deferLater(reactor, 0.2, lambda: None)
        monitor.startService()
        yield task.deferLater(reactor, 2.5, lambda: None)
        ticks0 = monitor.ticks
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        yield task.deferLater(reactor, seconds, lambda: None)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter() - wall0
        ticks = monitor.ticks - ticks0
        yield monitor.stopService()
        yield store.close()
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        sampled = sum(1 for e in monitor.latest().values() if e.get("sampled_at") is not None)
        return {"processes": processes, "sampled": sampled, "ticks": ticks,
                "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 3),
                "cpu_pct_of_one_core": round(100 * cpu / wall, 2),
                "cpu_ms_per_tick": round(1000 * cpu / max(ticks, 1), 2)}
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


@inlineCallbacks
def main(reactor, options):
    dsn = options.dsn
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as directory:
        name, url = tempDatabase(dsn)
        try:
            print(f"filling {options.rows} status rows in PostgreSQL ({name}) …", flush=True)
            pg = yield pgQueries(reactor, url, options.rows, options.services)
        finally:
            if options.keep_db:
                print(f"kept {url}")
            else:
                dropDatabase(dsn, name)
        results["postgresql_queries"] = pg
        results["sqlite_queries"] = yield sqliteQueries(
            reactor, os.path.join(directory, "q.db"), options.rows, options.services
        )
        if options.only_queries:
            print(json.dumps({"postgresql": pg, "sqlite": results["sqlite_queries"]}, indent=1))
            return
        ingestion = {}
        name, url = tempDatabase(dsn)
        try:
            ingestion["postgresql"] = yield ingest(reactor, url, ticks=options.ticks)
        finally:
            dropDatabase(dsn, name)
        ingestion["sqlite"] = yield ingest(reactor, "sqlite:" + os.path.join(directory, "i.db"),
                                           ticks=options.ticks)
        results["ingest"] = ingestion
        print(f"sampling {options.processes} processes at 1 s for {options.sample_seconds} s …",
              flush=True)
        results["sampling"] = yield samplingCost(reactor, options.processes, options.sample_seconds,
                                                 directory)
    summary = {
        "latest_ms": pg["latest"]["median_ms"],
        "history_ms": pg["history"]["median_ms"],
        "ingest_rows_per_s": {k: v["rows_per_s"] for k, v in ingestion.items()},
        "sampling_cpu_pct": results["sampling"]["cpu_pct_of_one_core"],
    }
    results.update(summary)
    print()
    print(f"{'measure':44} {'value':>12}  target")
    print(f"{'latest status of all running (' + str(pg['running_services']) + '), median ms':44}"
          f" {pg['latest']['median_ms']:12.2f}  < 10   (p95 {pg['latest']['p95_ms']:.2f})")
    print(f"{'history of one instance, last hour, median ms':44} {pg['history']['median_ms']:12.2f}"
          f"  < 10   (p95 {pg['history']['p95_ms']:.2f}, {pg['history_rows']} rows)")
    print(f"{'  same, after VACUUM ANALYZE, median ms':44} {pg['vacuumed']['latest']['median_ms']:6.2f}"
          f" {pg['vacuumed']['history']['median_ms']:5.2f}")
    print(f"{'  status rows in the table (interleaved)':44} {pg['status_rows']:12d}")
    sq = results["sqlite_queries"]
    print(f"{'  same two on SQLite, median ms':44} {sq['latest']['median_ms']:6.2f}"
          f" {sq['history']['median_ms']:5.2f}")
    for backend, v in ingestion.items():
        print(f"{'ingest rows/s, ' + backend:44} {v['rows_per_s']:12d}  ({v['rows_per_tick']} rows a tick)")
    ratio = ingestion["sqlite"]["rows_per_s"] / max(ingestion["postgresql"]["rows_per_s"], 1)
    print(f"{'  SQLite / PostgreSQL ingest ratio':44} {ratio:12.2f}")
    s = results["sampling"]
    print(f"{'sampling ' + str(s['processes']) + ' processes at 1 s, % of one core':44}"
          f" {s['cpu_pct_of_one_core']:12.2f}  < 5    ({s['cpu_ms_per_tick']} ms CPU a tick)")
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {options.json}")


def parse(argv):
    parser = argparse.ArgumentParser(prog="bench/monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--processes", type=int, default=200)
    parser.add_argument("--sample-seconds", type=float, default=15.0)
    parser.add_argument("--keep-db", action="store_true", help="keep the query database (to explain)")
    parser.add_argument("--only-queries", action="store_true")
    parser.add_argument("--ticks", type=int, default=60, help="ingest ticks per store")
    parser.add_argument("--dsn", default=os.environ.get("SALVUS_TEST_POSTGRES", DEFAULT_DSN))
    parser.add_argument("--quick", action="store_true",
                        help="seconds, not minutes: 5 services, 10 processes for 2 s, 5 ingest ticks "
                             "(CI checks it runs; no figures judged)")
    options = parser.parse_args(argv)
    if options.quick:
        options.services = min(options.services, 5)
        options.rows = options.services * 721
        options.processes = min(options.processes, 10)
        options.sample_seconds = min(options.sample_seconds, 2.0)
        options.ticks = min(options.ticks, 5)
    if options.rows < options.services * 721:
        parser.error(f"--rows must be at least {options.services * 721} (an hour of 5 s samples each)")
    return options


if __name__ == "__main__":
    opts = parse(sys.argv[1:])
    task.react(main, [opts])

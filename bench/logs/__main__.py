"""Logs: Salvus's supervisor + admin against supervisord 4.3, same programs, same files, one run.

    python bench/logs [--json PATH] [--size-mib N]
    python bench/logs --quick     # seconds: an 8 MiB log, small floods (CI checks it runs)

1. tail of a large log (1 GiB by default): a quiet program whose stdout log is that file (the
   same file for both).  Median and p99 of C{tailProcessStdoutLog(name, 0, 1600)} and
   C{readProcessStdoutLog(name, -1600, 0)} over XML-RPC on one connection, the wall time of
   C{supervisorctl tail}, and the server's RSS afterwards.  C{getState} is timed too: the cost
   of a call that reads nothing, so what a tail adds to it shows.
2. log throughput: a program writes 200,000 lines of 100 bytes and exits; the supervisor's CPU
   seconds (utime + stime from /proc) from its start until every line is in the log file give
   lines per CPU-second.
3. RSS under long lines: 4 instances each write 1,500 lines of 60 KiB (about 350 MiB in all) and
   stay up; the server's RSS once every line is in the files.
4. followers: 20 connections to /logtail (what `supervisorctl tail -f` opens) follow a program
   printing 100 lines a second; the p99 of getState calls without and with them.

supervisord comes from the test extras (beside this Python).  Ratios are Salvus over supervisord:
below 1 is better for times, CPU and RSS; above 1 is better for lines per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")

from bench._common import freePort, waitPort  # noqa: E402

FLOOD = "import sys\nw = sys.stdout.write\nfor i in range({n}):\n    w('%099d\\n' % i)\n"
LONG = ("import sys, time\nline = 'y' * {width} + '\\n'\nfor i in range({n}):\n    sys.stdout.write(line)\n"
        "sys.stdout.flush()\ntime.sleep(100000)\n")

TICKER = ("import itertools, sys, time\nfor i in itertools.count():\n"
          "    print('tick %08d ' % i + 'x' * 60, flush=True)\n    time.sleep(0.01)\n")
FOLLOWERS = 20

SUPERVISORD_CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}/sd
[inet_http_server]
port=127.0.0.1:{port}
username=bench
password=bench-pw
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=http://127.0.0.1:{port}
[program:big]
command=sleep 100000
startsecs=0
stdout_logfile={big}
stdout_logfile_maxbytes=0
[program:flood]
command={python} {tmp}/flood.py
autostart=false
autorestart=false
startsecs=0
stdout_logfile={tmp}/sd/flood.log
stdout_logfile_maxbytes=0
[program:ticker]
command={python} {tmp}/ticker.py
startsecs=0
stdout_logfile={tmp}/sd/ticker.log
stdout_logfile_maxbytes=0
[program:long]
command={python} {tmp}/long.py
autostart=false
autorestart=false
numprocs={nlong}
process_name=%(program_name)s_%(process_num)d
startsecs=0
stdout_logfile={tmp}/sd/long-%(process_num)d.log
stdout_logfile_maxbytes=0
"""


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rssMB(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def makeBigLog(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = b"2026-01-01T00:00:00.000000Z INFO an old line of an earlier run, kept in the file\n" * 8192
    with open(path, "wb") as f:
        written = 0
        while written < size:
            f.write(block)
            written += len(block)


def waitSize(paths: list[str], total: int, timeout: float) -> float:
    """Wait until the files hold C{total} bytes together; the time it took."""
    start = time.monotonic()
    while True:
        have = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
        if have >= total:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"only {have} of {total} bytes in {paths} after {timeout:.0f} s")
        time.sleep(0.01)


def latencies(fn, calls: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


DRAIN = r"""
import base64, selectors, socket, sys
host, port, name, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
auth = base64.b64encode(b"bench:bench-pw").decode()
sel = selectors.DefaultSelector()
for _ in range(n):
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET /logtail/{name} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Authorization: Basic {auth}\r\n\r\n".encode())
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ)
sel.register(sys.stdin, selectors.EVENT_READ)
print("CONNECTED", flush=True)
got = 0
while True:
    for key, _ in sel.select():
        if key.fileobj is sys.stdin:
            print(got, flush=True)
            sys.exit(0)
        data = key.fileobj.recv(65536)
        if not data:
            sel.unregister(key.fileobj)
        got += len(data)
"""


def withFollowers(url: str, name: str, n: int, measure) -> tuple[float, float, float]:
    """(KiB the followers received, C{measure()} with C{n} C{tail -f} followers of C{name}'s log,
    C{measure()} without): C{n} connections to C{/logtail/<name>} (what C{supervisorctl tail -f}
    opens), drained by a process of their own, while the program writes 100 lines a second."""
    alone = measure()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, host, port, name, str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if drain.stdout.readline().strip() != "CONNECTED":
            raise SystemExit("the followers did not connect")
        time.sleep(1.0)
        followed = measure()
        drain.stdin.write("stop\n")
        drain.stdin.flush()
        got = int(drain.stdout.readline() or 0)
    finally:
        drain.kill()
        drain.wait()
    return got / 1024, followed * 1000, alone * 1000


def ctlTail(url: str, name: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([os.path.join(BIN, "supervisorctl"), "-s", url, "-u", "bench", "-p", "bench-pw",
                        "tail", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(who: str, pid: int, url: str, names: dict[str, str], longs: list[str], floodLog: str,
            prefix: int, *, calls: int, quick: bool, nflood: int, nlong: int, wlong: int,
            linesLong: int) -> dict[str, float]:
    """The three workloads against one server (C{prefix}: what its log adds to each line)."""
    proxy = xmlrpc.client.ServerProxy(url.replace("://", "://bench:bench-pw@") + "/RPC2")
    deadline = time.monotonic() + 20
    while proxy.supervisor.getProcessInfo(names["big"])["statename"] != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit(f"{who}: big never RUNNING")
        time.sleep(0.05)
    fig: dict[str, float] = {}
    median, _ = latencies(proxy.supervisor.getState, calls)
    fig["getstate_median_ms"] = median * 1000
    median, p99 = latencies(lambda: proxy.supervisor.tailProcessStdoutLog(names["big"], 0, 1600), calls)
    fig["tail_median_ms"], fig["tail_p99_ms"] = median * 1000, p99 * 1000
    median, _ = latencies(lambda: proxy.supervisor.readProcessStdoutLog(names["big"], -1600, 0), calls)
    fig["read_median_ms"] = median * 1000
    fig["supervisorctl_tail_s"] = ctlTail(url, names["big"], 1 if quick else 5)
    p99 = lambda: latencies(proxy.supervisor.getState, calls * 2)[1]  # noqa: E731
    fig["followers_got_kb"], fig["getstate_p99_followers_ms"], fig["getstate_p99_alone_ms"] = (
        withFollowers(url, names["ticker"], FOLLOWERS, p99))
    fig["rss_after_tails_mb"] = rssMB(pid)

    before = cpuSeconds(pid)
    proxy.supervisor.startProcess(names["flood"], False)
    wall = waitSize([floodLog], nflood * (100 + prefix), 120)
    fig["flood_cpu_s"] = cpuSeconds(pid) - before
    fig["lines_per_cpu_s"] = nflood / max(fig["flood_cpu_s"], 1.0 / TICK)
    fig["lines_per_s_wall"] = nflood / max(wall, 1e-6)

    rss0 = rssMB(pid)
    proxy.supervisor.startProcessGroup("long", False)
    waitSize(longs, nlong * linesLong * (wlong + 1 + prefix), 120)
    time.sleep(0.5)
    fig["rss_long_lines_mb"] = rssMB(pid)
    fig["rss_long_lines_growth_mb"] = fig["rss_long_lines_mb"] - rss0
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--size-mib", type=int, default=1024, help="the large log's size")
    parser.add_argument("--quick", action="store_true", help="an 8 MiB log, small floods (no figures judged)")
    args = parser.parse_args()
    size = (8 if args.quick else args.size_mib) << 20
    calls = 5 if args.quick else 100
    nflood = 5000 if args.quick else 200_000
    nlong, wlong, linesLong = 4, 60 * 1024, (20 if args.quick else 1500)

    from salvusctl.admin.users import UsersFile

    tmp = tempfile.mkdtemp(prefix="salvus-bench-logs-")
    procs: list[subprocess.Popen] = []
    figures: dict[str, dict[str, float]] = {"salvus": {}, "supervisord": {}}
    try:
        users = os.path.join(tmp, "users")
        UsersFile(users).add("bench", "bench-pw")
        logs = os.path.join(tmp, "logs")
        big = os.path.join(logs, "big-0.stdout.log")
        print(f"writing a {size >> 20} MiB log ...", flush=True)
        makeBigLog(big, size)
        os.makedirs(os.path.join(tmp, "sd"))
        for script, text in (("flood.py", FLOOD.format(n=nflood)), ("ticker.py", TICKER),
                             ("long.py", LONG.format(width=wlong, n=linesLong))):
            with open(os.path.join(tmp, script), "w") as f:
                f.write(text)
        sport, dport = freePort(), freePort()
        spec = {"run_dir": os.path.join(tmp, "run"), "log_dir": logs, "port": sport, "users": users,
                "deploys": [
                    {"name": "big", "command": ["sleep", "100000"], "startsecs": 0, "log_max_bytes": 0},
                    {"name": "ticker", "command": [sys.executable, os.path.join(tmp, "ticker.py")],
                     "startsecs": 0},
                    {"name": "flood", "command": [sys.executable, os.path.join(tmp, "flood.py")],
                     "startsecs": 0, "autostart": False, "autorestart": "never", "log_max_bytes": 0},
                    {"name": "long", "command": [sys.executable, os.path.join(tmp, "long.py")],
                     "startsecs": 0, "numprocs": nlong, "autostart": False, "autorestart": "never",
                     "log_max_bytes": 0},
                ]}
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        salvus = subprocess.Popen([sys.executable, os.path.join(HERE, "salvus_host.py"),
                                   os.path.join(tmp, "spec.json")], stdout=subprocess.PIPE, text=True)
        procs.append(salvus)
        line = salvus.stdout.readline().split()
        if not line or line[0] != "UP":
            raise SystemExit(f"the Salvus host did not start: {line}")
        conf = os.path.join(tmp, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(SUPERVISORD_CONF.format(tmp=tmp, port=dport, big=big, python=sys.executable,
                                            nlong=nlong))
        sd = subprocess.Popen([os.path.join(BIN, "supervisord"), "-c", conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sd)
        waitPort(dport)
        servers = {
            "salvus": (salvus.pid, f"http://127.0.0.1:{sport}",
                       {"big": "big:0", "flood": "flood:0", "ticker": "ticker:0"},
                       [os.path.join(logs, f"long-{i}.stdout.log") for i in range(nlong)],
                       os.path.join(logs, "flood-0.stdout.log"), 33),
            "supervisord": (sd.pid, f"http://127.0.0.1:{dport}",
                            {"big": "big", "flood": "flood", "ticker": "ticker"},
                            [os.path.join(tmp, "sd", f"long-{i}.log") for i in range(nlong)],
                            os.path.join(tmp, "sd", "flood.log"), 0),
        }
        for who, server in servers.items():
            figures[who] = measure(who, *server, calls=calls, quick=args.quick, nflood=nflood,
                                   nlong=nlong, wlong=wlong, linesLong=linesLong)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, True)

    s, d = figures["salvus"], figures["supervisord"]
    rows = [
        ("getState (the XML-RPC floor), median ms", "getstate_median_ms", "%.3f"),
        (f"tail 1600 B of {size >> 20} MiB, median ms", "tail_median_ms", "%.3f"),
        (f"tail 1600 B of {size >> 20} MiB, p99 ms", "tail_p99_ms", "%.3f"),
        (f"read -1600 of {size >> 20} MiB, median ms", "read_median_ms", "%.3f"),
        ("supervisorctl tail, s", "supervisorctl_tail_s", "%.3f"),
        ("RSS after the tails, MB", "rss_after_tails_mb", "%.1f"),
        ("getState p99, no follower, ms", "getstate_p99_alone_ms", "%.3f"),
        (f"getState p99, {FOLLOWERS} tail -f followers, ms", "getstate_p99_followers_ms", "%.3f"),
        ("  what the followers received, KiB", "followers_got_kb", "%.0f"),
        (f"flood {nflood} lines: CPU s", "flood_cpu_s", "%.2f"),
        ("lines per CPU-second", "lines_per_cpu_s", "%.0f"),
        ("lines per second (wall)", "lines_per_s_wall", "%.0f"),
        (f"RSS, {nlong} x {linesLong} lines of 60 KiB, MB", "rss_long_lines_mb", "%.1f"),
        ("  growth while they wrote, MB", "rss_long_lines_growth_mb", "%.1f"),
    ]
    print(f"| {'metric':<44} | {'Salvus':>10} | {'supervisord':>11} | {'Salvus/supervisord':>18} |")
    print(f"| {'-' * 44} | {'-' * 10} | {'-' * 11} | {'-' * 18} |")
    for label, key, fmt in rows:
        ratio = s[key] / d[key] if d[key] else float("nan")
        print(f"| {label:<44} | {fmt % s[key]:>10} | {fmt % d[key]:>11} | {ratio:>18.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

"""The workloads of bench/logs, against a Salvus host and a supervisord started side by side.

bench/logs runs all of them; bench/supervisor runs the log throughput and the RSS under long
lines (L{run} with C{parts}), so both benches measure these figures with the same code.
"""

from __future__ import annotations

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
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")

from bench._common import cpuSeconds, freePort, rssMB, stopAll, waitPort  # noqa: E402

#: Every workload, in the order they run: the large log's tails, the followers, the flood, the
#: long lines.
PARTS = ("tail", "followers", "flood", "long", "floods")
#: The "floods" part: log-shaped floods, the supervisors interleaved over rounds (medians).  Each
#: kind: (bytes a line with its newline, lines of every 10 that hold a level word, share of
#: C{nfloods} lines, Salvus's log_level).  At log_level "info" the lines' levels decide what the
#: file keeps; at "debug" no line's level changes what Salvus does with it.
FLOOD_KINDS = {
    "plain": (100, 0, 1.0, "debug"),
    "level": (100, 10, 1.0, "debug"),
    "level_classified": (100, 10, 1.0, "info"),
    "mixed": (100, 3, 1.0, "debug"),
    "mixed_classified": (100, 3, 1.0, "info"),
    "short_classified": (24, 3, 1.0, "info"),
    "long4k_classified": (4096, 3, 0.05, "info"),
    "mixed_followed": (100, 3, 0.5, "debug"),
}
#: The kinds run with one C{tail -f} follower attached (C{/logtail/<name>}, what C{supervisorctl
#: tail -f} opens) for the whole flood: their CPU counts until the server is idle again (what it
#: had to send the follower sent).
FOLLOWED_KINDS = ("mixed_followed",)
KIND_FLOOD = """import sys
w = sys.stdout.write
words = ('INFO', 'WARNING', 'ERROR')
width, n, every = {width}, {n}, {every}
for i in range(n):
    if i % 10 < every:
        head = ('%s %d ' % (words[i % 3], i) if width < 60
                else '2026-12-03 17:00:00,123 %s app.worker: request %d ' % (words[i % 3], i))
    else:
        head = 'ok %d ' % i if width < 60 else '2026-12-03 17:00:00,123 app.worker: handled %d ' % i
    w(head.ljust(width - 1, 'x')[:width - 1] + '\\n')
"""
#: Run by L{balancerFigures}, not L{run}: a twistd host with a balancer, Salvus alone.
BALANCER = "balancer"
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
"""

SUPERVISORD_PROGRAMS = {
    "big": """
[program:big]
command=sleep 100000
startsecs=0
stdout_logfile={big}
stdout_logfile_maxbytes=0
""",
    "flood": """
[program:flood]
command={python} {tmp}/flood.py
autostart=false
autorestart=false
startsecs=0
stdout_logfile={tmp}/sd/flood.log
stdout_logfile_maxbytes=0
""",
    "ticker": """
[program:ticker]
command={python} {tmp}/ticker.py
startsecs=0
stdout_logfile={tmp}/sd/ticker.log
stdout_logfile_maxbytes=0
""",
    "long": """
[program:long]
command={python} {tmp}/long.py
autostart=false
autorestart=false
numprocs={nlong}
process_name=%(program_name)s_%(process_num)d
startsecs=0
stdout_logfile={tmp}/sd/long-%(process_num)d.log
stdout_logfile_maxbytes=0
""",
}


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


def withFollowers(url: str, name: str, n: int, measure, measureAlone: bool = True):
    """(KiB the followers received, C{measure()} with C{n} C{tail -f} followers of C{name}'s log,
    C{measure()} without, or None): C{n} connections to C{/logtail/<name>} (what C{supervisorctl
    tail -f} opens), drained by a process of their own, while the program writes 100 lines a
    second."""
    alone = measure() if measureAlone else None
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
    return got / 1024, followed, alone


def ctlTail(url: str, name: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([os.path.join(BIN, "supervisorctl"), "-s", url, "-u", "bench", "-p", "bench-pw",
                        "tail", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def waitRunning(proxy, name: str, who: str) -> None:
    deadline = time.monotonic() + 20
    while proxy.supervisor.getProcessInfo(name)["statename"] != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit(f"{who}: {name} never RUNNING")
        time.sleep(0.05)


def floodFigures(proxy, pid: int, name: str, floodLog: str, nflood: int, prefix: int) -> dict[str, float]:
    """A program writes C{nflood} lines of 100 bytes and exits: the server's CPU seconds from its
    start until every line is in C{floodLog}, lines per CPU-second and per wall second."""
    before = cpuSeconds(pid)
    proxy.supervisor.startProcess(name, False)
    wall = waitSize([floodLog], nflood * (100 + prefix), 120)
    fig = {"flood_cpu_s": cpuSeconds(pid) - before}
    fig["lines_per_cpu_s"] = nflood / max(fig["flood_cpu_s"], 1.0 / TICK)
    fig["lines_per_s_wall"] = nflood / max(wall, 1e-6)
    return fig


def longLineFigures(proxy, pid: int, group: str, longs: list[str], nlong: int, wlong: int,
                    linesLong: int, prefix: int) -> dict[str, float]:
    """C{nlong} instances each write C{linesLong} lines of C{wlong} bytes and stay up: the
    server's RSS once every line is in the files, and its growth while they wrote."""
    rss0 = rssMB(pid)
    proxy.supervisor.startProcessGroup(group, False)
    waitSize(longs, nlong * linesLong * (wlong + 1 + prefix), 120)
    time.sleep(0.5)
    fig = {"rss_long_lines_mb": rssMB(pid)}
    fig["rss_long_lines_growth_mb"] = fig["rss_long_lines_mb"] - rss0
    return fig


def measure(who: str, pid: int, url: str, names: dict[str, str], longs: list[str], floodLog: str,
            prefix: int, *, parts: tuple[str, ...], calls: int, quick: bool, nflood: int, nlong: int,
            wlong: int, linesLong: int) -> dict[str, float]:
    """The workloads in C{parts} against one server (C{prefix}: what its log adds to each line)."""
    proxy = xmlrpc.client.ServerProxy(url.replace("://", "://bench:bench-pw@") + "/RPC2")
    fig: dict[str, float] = {}
    if "tail" in parts:
        waitRunning(proxy, names["big"], who)
        median, _ = latencies(proxy.supervisor.getState, calls)
        fig["getstate_median_ms"] = median * 1000
        median, p99 = latencies(lambda: proxy.supervisor.tailProcessStdoutLog(names["big"], 0, 1600), calls)
        fig["tail_median_ms"], fig["tail_p99_ms"] = median * 1000, p99 * 1000
        median, _ = latencies(lambda: proxy.supervisor.readProcessStdoutLog(names["big"], -1600, 0), calls)
        fig["read_median_ms"] = median * 1000
        fig["supervisorctl_tail_s"] = ctlTail(url, names["big"], 1 if quick else 5)
    if "followers" in parts:
        waitRunning(proxy, names["ticker"], who)
        p99 = lambda: latencies(proxy.supervisor.getState, calls * 2)[1]  # noqa: E731
        got, followed, alone = withFollowers(url, names["ticker"], FOLLOWERS, p99)
        fig["followers_got_kb"] = got
        fig["getstate_p99_followers_ms"], fig["getstate_p99_alone_ms"] = followed * 1000, alone * 1000
    if "tail" in parts:
        fig["rss_after_tails_mb"] = rssMB(pid)
    if "flood" in parts:
        fig.update(floodFigures(proxy, pid, names["flood"], floodLog, nflood, prefix))
    if "long" in parts:
        fig.update(longLineFigures(proxy, pid, "long", longs, nlong, wlong, linesLong, prefix))
    return fig


def kindLines(kind: str, nfloods: int) -> int:
    return max(1, int(nfloods * FLOOD_KINDS[kind][2]))


def followFlood(url: str, name: str, path: str) -> subprocess.Popen:
    """One C{tail -f} follower of C{name}, connected (its log C{path} created first: supervisord's
    C{/logtail} refuses a file not there yet)."""
    if not os.path.exists(path):
        open(path, "ab").close()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, host, port, name, "1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if drain.stdout.readline().strip() != "CONNECTED":
        drain.kill()
        raise SystemExit("the follower did not connect")
    time.sleep(0.3)  # its first 1600 bytes served, before the CPU count starts
    return drain


def settle(pid: int, quiet: float = 0.01, step: float = 0.25, timeout: float = 120) -> None:
    """Wait until C{pid} uses less than C{quiet} CPU-seconds in C{step} seconds: what a follower
    still had to be sent is sent (each server streams at its own pace, and may skip lines for
    a slow reader, so neither a byte nor a line count says when it is done)."""
    deadline = time.monotonic() + timeout
    before = cpuSeconds(pid)
    while time.monotonic() < deadline:
        time.sleep(step)
        now = cpuSeconds(pid)
        if now - before < quiet:
            return
        before = now


def floodsFigures(servers: dict, kinds: list[str], nfloods: int, rounds: int,
                  progress) -> dict[str, dict[str, float]]:
    """Each kind's flood on each server, C{rounds} times, the servers' order alternating each
    round (the machine is shared: drift hits both): the median CPU microseconds a line."""
    cpu: dict[tuple[str, str], list[float]] = {}
    order = list(servers)
    for r in range(rounds):
        progress(f"floods, round {r + 1} of {rounds} ...", flush=True)
        for kind in kinds:
            width = FLOOD_KINDS[kind][0]
            n = kindLines(kind, nfloods)
            for who in (order if r % 2 == 0 else order[::-1]):
                pid, proxy, name, path = servers[who][kind]
                have = os.path.getsize(path) if os.path.exists(path) else 0
                drain = None
                if kind in FOLLOWED_KINDS:
                    drain = followFlood(servers[who]["url"], name, path)
                try:
                    before = cpuSeconds(pid)
                    proxy.supervisor.startProcess(name, False)
                    waitSize([path], have + n * width, 300)
                    if drain is not None:
                        settle(pid)
                    cpu.setdefault((who, kind), []).append(cpuSeconds(pid) - before)
                finally:
                    if drain is not None:
                        drain.kill()
                        drain.wait()
    out: dict[str, dict[str, float]] = {who: {} for who in servers}
    for (who, kind), seconds in cpu.items():
        n = kindLines(kind, nfloods)
        median = statistics.median(seconds)
        out[who][f"flood_{kind}_us_per_line"] = median / n * 1e6
        out[who][f"flood_{kind}_lines_per_cpu_s"] = n / max(median, 1.0 / TICK)
    return out


def run(*, parts: tuple[str, ...] = PARTS, size: int = 1 << 30, calls: int = 100, quick: bool = False,
        nflood: int = 200_000, nlong: int = 4, wlong: int = 60 * 1024, linesLong: int = 1500,
        supervisordBin: str = BIN, progress=print, nfloods: int = 200_000, rounds: int = 5,
        kinds: tuple[str, ...] = tuple(FLOOD_KINDS)) -> dict[str, dict[str, float]]:
    """Start a Salvus host (bench/logs/salvus_host.py) and a supervisord with the programs
    C{parts} need, run those workloads on each in turn, stop both: C{{"salvus": figures,
    "supervisord": figures}}."""
    from salvusctl.admin.users import UsersFile

    programs = set()
    for part, needs in (("tail", {"big"}), ("followers", {"ticker"}), ("flood", {"flood"}),
                        ("long", {"long"})):
        if part in parts:
            programs |= needs
    tmp = tempfile.mkdtemp(prefix="salvus-bench-logs-")
    procs: list[subprocess.Popen] = []
    figures: dict[str, dict[str, float]] = {"salvus": {}, "supervisord": {}}
    try:
        users = os.path.join(tmp, "users")
        UsersFile(users).add("bench", "bench-pw")
        logs = os.path.join(tmp, "logs")
        big = os.path.join(logs, "big-0.stdout.log")
        if "big" in programs:
            progress(f"writing a {size >> 20} MiB log ...", flush=True)
            makeBigLog(big, size)
        os.makedirs(os.path.join(tmp, "sd"))
        floods = kinds if "floods" in parts else ()
        for script, text in (("flood.py", FLOOD.format(n=nflood)), ("ticker.py", TICKER),
                             ("long.py", LONG.format(width=wlong, n=linesLong))):
            with open(os.path.join(tmp, script), "w") as f:
                f.write(text)
        for kind in floods:
            width, every, _share, _level = FLOOD_KINDS[kind]
            with open(os.path.join(tmp, f"flood_{kind}.py"), "w") as f:
                f.write(KIND_FLOOD.format(width=width, every=every, n=kindLines(kind, nfloods)))
        sport, dport = freePort(), freePort()
        deploys = {
            "big": {"name": "big", "command": ["sleep", "100000"], "startsecs": 0, "log_max_bytes": 0},
            "ticker": {"name": "ticker", "command": [sys.executable, os.path.join(tmp, "ticker.py")],
                       "startsecs": 0},
            "flood": {"name": "flood", "command": [sys.executable, os.path.join(tmp, "flood.py")],
                      "startsecs": 0, "autostart": False, "autorestart": "never", "log_max_bytes": 0},
            "long": {"name": "long", "command": [sys.executable, os.path.join(tmp, "long.py")],
                     "startsecs": 0, "numprocs": nlong, "autostart": False, "autorestart": "never",
                     "log_max_bytes": 0},
        }
        for kind in floods:
            deploys[f"flood_{kind}"] = {
                "name": f"flood_{kind}", "command": [sys.executable, os.path.join(tmp, f"flood_{kind}.py")],
                "startsecs": 0, "autostart": False, "autorestart": "never", "log_max_bytes": 0,
                "log_level": FLOOD_KINDS[kind][3]}
            programs.add(f"flood_{kind}")
        spec = {"run_dir": os.path.join(tmp, "run"), "log_dir": logs, "port": sport, "users": users,
                "deploys": [d for name, d in deploys.items() if name in programs]}
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        salvus = subprocess.Popen([sys.executable, os.path.join(HERE, "salvus_host.py"),
                                   os.path.join(tmp, "spec.json")], stdout=subprocess.PIPE, text=True)
        procs.append(salvus)
        line = salvus.stdout.readline().split()
        if not line or line[0] != "UP":
            raise SystemExit(f"the Salvus host did not start: {line}")
        conf = os.path.join(tmp, "supervisord.conf")
        text = SUPERVISORD_CONF + "".join(v for k, v in SUPERVISORD_PROGRAMS.items() if k in programs)
        text += "".join(SUPERVISORD_PROGRAMS["flood"].replace("flood", f"flood_{kind}") for kind in floods)
        with open(conf, "w") as f:
            f.write(text.format(tmp=tmp, port=dport, big=big, python=sys.executable, nlong=nlong))
        sd = subprocess.Popen([os.path.join(supervisordBin, "supervisord"), "-c", conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sd)
        waitPort(dport)
        servers = {
            "salvus": (salvus.pid, f"http://127.0.0.1:{sport}",
                       {"big": "big:0", "flood": "flood:0", "ticker": "ticker:0"},
                       [os.path.join(logs, f"long-{i}.stdout.log") for i in range(nlong)],
                       os.path.join(logs, "flood-0.stdout.log"), 0),
            "supervisord": (sd.pid, f"http://127.0.0.1:{dport}",
                            {"big": "big", "flood": "flood", "ticker": "ticker"},
                            [os.path.join(tmp, "sd", f"long-{i}.log") for i in range(nlong)],
                            os.path.join(tmp, "sd", "flood.log"), 0),
        }
        for who, server in servers.items():
            figures[who] = measure(who, *server, parts=parts, calls=calls, quick=quick, nflood=nflood,
                                   nlong=nlong, wlong=wlong, linesLong=linesLong)
        if floods:
            sproxy = xmlrpc.client.ServerProxy(f"http://bench:bench-pw@127.0.0.1:{sport}/RPC2")
            dproxy = xmlrpc.client.ServerProxy(f"http://bench:bench-pw@127.0.0.1:{dport}/RPC2")
            targets = {
                "salvus": {k: (salvus.pid, sproxy, f"flood_{k}:0",
                                  os.path.join(logs, f"flood_{k}-0.stdout.log")) for k in floods},
                "supervisord": {k: (sd.pid, dproxy, f"flood_{k}", os.path.join(tmp, "sd", f"flood_{k}.log"))
                                for k in floods},
            }
            targets["salvus"]["url"] = f"http://127.0.0.1:{sport}"
            targets["supervisord"]["url"] = f"http://127.0.0.1:{dport}"
            for who, fig in floodsFigures(targets, list(floods), nfloods, rounds, progress).items():
                figures[who].update(fig)
    finally:
        stopAll(procs, 20)
        shutil.rmtree(tmp, True)
    return figures


# -- the balancer's p99 beside tail -f followers, in one real host ------------------------------

HOST_TAC = """
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy
host = Host(name="bench", store="sqlite:{var}/salvus.db", var="{var}")
host.add(Balanced("web", listen=["tcp:{port}:interface=127.0.0.1"],
                  groups=[Group("g", [Server("127.0.0.1:{backend}")], health=HealthCheck(interval=60))]))
host.add(Deploy("ticker", command=[{python!r}, {ticker!r}], startsecs=0))
host.add(Admin("tcp:{admin}:interface=127.0.0.1", users={users!r}))
application = host.application()
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {t}/cb; proxy_temp_path {t}/pt; fastcgi_temp_path {t}/ft;
  uwsgi_temp_path {t}/ut; scgi_temp_path {t}/st;
  server {{ listen 127.0.0.1:{port}; root {t}/www; }}
}}
"""


def wrkP99(port: int, seconds: float, conns: int = 20) -> float:
    """wrk's p99 latency (ms) for a 1 KiB file through C{port}, one thread, C{conns} connections,
    at most 2,000 requests a second per run (C{--rate} is not wrk's: the load is closed-loop, so
    the figure is a latency under a load the host keeps up with, not a saturation)."""
    import re

    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency",
                          f"http://127.0.0.1:{port}/small.html"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        raise SystemExit(f"wrk gave no p99: {out[-500:]}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def balancerFigures(*, seconds: float = 5.0, rounds: int = 3, quick: bool = False,
                    progress=print) -> dict[str, float]:
    """A twistd host with a balancer (in front of nginx), a program printing 100 lines a second
    and the admin: the balancer's p99 (wrk) and the admin's getState p99 without and with
    L{FOLLOWERS} C{tail -f} followers of that program's log, in the host's one reactor; medians
    over C{rounds} alternated runs."""
    from salvusctl.admin.users import UsersFile

    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            raise SystemExit(f"bench/logs balancer: {tool} is not installed")
    tmp = tempfile.mkdtemp(prefix="salvus-bench-logs-bal-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user
    procs: list[subprocess.Popen] = []
    try:
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "small.html"), "wb") as f:
            f.write(b"x" * 1024)
        backend = freePort()
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(t=tmp, port=backend))
        procs.append(subprocess.Popen(["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf"),
                                       "-e", os.path.join(tmp, "nginx-error.log")]))
        waitPort(backend)
        var = os.path.join(tmp, "var")
        os.makedirs(var)
        users = os.path.join(tmp, "users")
        UsersFile(users).add("bench", "bench-pw")
        ticker = os.path.join(tmp, "ticker.py")
        with open(ticker, "w") as f:
            f.write(TICKER)
        port, admin = freePort(), freePort()
        tac = os.path.join(var, "host.tac")
        with open(tac, "w") as f:
            f.write(HOST_TAC.format(var=var, port=port, backend=backend, python=sys.executable,
                                    ticker=ticker, admin=admin, users=users))
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        host = subprocess.Popen(twistd + ["-n", "--pidfile=", "--logfile", os.path.join(tmp, "host.log"),
                                          "salvus", "--config", tac],
                                env=dict(os.environ, PYTHONPATH=ROOT), cwd=var)
        procs.append(host)
        waitPort(port, 30)
        waitPort(admin, 30)
        url = f"http://127.0.0.1:{admin}"
        proxy = xmlrpc.client.ServerProxy(url.replace("://", "://bench:bench-pw@") + "/RPC2")
        waitRunning(proxy, "ticker:0", "salvus")
        wrkP99(port, 1)  # warm up
        runs: dict[str, list[float]] = {}

        def idleCpuPct() -> float:
            """The host's CPU over 5 s with no request: what the program and followers cost."""
            before, start = cpuSeconds(host.pid), time.monotonic()
            time.sleep(1 if quick else 5)
            return 100 * (cpuSeconds(host.pid) - before) / (time.monotonic() - start)

        def both() -> tuple[float, float, float]:
            return (wrkP99(port, seconds), latencies(proxy.supervisor.getState, 200)[1] * 1000,
                    idleCpuPct())

        for r in range(rounds):
            progress(f"balancer p99 with 0 and {FOLLOWERS} followers (round {r + 1}/{rounds}) ...",
                     flush=True)
            alone = both()
            got, followed, _ = withFollowers(url, "ticker:0", FOLLOWERS, both, measureAlone=False)
            for key, value in (("balancer_p99_alone_ms", alone[0]),
                               ("balancer_p99_followers_ms", followed[0]),
                               ("host_getstate_p99_alone_ms", alone[1]),
                               ("host_getstate_p99_followers_ms", followed[1]),
                               ("host_cpu_pct_alone", alone[2]), ("host_cpu_pct_followers", followed[2]),
                               ("host_followers_got_kb", got)):
                runs.setdefault(key, []).append(value)
        return {key: statistics.median(values) for key, values in runs.items()}
    finally:
        stopAll(procs[::-1], 20)
        shutil.rmtree(tmp, True)

"""Salvus supervisor vs supervisord vs circus, same workloads, one run, ratios.

    python bench/supervisor [--json PATH] [--short] [--venv DIR]
    python bench/supervisor --quick     # seconds: 10 instances, one round, no venv of its own

1. crash -> respawn latency: a bash child that runs 1.05-1.95 s and exits 1; time from its exit to
   the next child's first line (both stamped by the child itself), 10 instances x 5 cycles = 50 samples.
2. time from asking a running (idle) supervisor to start 200 instances to all RUNNING; median of 3
   rounds, the supervisors interleaved.  The headline row is the workload all three share:
   startsecs=0, i.e. RUNNING once spawned, which is what circus means by a started process (it has
   no startsecs).  A second row runs Salvus and supervisord at their default startsecs=1, where both
   wait out the same second before RUNNING; it is also shown net of that shared wait.  A third
   row ("ready") runs a child that prints "ready" and then sleeps, each supervisor using the best
   it has to know a process has started: Salvus its readiness signal (RUNNING on that line,
   Deploy(ready=Ready("log", ...))), supervisord its default startsecs=1, circus the spawn.
3. CPU used by the supervisor process over 60 s (15 s with --short) with 200 idle instances.
4. RSS of the supervisor process with 200 instances.
5. log throughput: a program writes 2,000,000 lines of 100 bytes (5,000 with --quick); the
   supervisor's CPU seconds from its start until every line is in its log file give lines per
   CPU-second (per core).  6. RSS under long lines: 4 instances each write 1,500 lines of 60 KiB
   (20 with --quick) and stay up.  Both are bench/logs's workloads (bench/logs/workloads.py),
   run by the same code against Salvus and supervisord (circus has no log files to compare).
   Then log-shaped floods (level words in every line or in 30%, lines of 24 B and 4 KiB; 500,000
   lines each, 5,000 with --quick), the two supervisors interleaved over 3 rounds: median CPU
   microseconds a line.
7. RSS and module count of a real C{twistd -n salvus --config host.tac} whose file declares only
   the 200 instances (twistd, the plugin scan, the store: what a supervise-only host costs),
   against the same supervisord.

supervisord and circus come from PyPI into a venv of the bench's own (created on first run).
C{--quick} (CI checks the bench runs; no figure judged) uses the supervisord installed beside this
Python (the test extras) instead, and circus only if it is there too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from bench._common import cpuSeconds, freePort, rssMB  # noqa: E402
from bench.logs import workloads as logWorkloads  # noqa: E402

N_IDLE = 200
# The startsecs values measured (--startsecs): the first is the headline start-200 row, the workload
# all three run (0: circus has no startsecs); the others add rows for Salvus and supervisord only.
STARTSECS_ROWS = (0.0, 1.0)
N_CRASH = 10
CYCLES = 5
#: The log rows: lines of the flood, and lines of 60 KiB written by each of 4 instances.
N_FLOOD = 2_000_000
N_LONG_LINES = 1500
#: The log-shaped floods (bench/logs/workloads.py FLOOD_KINDS): lines of each, and rounds
#: (the supervisors interleaved, medians).
N_FLOODS = 500_000
FLOOD_ROUNDS = 3
BASH = shutil.which("bash") or "/bin/bash"


def ensureVenv(path: str) -> str:
    """The bench venv with supervisor and circus (created, then reused)."""
    if not (os.path.exists(os.path.join(path, "bin", "supervisord"))
            and os.path.exists(os.path.join(path, "bin", "circusd"))):
        print(f"creating {path} (pip install supervisor circus) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        pip = os.path.join(path, "bin", "pip")
        subprocess.run([pip, "install", "-q", "supervisor", "circus"], check=True)
    return path


def killTagged(tag: str) -> None:
    """Kill any process whose command line has C{tag} (leftovers of a failed run)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if tag.encode() in f.read():
                    os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass


def stopDaemon(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the three supervisors, each able to run a program spec ------------------------------------


class _Supervisor:
    """What the three have in common: a bench venv, a work directory, the supervisor's pid."""

    name = ""
    hasStartsecs = True

    def __init__(self, venv: str, work: str):
        self.venv = venv
        self.work = work

    def pid(self, proc) -> int:
        return proc.pid


class Salvus(_Supervisor):
    name = "salvus"

    def launch(self, program: str, argv: list[str], numprocs: int, tag: str, trigger: bool = False,
               startsecs: float = 0.0, ready: dict | None = None):
        spec = {"run_dir": os.path.join(self.work, "run"), "trigger": trigger, "deploys": [{
            "name": program, "command": [a.replace("%N", "{index}") for a in argv], "numprocs": numprocs,
            "startsecs": startsecs, "flapping": None, "stopwaitsecs": 10, "autostart": not trigger,
            "ready": ready}]}
        path = os.path.join(self.work, "spec.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "salvus_runner.py"), path],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if trigger:
            for line in proc.stdout:
                if line.startswith("UP"):
                    break
            t0 = time.time()
            proc.stdin.write("start\n")
            proc.stdin.flush()
        return proc, t0

    def waitAll(self, proc, n, timeout) -> float:
        deadline = time.time() + timeout
        for line in proc.stdout:
            if line.startswith("ALLRUNNING"):
                return float(line.split()[1])
            if time.time() > deadline:
                break
        raise RuntimeError("salvus did not report all RUNNING")


class Supervisord(_Supervisor):
    name = "supervisord"

    def launch(self, program, argv, numprocs, tag, trigger=False, startsecs=0.0, ready=None):
        self.port = freePort()
        command = " ".join(a.replace("%N", "%(process_num)d") for a in argv)
        conf = f"""
[inet_http_server]
port=127.0.0.1:{self.port}
[supervisord]
logfile={self.work}/supervisord.log
pidfile={self.work}/supervisord.pid
childlogdir={self.work}
nodaemon=true
minfds=1024
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:{program}]
command={command}
process_name=%(program_name)s_%(process_num)d
numprocs={numprocs}
startsecs={startsecs:g}
stopwaitsecs=10
autostart={"false" if trigger else "true"}
"""
        path = os.path.join(self.work, "supervisord.conf")
        with open(path, "w") as f:
            f.write(conf)
        t0 = time.time()
        proc = subprocess.Popen([os.path.join(self.venv, "bin", "supervisord"), "-c", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if trigger:
            server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")
            deadline = time.time() + 30
            while True:
                try:
                    if server.supervisor.getState()["statename"] == "RUNNING":
                        break
                except (OSError, xmlrpc.client.Error):
                    if time.time() > deadline:
                        raise
                time.sleep(0.02)
            t0 = time.time()
            server.supervisor.startAllProcesses(False)
        return proc, t0

    def waitAll(self, proc, n, timeout) -> float:
        server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                infos = server.supervisor.getAllProcessInfo()
                if len(infos) == n and all(i["statename"] == "RUNNING" for i in infos):
                    return time.time()
            except (OSError, xmlrpc.client.Error):
                pass
            time.sleep(0.02)
        raise RuntimeError("supervisord did not reach all RUNNING")


class Circus(_Supervisor):
    name = "circus"

    hasStartsecs = False

    def launch(self, program, argv, numprocs, tag, trigger=False, startsecs=0.0, ready=None):
        if startsecs:
            raise ValueError("circus has no startsecs")
        self.endpoint = f"tcp://127.0.0.1:{freePort()}"
        cmd = argv[0]
        args = " ".join(a.replace("%N", "$(circus.wid)") for a in argv[1:])
        conf = f"""
[circus]
endpoint = {self.endpoint}
pubsub_endpoint = tcp://127.0.0.1:{freePort()}
statsd = False
[watcher:{program}]
cmd = {cmd}
args = {args}
numprocesses = {numprocs}
autostart = {not trigger}
"""
        path = os.path.join(self.work, "circus.ini")
        with open(path, "w") as f:
            f.write(conf)
        self.program = program
        t0 = time.time()
        proc = subprocess.Popen([os.path.join(self.venv, "bin", "circusd"), path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if trigger:
            helper = [os.path.join(self.venv, "bin", "python"), os.path.join(HERE, "circus_wait.py")]
            out = subprocess.run(helper + [self.endpoint, program, "start", "30"],
                                 capture_output=True, text=True)
            if not out.stdout.startswith("STARTED"):
                raise RuntimeError(f"circus did not start: {out.stdout} {out.stderr[-300:]}")
            t0 = float(out.stdout.split()[1])
        return proc, t0

    def waitAll(self, proc, n, timeout) -> float:
        out = subprocess.run([os.path.join(self.venv, "bin", "python"), os.path.join(HERE, "circus_wait.py"),
                              self.endpoint, self.program, str(n), str(timeout)],
                             capture_output=True, text=True)
        line = out.stdout.strip()
        if not line.startswith("ALLRUNNING"):
            raise RuntimeError(f"circus did not reach {n} processes: {line} {out.stderr[-300:]}")
        return float(line.split()[1])


class Floor(_Supervisor):
    """A bare fork+exec loop (floor.py): the least any supervisor can take to respawn.  It runs
    only the respawn workload."""

    name = "floor"
    hasStartsecs = False

    def launch(self, program, argv, numprocs, tag, trigger=False, startsecs=0.0, ready=None):
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "floor.py"), str(numprocs), *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, t0


# -- workloads -------------------------------------------------------------------------------------


# The "ready" row's child: says it is up, then idles like the others.
READY_SCRIPT = 'echo ready\nexec /bin/sleep "$1"\n'
READY_SIGNAL = {"kind": "log", "pattern": "^ready$"}


def readyArgs(sup, work: str, tag: str) -> dict:
    """The ready row's workload for C{sup}: its child, and how the supervisor knows it started."""
    script = os.path.join(work, "ready.sh")
    with open(script, "w") as f:
        f.write(READY_SCRIPT)
    kw: dict = {"argv": ["/bin/sh", script, tag]}
    if isinstance(sup, Salvus):
        kw["ready"] = READY_SIGNAL
    elif sup.hasStartsecs:
        kw["startsecs"] = 1.0  # supervisord's default, its only way to say "started"
    return kw


def idleWorkload(sup, idleSeconds: float, tag: str, startsecs: float = 0.0, argv: list[str] | None = None,
                 ready: dict | None = None) -> dict:
    """Start 200 sleepers; time to all RUNNING, then (if idleSeconds) idle CPU and RSS."""
    proc, t0 = sup.launch("idle", argv or ["/bin/sleep", tag], N_IDLE, tag, trigger=True, startsecs=startsecs,
                          ready=ready)
    try:
        t1 = sup.waitAll(proc, N_IDLE, 120)
        start200 = t1 - t0
        if not idleSeconds:
            return {"start200_s": start200}
        time.sleep(2)
        pid = sup.pid(proc)
        c0, w0 = cpuSeconds(pid), time.time()
        time.sleep(idleSeconds)
        c1, w1 = cpuSeconds(pid), time.time()
        rss = rssMB(pid)
    finally:
        stopDaemon(proc)
        killTagged(tag)
    return {"start200_s": start200, "idle_cpu_pct": 100 * (c1 - c0) / (w1 - w0), "rss_mb": rss}


HOST_FILE = """import os
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy

var = {var!r}
host = Host(store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
host.add(Deploy("idle", command=["/bin/sleep", {tag!r}], numprocs={n}, startsecs=0))
"""


def childCount(pid: int) -> int:
    """How many processes have C{pid} as their parent."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    count += 1
        except (OSError, IndexError, ValueError):
            pass
    return count


def hostWorkload(work: str, tag: str) -> dict:
    """A real C{twistd -n salvus --config host.tac} that declares only a supervisor of 200
    sleepers: its RSS and module count once all run (what a user's supervise-only host costs,
    twistd, the plugin scan and the store included)."""
    var = os.path.join(work, "var")
    os.makedirs(var, exist_ok=True)
    config = os.path.join(work, "host.tac")
    with open(config, "w") as f:
        f.write(HOST_FILE.format(var=var, tag=tag, n=N_IDLE))
    modules = os.path.join(work, "modules.txt")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(HERE)) + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, os.path.join(HERE, "twistd_host.py"), modules, "-n", "--pidfile=",
            "--logfile", os.path.join(work, "twistd.log"), "salvus", "--config", config]
    proc = subprocess.Popen(argv,
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while childCount(proc.pid) < N_IDLE or not os.path.exists(modules):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the twistd host did not start {N_IDLE} instances")
            time.sleep(0.1)
        time.sleep(2)
        rss = rssMB(proc.pid)
        with open(modules) as f:
            count = int(f.readline())
    finally:
        stopDaemon(proc)
        killTagged(tag)
    return {"host_rss_mb": rss, "host_modules": float(count)}


def respawnWorkload(sup, work: str, tag: str) -> dict:
    """10 crashing instances x 5 cycles: exit -> next first line, stamped by the children."""
    # bash's $EPOCHREALTIME stamps without a fork, so the measured window is the supervisor's
    # reaction plus one bash start, the same for all three.
    script = os.path.join(work, "crash.sh")
    with open(script, "w") as f:
        # Instance i lives 1.05 + 0.1 * (i % 10) s: exits are spread out, so the figure is the
        # reaction to one exit, not the throughput of ten simultaneous ones.
        f.write(f'echo "start $EPOCHREALTIME" >> {work}/lat-$1.log\n'
                f"sleep 1.$(( $1 % 10 ))5 # {tag}\n"
                f'echo "exit $EPOCHREALTIME" >> {work}/lat-$1.log\nexit 1\n')
    # The supervisors' defaults: startsecs=1 where it exists (every child outlives it).
    proc, t0 = sup.launch("crash", [BASH, script, "%N"], N_CRASH, tag,
                          startsecs=1.0 if sup.hasStartsecs else 0.0)
    samples: list[float] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            samples = []
            done = 0
            for name in os.listdir(work):
                if not name.startswith("lat-"):
                    continue
                with open(os.path.join(work, name)) as f:
                    events = [line.split() for line in f if line.strip()]
                mine = []
                for a, b in zip(events, events[1:], strict=False):
                    if a[0] == "exit" and b[0] == "start":
                        mine.append(float(b[1]) - float(a[1]))
                samples.extend(mine[:CYCLES])
                done += len(mine) >= CYCLES
            if done >= N_CRASH:
                break
            time.sleep(0.5)
    finally:
        stopDaemon(proc)
        killTagged(tag)
    if len(samples) < N_CRASH * CYCLES:
        raise RuntimeError(f"{sup.name}: only {len(samples)} respawn samples")
    samples.sort()
    return {"respawn_median_ms": 1000 * statistics.median(samples),
            "respawn_p99_ms": 1000 * samples[max(0, math.ceil(0.99 * len(samples)) - 1)],
            "respawn_samples": len(samples)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/supervisor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures and ratios as JSON")
    parser.add_argument("--short", action="store_true", help="idle CPU over 15 s instead of 60 s")
    parser.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "salvus-bench-venv"),
                        help="where supervisor and circus are installed (created if missing)")
    parser.add_argument("--only", help="comma-separated subset of salvus,supervisord,circus")
    parser.add_argument("--rounds", type=int, default=3, help="start-200 rounds (median kept)")
    parser.add_argument("--respawn-rounds", type=int, default=1,
                        help="crash->respawn rounds, interleaved (the median of each one's medians kept)")
    parser.add_argument("--respawn-only", action="store_true", help="only the crash->respawn rows")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the bare fork+exec loop that is the respawn rows' floor")
    parser.add_argument("--no-logs", action="store_true",
                        help="skip the log throughput and long-line RSS rows")
    parser.add_argument("--no-ready", action="store_true",
                        help="skip the start-200 row where Salvus uses its readiness signal")
    parser.add_argument("--startsecs", default=",".join(f"{v:g}" for v in STARTSECS_ROWS),
                        help="comma-separated startsecs values for start-200 (default 0,1); the first "
                             "is the headline row, run by all three, the others by Salvus and "
                             "supervisord only")
    parser.add_argument("--quick", action="store_true",
                        help=f"seconds, not minutes: {QUICK_IDLE} instances, {QUICK_CRASH} crashing "
                             "once, one round, 1 s idle, the supervisord beside this Python")
    args = parser.parse_args(argv)
    if args.quick:
        quick(args)
    try:
        rows = [float(v) for v in args.startsecs.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--startsecs: not a list of numbers: {args.startsecs!r}")
    if not rows or any(v < 0 for v in rows):
        parser.error("--startsecs: give one or more values >= 0")
    venv = args.venv if args.quick else ensureVenv(args.venv)
    idleSeconds = 1 if args.quick else 15 if args.short else 60
    results: dict[str, dict] = {}
    respawners: dict[str, tuple] = {}
    kinds = [Salvus, Supervisord, Circus]
    if args.only:
        kinds = [k for k in kinds if k.name in args.only.split(",")]
    sups = {}
    for kind in kinds:
        work = tempfile.mkdtemp(prefix=f"salvus-bench-{kind.name}-")
        sups[kind.name] = (kind(venv, work), work)
    try:
        respawnRuns: dict[str, list[dict]] = {}
        respawners = dict(sups)
        if not args.no_floor:
            work = tempfile.mkdtemp(prefix="salvus-bench-floor-")
            respawners["floor"] = (Floor(venv, work), work)
        for r in range(args.respawn_rounds):
            # Interleaved (salvus, supervisord, circus, floor, salvus, ...): the machine's load
            # drifts, and each sees it alike.
            for i, (name, (sup, work)) in enumerate(respawners.items()):
                tag = str(360000 + os.getpid() % 1000 * 10 + i)
                roundDir = os.path.join(work, f"respawn{r}")
                os.makedirs(roundDir, exist_ok=True)
                print(f"{name}: respawn (round {r + 1}/{args.respawn_rounds}) ...", flush=True)
                respawnRuns.setdefault(name, []).append(respawnWorkload(sup, roundDir, tag + "1"))
        for name, runs in respawnRuns.items():
            results[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            results[name]["respawn_median_runs_ms"] = [run["respawn_median_ms"] for run in runs]
        if args.respawn_only:
            report(results, args.json, 0, [0.0])
            return 0
        # start-200 in interleaved rounds (the machine's load drifts; each supervisor sees it
        # alike), idle CPU and RSS in the last round of the headline startsecs.
        runs: dict[tuple[str, float], list[float]] = {}
        for r in range(args.rounds):
            last = r == args.rounds - 1
            for startsecs in rows:
                for i, (name, (sup, work)) in enumerate(sups.items()):
                    if startsecs and not sup.hasStartsecs:
                        continue
                    headline = startsecs == rows[0]
                    tag = str(360000 + os.getpid() % 1000 * 10 + i)
                    idleDir = os.path.join(work, f"idle{r}-{startsecs:g}")
                    os.makedirs(idleDir, exist_ok=True)
                    sup.work = idleDir
                    idle = idleSeconds if (last and headline) else 0
                    print(f"{name}: start {N_IDLE}, startsecs={startsecs:g} (round {r + 1}/{args.rounds})"
                          + (f", idle {idleSeconds:g} s" if idle else "") + " ...", flush=True)
                    out = idleWorkload(sup, idle, tag + "2", startsecs)
                    runs.setdefault((name, startsecs), []).append(out.pop("start200_s"))
                    results[name].update(out)
            if args.no_ready:
                continue
            for i, (name, (sup, work)) in enumerate(sups.items()):
                tag = str(360000 + os.getpid() % 1000 * 10 + i)
                idleDir = os.path.join(work, f"ready{r}")
                os.makedirs(idleDir, exist_ok=True)
                sup.work = idleDir
                print(f"{name}: start {N_IDLE} that print 'ready' (round {r + 1}/{args.rounds}) ...",
                      flush=True)
                out = idleWorkload(sup, 0, tag + "3", **readyArgs(sup, idleDir, tag + "3"))
                runs.setdefault((name, "ready"), []).append(out["start200_s"])
        for (name, startsecs), values in runs.items():
            if startsecs == "ready":
                results[name]["start200_ready_s"] = statistics.median(values)
                results[name]["start200_ready_runs"] = values
                continue
            key = startKey(startsecs, rows)
            results[name][key] = statistics.median(values)
            results[name][key[:-2] + "_runs"] = values
            if startsecs:
                # What the supervisor adds to the wait every supervisor shares.
                results[name][key[:-2] + "_net_s"] = statistics.median(values) - startsecs
        if "salvus" in sups:
            work = tempfile.mkdtemp(prefix="salvus-bench-host-")
            print(f"salvus: twistd host of {N_IDLE} instances, RSS ...", flush=True)
            try:
                results["salvus"].update(hostWorkload(work, str(360000 + os.getpid() % 1000 * 10 + 9) + "4"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if "rss_mb" in results.get("supervisord", {}):
                # The anchor of the host row is the same supervisord with the same 200 programs.
                results["supervisord"]["host_rss_mb"] = results["supervisord"]["rss_mb"]
        if "salvus" in sups and "supervisord" in sups and not args.no_logs:
            print(f"salvus, supervisord: log throughput ({N_FLOOD} lines), RSS under long lines ...",
                  flush=True)
            logs = logWorkloads.run(parts=("flood", "long", "floods"), quick=args.quick, nflood=N_FLOOD,
                                    linesLong=N_LONG_LINES, supervisordBin=os.path.join(venv, "bin"),
                                    nfloods=N_FLOODS, rounds=FLOOD_ROUNDS)
            for name, figures in logs.items():
                results[name].update(figures)
    finally:
        for _sup, work in respawners.values():
            shutil.rmtree(work, ignore_errors=True)
    report(results, args.json, idleSeconds, rows)
    return 0


QUICK_IDLE = 10
QUICK_CRASH = 3


def quick(args: argparse.Namespace) -> None:
    """Shrink every workload to seconds and use the supervisors already installed here.

    The workload sizes are this script's constants: a quick run rebinds them (it is one run).
    """
    global N_IDLE, N_CRASH, CYCLES, N_FLOOD, N_LONG_LINES, N_FLOODS, FLOOD_ROUNDS
    N_IDLE, N_CRASH, CYCLES, N_FLOOD, N_LONG_LINES = QUICK_IDLE, QUICK_CRASH, 1, 5000, 20
    N_FLOODS, FLOOD_ROUNDS = 5000, 1
    args.rounds = 1
    args.startsecs = "0"
    args.venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    have = [name for name, binary in (("salvus", None), ("supervisord", "supervisord"), ("circus", "circusd"))
            if binary is None or os.path.exists(os.path.join(args.venv, "bin", binary))]
    wanted = args.only.split(",") if args.only else have
    args.only = ",".join(n for n in wanted if n in have)


def startKey(startsecs: float, rows: list[float]) -> str:
    """C{start200_s} for the headline startsecs, C{start200_startsecs<S>_s} for the others."""
    return "start200_s" if startsecs == rows[0] else f"start200_startsecs{startsecs:g}_s"


def tableRows(rows: list[float]) -> list[tuple[str, str, str]]:
    """(figure key, label, JSON ratio key) for each line of the table."""
    out = [("respawn_median_ms", "crash->respawn median (ms)", "respawn_ratio"),
           ("respawn_p99_ms", "crash->respawn p99 (ms)", "respawn_p99_ratio"),
           ("start200_s", f"start {N_IDLE} -> all RUNNING, startsecs={rows[0]:g} (s)", "start200_ratio")]
    for startsecs in rows[1:]:
        key = startKey(startsecs, rows)
        tail = key[len("start200_"):-len("_s")]
        out.append((key, f"start {N_IDLE}, startsecs={startsecs:g} (s)", f"start200_{tail}_ratio"))
        out.append((key[:-2] + "_net_s", f"  same, less the {startsecs:g} s wait (s)",
                    f"start200_{tail}_net_ratio"))
    out.append(("start200_ready_s", f"start {N_IDLE}, each at its best signal (s)", "start200_ready_ratio"))
    out += [("idle_cpu_pct", f"idle CPU, {N_IDLE} instances (%)", "idle_cpu_ratio"),
            ("rss_mb", f"RSS, {N_IDLE} instances (MB)", "rss_ratio"),
            ("lines_per_cpu_s", f"log lines per CPU-second, {N_FLOOD} lines", "log_lines_ratio"),
            ("flood_cpu_s", "  CPU for those lines (s)", "log_cpu_ratio"),
            *((f"flood_{kind}_us_per_line", f"  CPU us a line, {kind} ({width} B)",
               f"log_{kind}_us_ratio")
              for kind, (width, *_rest) in logWorkloads.FLOOD_KINDS.items()),
            ("rss_long_lines_mb", f"RSS, 4 x {N_LONG_LINES} log lines of 60 KiB (MB)",
             "rss_long_lines_ratio"),
            ("host_rss_mb", f"RSS, twistd host of {N_IDLE} instances (MB)", "host_rss_ratio"),
            ("host_modules", "  modules loaded by that host", "host_modules_ratio")]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(results: dict, jsonPath: str | None, idleSeconds: float, rows: list[float]) -> None:
    s = results.get("salvus", {})
    sd = results.get("supervisord", {})
    c = results.get("circus", {})
    fl = results.get("floor", {})
    out: dict = {"figures": results, "idle_seconds": idleSeconds, "startsecs_rows": rows}
    print()
    print(f"{'metric':44} {'salvus':>10} {'supervisord':>12} {'circus':>10} {'floor':>8} {'vs supd':>8} "
          f"{'vs circus':>10} {'vs floor':>9}")
    for key, label, ratioKey in tableRows(rows):
        if not any(key in f for f in (s, sd, c, fl)):
            continue
        r1 = _ratio(s.get(key), sd.get(key))
        r2 = _ratio(s.get(key), c.get(key))
        r3 = _ratio(s.get(key), fl.get(key))
        out[ratioKey] = r1
        out["circus_" + ratioKey] = r2
        if key in fl:
            out["floor_" + ratioKey] = r3
            out["supervisord_floor_" + ratioKey] = _ratio(sd.get(key), fl.get(key))

        def fmt(v, w):
            return f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-':>{w}}"

        print(f"{label:44} {fmt(s.get(key), 10)} {fmt(sd.get(key), 12)} {fmt(c.get(key), 10)} "
              f"{fmt(fl.get(key), 8)} {fmt(r1, 8)} {fmt(r2, 10)} {fmt(r3, 9)}")
    print("\nfloor: a bare fork+exec loop (bench/supervisor/floor.py), the least a respawn can take")
    print("targets: respawn <= 0.1x supervisord, start-200 <= 0.5x, idle CPU <= 1x, "
          "log CPU per line <= 1x (lines per CPU-second >= 1x)")
    if len(rows) > 1:
        print(f"start-200 target read at startsecs={rows[0]:g}, the workload all three run; at "
              f"startsecs>0 Salvus and supervisord both wait that long before RUNNING, so the ratio "
              f"cannot fall below startsecs over supervisord's figure (the 'less the wait' row shows "
              f"what each adds to it)")
    print("'each at its best signal': a child that prints 'ready'; Salvus is told by that line "
          "(Deploy(ready=...)), supervisord waits its default startsecs=1, circus counts the spawn")
    if jsonPath:
        with open(jsonPath, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
        print(f"wrote {jsonPath}")


if __name__ == "__main__":
    sys.exit(main())

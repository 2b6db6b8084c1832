"""XML-RPC cost: a Salvus admin vs supervisord, same calls, same client, one run, as ratios.

    python bench/admin/rpc_vs_supervisord.py [--calls N] [--instances N] [--json PATH]

Both servers listen on loopback with basic auth.  supervisord supervises N real `sleep`
processes; the Salvus admin serves a FakeSupervisor with N instances (this measures the admin's
HTTP + auth + XML-RPC layer, not process supervision).  Figures: calls/s of
supervisor.getAllProcessInfo and supervisor.getState over one keep-alive connection, wall time of
`supervisorctl status`, and the users file's scrypt cost (first check vs cached).
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)

from bench._common import freePort, stopAll  # noqa: E402

SERVER = r"""
import sys
sys.path.insert(0, {root!r})
from twisted.internet import reactor
from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.testing import FakeSupervisor
sup = FakeSupervisor({{"w": {n}}}, clock=reactor)
state = AdminState(services={{"supervisor": sup}}, clock=reactor, host_name="bench")
svc = AdminService(reactor, [Admin("tcp:{port}:interface=127.0.0.1", users={users!r})], state, {var!r})
svc.startService()
reactor.run()
"""

SUPERVISORD_CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
[inet_http_server]
port=127.0.0.1:{port}
username=bench
password=bench-pw
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:w]
command=sleep 100000
numprocs={n}
process_name=%(process_num)d
startsecs=0
"""


def waitUp(url: str, expect_running: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            infos = xmlrpc.client.ServerProxy(url).supervisor.getAllProcessInfo()
            if sum(1 for i in infos if i["statename"] == "RUNNING") >= expect_running:
                return
        except (OSError, xmlrpc.client.Error):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.1)


def rate(url: str, method: str, calls: int) -> float:
    proxy = xmlrpc.client.ServerProxy(url)
    fn = getattr(proxy.supervisor, method)
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - start)


def ctlStatus(url: str, user: str, password: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [os.path.join(BIN, "supervisorctl"), "-s", _plain(url), "-u", user, "-p", password, "status"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _plain(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('@', 1)[-1].split('/RPC2')[0]}"


def scryptCost() -> tuple[float, float]:
    from salvusctl.admin.users import UsersFile

    tmp = tempfile.mkdtemp()
    try:
        users = UsersFile(os.path.join(tmp, "users"))
        users.add("u", "pw")
        start = time.perf_counter()
        users.check("u", "pw")
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(1000):
            users.check("u", "pw")
        cached = (time.perf_counter() - start) / 1000
        return first, cached
    finally:
        shutil.rmtree(tmp, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--quick", action="store_true",
                        help="20 calls, 2 instances (CI checks it runs; no figures judged)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.instances = min(args.calls, 20), min(args.instances, 2)

    from salvusctl.admin.users import UsersFile

    tmp = tempfile.mkdtemp(prefix="salvus-bench-admin-")
    procs: list[subprocess.Popen] = []
    try:
        users = os.path.join(tmp, "users")
        UsersFile(users).add("bench", "bench-pw")
        salvus_port, sd_port = freePort(), freePort()
        script = SERVER.format(root=ROOT, n=args.instances, port=salvus_port, users=users, var=tmp)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        conf = os.path.join(tmp, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(SUPERVISORD_CONF.format(tmp=tmp, port=sd_port, n=args.instances))
        procs.append(
            subprocess.Popen(
                [os.path.join(BIN, "supervisord"), "-c", conf],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        salvus = f"http://bench:bench-pw@127.0.0.1:{salvus_port}/RPC2"
        supervisord = f"http://bench:bench-pw@127.0.0.1:{sd_port}/RPC2"
        waitUp(salvus, args.instances)
        waitUp(supervisord, args.instances)

        figures: dict[str, dict[str, float]] = {}
        for name, url in (("salvus", salvus), ("supervisord", supervisord)):
            figures[name] = {
                "getAllProcessInfo_per_s": rate(url, "getAllProcessInfo", args.calls),
                "getState_per_s": rate(url, "getState", args.calls),
                "supervisorctl_status_s": ctlStatus(url, "bench", "bench-pw"),
            }
        first, cached = scryptCost()
        figures["auth"] = {"scrypt_first_check_ms": first * 1000, "cached_check_us": cached * 1e6}
    finally:
        stopAll(procs, 10)
        shutil.rmtree(tmp, True)

    s, d = figures["salvus"], figures["supervisord"]
    print(f"{'figure':<28}{'salvus':>12}{'supervisord':>14}{'ratio':>8}")
    for key in ("getAllProcessInfo_per_s", "getState_per_s", "supervisorctl_status_s"):
        print(
            f"{key:<28}{s[key]:>12.1f}{d[key]:>14.1f}{s[key] / d[key]:>8.2f}"
            if key.endswith("per_s")
            else f"{key:<28}{s[key]:>12.3f}{d[key]:>14.3f}{s[key] / d[key]:>8.2f}"
        )
    print(
        f"scrypt first check {figures['auth']['scrypt_first_check_ms']:.1f} ms, "
        f"cached check {figures['auth']['cached_check_us']:.1f} us"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"instances": args.instances, "calls": args.calls, **figures}, f, indent=2)


if __name__ == "__main__":
    main()

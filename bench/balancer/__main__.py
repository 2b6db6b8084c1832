"""
Salvus balancer against HAProxy (mode tcp) and a direct connection, in one run.

    python bench/balancer [--json PATH] [--duration S] [--rounds N]

Starts nginx (one worker, a 1 KiB file and a 100 MB file) as the backend,
HAProxy (mode tcp, nbthread 1, and a second one with nbthread 2) and the
Salvus balancer (a real process: ``python -m salvusctl.balancer.process``,
one process, then 2 workers) on 127.0.0.1, and drives each with wrk,
alternating targets round by round so that the load other processes put on
this 2-core machine falls on all of them alike.  Figures are medians over the
rounds; compare the ratios, not the absolute numbers.  The TLS rows put HAProxy
(``bind ... ssl crt``) and a twistd host whose balancer listens on ``ssl:`` in
front of the same nginx, with the same self-signed certificate, one core each.

Prints one table and, with --json, writes the figures and the ratios
newconn_ratio, keepalive_ratio, bulk_ratio, p99_ratio (Salvus over HAProxy,
one core each), tls_ratios, host_ratios, rss_per_conn_kib and churn_rss_ratio.

The host row: a twistd host as a user runs one (the balancer, the monitor sampling
every second into SQLite, the admin with a page reloaded twice a second by a
poller, all in one reactor) against HAProxy 1 thread again, alternating.

The churn row: a fresh Salvus and a fresh HAProxy, both with 300 s idle
timeouts, take --churn seconds of short connections (wrk, Connection: close);
RSS after over RSS at start, for each.  Closed connections must not stay in
memory until their idle deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench._common import freePort, waitPort  # noqa: E402

__all__ = ["main"]
SMALL = 1024
BULK = 100 * 1024 * 1024


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="salvus-bench-")
        os.chmod(self.tmp, 0o755)  # nginx workers run as an unprivileged user
        self.procs: list[subprocess.Popen] = []
        self.notes: list[str] = []

    # -- processes

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def startNginx(self) -> int:
        www = os.path.join(self.tmp, "www")
        os.makedirs(www)
        with open(os.path.join(www, "small.html"), "wb") as f:
            f.write(b"x" * SMALL)
        with open(os.path.join(www, "bulk.bin"), "wb") as f:
            chunk = os.urandom(1024 * 1024)
            for _ in range(BULK // len(chunk)):
                f.write(chunk)
        port = freePort()
        t = self.tmp
        conf = f"""
worker_processes 1;
daemon off;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log error;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 300;
  client_body_temp_path {t}/cb; proxy_temp_path {t}/pt; fastcgi_temp_path {t}/ft;
  uwsgi_temp_path {t}/ut; scgi_temp_path {t}/st;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {www}; }}
}}
"""
        path = os.path.join(t, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.start(["nginx", "-p", t, "-c", path, "-e", t + "/nginx-error.log"])
        waitPort(port)
        return port

    def startHaproxy(self, backend: int, threads: int) -> int:
        port = freePort()
        conf = f"""
global
  nbthread {threads}
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{backend}
"""
        path = os.path.join(self.tmp, "haproxy%d.cfg" % threads)
        with open(path, "w") as f:
            f.write(conf)
        p = self.start(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL)
        waitPort(port)
        self.haproxyPids = getattr(self, "haproxyPids", {})
        self.haproxyPids[threads] = p.pid
        return port

    def startSalvus(self, backend: int, workers: int, *extra: str) -> tuple[int, subprocess.Popen]:
        argv = [
            sys.executable, "-m", "salvusctl.balancer.process",
            "--listen", "web=127.0.0.1:0", "--backend", "127.0.0.1:%d" % backend,
            "--workers", str(workers), *extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=ROOT)
        p = self.start(argv, stdout=subprocess.PIPE, env=env)
        line = p.stdout.readline()
        if not line:
            raise RuntimeError("the Salvus balancer did not start")
        info = json.loads(line)
        return info["ports"]["web"], p

    def makeCertificate(self) -> tuple[str, str, str]:
        """One self-signed key and certificate for both TLS listeners (and HAProxy's crt file)."""
        from tests.balancer.tlsutil import makeCertificate

        key, cert = makeCertificate(os.path.join(self.tmp, "tls"))
        both = os.path.join(self.tmp, "tls", "haproxy.pem")
        with open(both, "wb") as f:
            f.write(open(cert, "rb").read() + open(key, "rb").read())
        return key, cert, both

    def startHaproxyTLS(self, backend: int, pem: str) -> int:
        """HAProxy 1 thread, mode tcp, terminating TLS (no alpn on the bind, like Salvus)."""
        port = freePort()
        conf = f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend f
  bind 127.0.0.1:{port} ssl crt {pem}
  default_backend b
backend b
  server s1 127.0.0.1:{backend}
"""
        path = os.path.join(self.tmp, "haproxy-tls.cfg")
        with open(path, "w") as f:
            f.write(conf)
        self.start(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL)
        waitPort(port)
        return port

    def startSalvusTLS(self, backend: int, key: str, cert: str) -> int:
        """A host under twistd whose balancer listens on ssl: (the in-host balancer terminates TLS)."""
        port = freePort()
        var = os.path.join(self.tmp, "tls-host")
        os.makedirs(var)
        tac = os.path.join(var, "host.tac")
        with open(tac, "w") as f:
            f.write(f"""
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host
host = Host(name="bench", store="sqlite:{var}/salvus.db", var="{var}")
host.add(Balanced("tls", listen=["ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
                  groups=[Group("g", [Server("127.0.0.1:{backend}")], health=HealthCheck(interval=60))]))
application = host.application()
""")
        env = dict(os.environ, PYTHONPATH=ROOT)
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        log = os.path.join(var, "log")
        self.start(twistd + ["-n", "--pidfile=", "--logfile", log, "salvus", "--config", tac],
                   env=env, cwd=var)
        waitPort(port, 30)
        return port

    def startSalvusHost(self, backend: int) -> tuple[int, int, str]:
        """A twistd host as a user runs one: its balancer in front of nginx, the monitor sampling
        every second into SQLite, and the admin (plain HTTP on loopback, its bootstrap user), all
        in one reactor.  Returns the balancer's port, the admin's port and the admin password."""
        port, admin = freePort(), freePort()
        var = os.path.join(self.tmp, "full-host")
        os.makedirs(var)
        tac = os.path.join(var, "host.tac")
        with open(tac, "w") as f:
            f.write(f"""
from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host
from salvusctl.monitor.declare import Monitor
host = Host(name="bench", store="sqlite:{var}/salvus.db", var="{var}")
host.add(Balanced("web", listen=["tcp:{port}:interface=127.0.0.1"],
                  groups=[Group("g", [Server("127.0.0.1:{backend}")], health=HealthCheck(interval=2))]))
host.add(Monitor(interval=1))
host.add(Admin("tcp:{admin}:interface=127.0.0.1", bootstrap_user="admin", refresh=2))
application = host.application()
""")
        env = dict(os.environ, PYTHONPATH=ROOT)
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        self.start(twistd + ["-n", "--pidfile=", "--logfile", os.path.join(var, "log"), "salvus",
                             "--config", tac], env=env, cwd=var, stdout=subprocess.DEVNULL)  # fmt: skip
        waitPort(port, 30)
        waitPort(admin, 30)
        with open(os.path.join(var, "admin", "admin.password")) as f:
            password = f.read().strip().splitlines()[-1].strip()
        return port, admin, password

    def pollAdmin(self, port: int, password: str, stop: threading.Event, seen: list) -> None:
        """What an open admin page does: reload it every C{refresh} (here twice a second)."""
        import base64
        import urllib.request

        auth = "Basic " + base64.b64encode(("admin:" + password).encode()).decode()
        while not stop.is_set():
            req = urllib.request.Request("http://127.0.0.1:%d/" % port, headers={"Authorization": auth})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                    seen.append(r.status)
            except Exception as e:  # noqa: BLE001 - counted, reported in the notes
                seen.append(getattr(e, "code", type(e).__name__))
            stop.wait(0.5)

    # -- measurements

    def wrk(self, port: int, close: bool, threads: int = 1, conns: int = 50, scheme: str = "http") -> dict:
        argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % self.args.duration, "--latency"]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append("%s://127.0.0.1:%d/small.html" % (scheme, port))
        out = subprocess.run(argv, capture_output=True, text=True, timeout=self.args.duration + 30).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            code = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 "http://127.0.0.1:%d/small.html" % port],
                capture_output=True, text=True, timeout=30,
            ).stdout  # fmt: skip
            log = os.path.join(self.tmp, "nginx-error.log")
            last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
            self.notes.append("port %d: non-2xx; curl got %s; nginx: %s" % (port, code, last))
        return {
            "rps": rps,
            "p50": _latency(out, "50%"),
            "p99": _latency(out, "99%"),
            "errors": (errors.group(1) if errors else "") + (" non2xx=" + non2xx.group(1) if non2xx else ""),
        }

    def bulk(self, port: int) -> float:
        """MB/s of one 100 MB download through C{port}."""
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
             "http://127.0.0.1:%d/bulk.bin" % port],
            capture_output=True, text=True, timeout=120,
        ).stdout.split()  # fmt: skip
        if int(float(out[1])) != BULK:
            raise RuntimeError("bulk transfer through %d got %s bytes" % (port, out[1]))
        return float(out[0]) / 1e6

    def rss(self, pid: int, port: int, wanted: int) -> dict:
        """RSS growth of C{pid} while C{wanted} idle client connections are open through it."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The balancer holds two fds per pair under the same limit as we do.
        n = min(wanted, (soft - 64) // 2)
        base = _rssKib(pid)
        fdBase = len(os.listdir("/proc/%d/fd" % pid))
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                socks.append(s)
                if i % 500 == 499:
                    time.sleep(0.05)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                fds = len(os.listdir("/proc/%d/fd" % pid)) - fdBase
                if fds >= 2 * n:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            after = _rssKib(pid)
        finally:
            for s in socks:
                s.close()
        return {"pairs": n, "fds": fds, "rss_base_kib": base, "rss_kib": after,
                "per_pair_kib": (after - base) / n}  # fmt: skip

    def churn(self, pid: int, port: int) -> dict:
        """RSS of C{pid} at start and after --churn seconds of short connections through C{port}."""
        base = _rssKib(pid)
        argv = ["wrk", "-t1", "-c50", "-d%ds" % self.args.churn, "-H", "Connection: close",
                "http://127.0.0.1:%d/small.html" % port]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=self.args.churn + 60).stdout
        m = re.search(r"(\d+) requests in", out)
        time.sleep(0.5)
        after = _rssKib(pid)
        return {"connections": int(m.group(1)) if m else 0, "rss_start_kib": base, "rss_after_kib": after,
                "ratio": after / base}

    def loadNote(self) -> str:
        one, five, _ = os.getloadavg()
        return "load average %.2f (1 min) %.2f (5 min) on %d cores" % (one, five, os.cpu_count())

    def run(self) -> dict:
        a = self.args
        started = time.monotonic()
        load0 = self.loadNote()
        backend = self.startNginx()
        ha1 = self.startHaproxy(backend, 1)
        s1, salvus1 = self.startSalvus(backend, 0)
        targets = {"direct": backend, "haproxy": ha1, "salvus": s1}
        res: dict = {k: {"ka": [], "close": [], "bulk": []} for k in targets}
        for port in targets.values():  # warm-up: page cache, first allocations
            subprocess.run(["wrk", "-t1", "-c10", "-d1s", "http://127.0.0.1:%d/small.html" % port],
                           capture_output=True, timeout=30)  # fmt: skip
        for _ in range(a.rounds):
            for name, port in targets.items():
                res[name]["ka"].append(self.wrk(port, False))
            for name, port in targets.items():
                res[name]["close"].append(self.wrk(port, True))
            for name, port in targets.items():
                res[name]["bulk"].append(self.bulk(port))
        self.stop(salvus1)
        # RSS in a fresh process: one that served the runs above reuses freed memory.
        s0, salvus0 = self.startSalvus(backend, 0)
        rss = self.rss(salvus0.pid, s0, 10000)
        self.stop(salvus0)
        # Memory after many short connections, each in a fresh process with 300 s idle timeouts.
        ha0 = self.startHaproxy(backend, 1)
        churn = {"haproxy": self.churn(self.haproxyPids[1], ha0)}
        sc, salvusc = self.startSalvus(backend, 0, "--idle-timeout", "300")
        churn["salvus"] = self.churn(salvusc.pid, sc)
        self.stop(salvusc)
        # Two cores: 2 Salvus workers against HAProxy with 2 threads.
        ha2 = self.startHaproxy(backend, 2)
        s2, salvus2 = self.startSalvus(backend, 2)
        two = {"haproxy2": ha2, "salvus2": s2}
        for name in two:
            res[name] = {"ka": [], "close": [], "bulk": []}
        for _ in range(a.rounds):
            for name, port in two.items():
                res[name]["ka"].append(self.wrk(port, False, threads=2, conns=100))
            for name, port in two.items():
                res[name]["close"].append(self.wrk(port, True, threads=2, conns=100))
        self.stop(salvus2)
        # TLS terminated by the balancer, the same certificate for both, one core each.
        key, cert, pem = self.makeCertificate()
        tls = {"haproxy_tls": self.startHaproxyTLS(backend, pem),
               "salvus_tls": self.startSalvusTLS(backend, key, cert)}
        for name in tls:
            res[name] = {"ka": [], "close": [], "bulk": []}
        for _ in range(a.rounds):
            for name, port in tls.items():
                res[name]["ka"].append(self.wrk(port, False, scheme="https"))
            for name, port in tls.items():
                res[name]["close"].append(self.wrk(port, True, scheme="https"))
        # The host as a user runs it: monitor and admin in the balancer's reactor, an admin page
        # open; against HAProxy 1 thread again (still running), alternating.
        hport, aport, password = self.startSalvusHost(backend)
        full = {"haproxy_again": ha1, "salvus_host": hport}
        for name in full:
            res[name] = {"ka": [], "close": [], "bulk": []}
        stop, seen = threading.Event(), []
        poller = threading.Thread(target=self.pollAdmin, args=(aport, password, stop, seen), daemon=True)
        poller.start()
        try:
            for _ in range(a.rounds):
                for name, port in full.items():
                    res[name]["ka"].append(self.wrk(port, False))
                for name, port in full.items():
                    res[name]["close"].append(self.wrk(port, True))
        finally:
            stop.set()
            poller.join(15)
        ok = sum(1 for x in seen if x == 200)
        self.notes.append("host row: %d admin page loads, %d answered 200 (%s)"
                          % (len(seen), ok, sorted({str(x) for x in seen if x != 200}) or "all"))  # fmt: skip
        summary = {name: _summarise(r) for name, r in res.items()}
        h, s, d = summary["haproxy"], summary["salvus"], summary["direct"]
        out = {
            "duration_s": a.duration,
            "rounds": a.rounds,
            "load_before": load0,
            "load_after": self.loadNote(),
            "elapsed_s": round(time.monotonic() - started, 1),
            "targets": summary,
            "rss": rss,
            "churn": churn,
            "churn_rss_ratio": churn["salvus"]["ratio"],
            "notes": self.notes,
            "newconn_ratio": s["close_rps"] / h["close_rps"],
            "keepalive_ratio": s["ka_rps"] / h["ka_rps"],
            "bulk_ratio": s["bulk_mbs"] / h["bulk_mbs"],
            "p99_ratio": s["ka_p99_ms"] / h["ka_p99_ms"],
            "rss_per_conn_kib": rss["per_pair_kib"],
            "direct_ratios": {
                "newconn": s["close_rps"] / d["close_rps"],
                "keepalive": s["ka_rps"] / d["ka_rps"],
                "bulk": s["bulk_mbs"] / d["bulk_mbs"],
                "p99": s["ka_p99_ms"] / d["ka_p99_ms"],
            },
            "tls_ratios": {
                "newconn": summary["salvus_tls"]["close_rps"] / summary["haproxy_tls"]["close_rps"],
                "keepalive": summary["salvus_tls"]["ka_rps"] / summary["haproxy_tls"]["ka_rps"],
            },
            "host_ratios": {
                "newconn": summary["salvus_host"]["close_rps"] / summary["haproxy_again"]["close_rps"],
                "keepalive": summary["salvus_host"]["ka_rps"] / summary["haproxy_again"]["ka_rps"],
                "p99": summary["salvus_host"]["ka_p99_ms"] / summary["haproxy_again"]["ka_p99_ms"],
            },
            "two_core_ratios": {
                "newconn": summary["salvus2"]["close_rps"] / summary["haproxy2"]["close_rps"],
                "keepalive": summary["salvus2"]["ka_rps"] / summary["haproxy2"]["ka_rps"],
            },
        }
        return out


def _latency(out: str, pct: str) -> float:
    m = re.search(r"^\s+%s\s+([\d.]+)(us|ms|s)\s*$" % re.escape(pct), out, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _rssKib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def _summarise(r: dict) -> dict:
    med = statistics.median
    out: dict = {}
    if r["ka"]:
        out["ka_rps"] = med(x["rps"] for x in r["ka"])
        out["ka_p50_ms"] = med(x["p50"] for x in r["ka"])
        out["ka_p99_ms"] = med(x["p99"] for x in r["ka"])
        out["close_rps"] = med(x["rps"] for x in r["close"])
        out["close_p99_ms"] = med(x["p99"] for x in r["close"])
        out["errors"] = sorted({x["errors"] for x in r["ka"] + r["close"] if x["errors"]})
    if r["bulk"]:
        out["bulk_mbs"] = med(r["bulk"])
    return out


def printTable(res: dict) -> None:
    t = res["targets"]
    print("Salvus balancer vs HAProxy 2.6 (mode tcp) vs direct nginx; %ds per wrk run, %d rounds, medians"
          % (res["duration_s"], res["rounds"]))  # fmt: skip
    print(res["load_before"], "->", res["load_after"], "| elapsed %.0f s" % res["elapsed_s"])
    head = "%-22s %12s %12s %10s %10s %12s"
    print(head % ("target", "keep-alive/s", "new conn/s", "p50 ms", "p99 ms", "bulk MB/s"))
    for name, label in [("direct", "nginx direct"), ("haproxy", "HAProxy 1 thread"),
                        ("salvus", "Salvus 1 process"), ("haproxy2", "HAProxy 2 threads"),
                        ("salvus2", "Salvus 2 workers"), ("haproxy_tls", "HAProxy TLS 1 thread"),
                        ("salvus_tls", "Salvus TLS (twistd)"), ("haproxy_again", "HAProxy 1 thread"),
                        ("salvus_host", "Salvus host+mon+admin")]:  # fmt: skip
        x = t[name]
        bulk = "%12.0f" % x["bulk_mbs"] if "bulk_mbs" in x else "%12s" % "-"
        print("%-22s %12.0f %12.0f %10.3f %10.3f %s" % (
            label, x["ka_rps"], x["close_rps"], x["ka_p50_ms"], x["ka_p99_ms"], bulk))  # fmt: skip
        if x.get("errors"):
            print("%-22s socket errors: %s" % ("", "; ".join(x["errors"])))
    d = res["direct_ratios"]
    print()
    print("%-22s %12s %12s %10s %10s %12s" % ("ratio", "keep-alive", "new conn", "", "p99", "bulk"))
    print("%-22s %12.2f %12.2f %10s %10.2f %12.2f" % (
        "Salvus/HAProxy", res["keepalive_ratio"], res["newconn_ratio"], "", res["p99_ratio"],
        res["bulk_ratio"]))  # fmt: skip
    print("%-22s %12.2f %12.2f %10s %10.2f %12.2f" % (
        "Salvus/direct", d["keepalive"], d["newconn"], "", d["p99"], d["bulk"]))  # fmt: skip
    tc = res["two_core_ratios"]
    print("%-22s %12.2f %12.2f" % ("2 workers/2 threads", tc["keepalive"], tc["newconn"]))
    tr = res["tls_ratios"]
    print("%-22s %12.2f %12.2f" % ("Salvus/HAProxy TLS", tr["keepalive"], tr["newconn"]))
    hr = res["host_ratios"]
    print("%-22s %12.2f %12.2f %10s %10.2f" % ("host+mon+admin/HAProxy", hr["keepalive"], hr["newconn"], "",
                                               hr["p99"]))  # fmt: skip
    for note in res.get("notes", []):
        print("note:", note)
    r = res["rss"]
    print()
    print("RSS with %d idle client connections (%d fds): %d KiB -> %d KiB = %.2f KiB per connection pair"
          % (r["pairs"], r["fds"], r["rss_base_kib"], r["rss_kib"], r["per_pair_kib"]))  # fmt: skip
    c = res["churn"]
    print()
    print("%-22s %12s %14s %14s %12s" % ("short connections", "connections", "RSS start KiB",
                                          "RSS after KiB", "after/start"))  # fmt: skip
    for name, label in [("haproxy", "HAProxy 1 thread"), ("salvus", "Salvus 1 process")]:
        x = c[name]
        print("%-22s %12d %14d %14d %12.2f" % (label, x["connections"], x["rss_start_kib"],
                                                x["rss_after_kib"], x["ratio"]))  # fmt: skip
    print("%-22s %12s %14s %14s %12.2f" % ("Salvus/HAProxy", "", "", "",
                                            c["salvus"]["ratio"] / c["haproxy"]["ratio"]))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/balancer", description="Salvus balancer vs HAProxy")
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--churn", type=int, default=60,
                   help="seconds of short connections for the memory row (default 60)")
    p.add_argument("--quick", action="store_true",
                   help="one 1-second round of each (CI checks it runs; no figures judged)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.churn = 1, 1, 1
    if args.duration < 1 or args.rounds < 1 or args.churn < 1:
        p.error("--duration, --rounds and --churn must be >= 1")
    for tool in ("nginx", "haproxy", "wrk", "curl"):
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            p.error("%s is not installed" % tool)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    bench = Bench(args)
    try:
        res = bench.run()
    finally:
        bench.close()
    printTable(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

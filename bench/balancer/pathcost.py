"""
What one new connection costs the balancer, counted rather than timed.

    python bench/balancer/pathcost.py [--connections N] [--concurrency C] [--callgrind] [--top K]

Wall-clock figures on this shared 2-core machine move with the others' load; counts do not.  This
drives a fixed number of short connections (connect, one request, the answer, the backend's close,
the client's close) through a balancer process built as ``python -m salvusctl.balancer.process``
builds it, on the lean epoll reactor, in front of a small backend that answers 1 KiB and closes,
and reports per connection:

* Python function calls in the balancer process (cProfile, enabled only around the measured
  connections, after a warm-up), with the functions that make them up (``--top``);
* with ``--callgrind``, user-space instructions in the balancer process (``valgrind
  --tool=callgrind``, instrumentation switched on only around the measured connections with
  ``callgrind_control``): the interpreter's work, deterministic whatever the load;
* the balancer's system calls per connection (``strace -c -f``), when strace is installed.

The client and the backend run in other processes, so only the balancer's work is counted.  With
C{--concurrency 1} (the default) connections go one at a time and the count is that of the
unbatched path; a higher concurrency lets accept and epoll batch.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

__all__ = ["main"]

REQUEST = b"GET /small.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n" + b"x" * 1024)


# -- the backend (a child process) -----------------------------------------------------------------

def serveBackend(port_out) -> None:
    """Accept, read one request, answer, close; forever (until killed)."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    lsock.setblocking(False)
    port_out.write("%d\n" % lsock.getsockname()[1])
    port_out.flush()
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                while True:
                    try:
                        c, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    bufs[c] = b""
                    sel.register(c, selectors.EVENT_READ, "c")
                continue
            c = key.fileobj
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                bufs[c] += data
                if b"\r\n\r\n" not in bufs[c]:
                    continue
                try:
                    c.sendall(ANSWER)
                except OSError:
                    pass
            sel.unregister(c)
            bufs.pop(c, None)
            c.close()


# -- the balancer (a child process, maybe under valgrind) ------------------------------------------

class _Commands:
    """Lines on stdin: C{profile on}, C{profile off PATH}; each answered C{ok}.  End of input stops."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.profile = cProfile.Profile()
        self.buf = b""

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "commands"

    def connectionLost(self, reason) -> None:
        # end of input arrives as a hang-up: the reactor removed us already
        self.reactor.stop()

    def doRead(self):
        data = os.read(0, 4096)
        if not data:
            self.reactor.removeReader(self)
            self.reactor.stop()
            return None
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.command(line.decode().split())
        return None

    def command(self, words: list[str]) -> None:
        if words[:2] == ["profile", "on"]:
            self.profile.enable()
        elif words[:2] == ["profile", "off"]:
            self.profile.disable()
            self.profile.dump_stats(words[2])
        sys.stdout.write("ok\n")
        sys.stdout.flush()


def serveBalancer(backend: int) -> None:
    """The balancer as the process entry point builds it (one process), plus the command reader."""
    from salvusctl.balancer import process
    from salvusctl.balancer.fastreactor import install

    reactor = install()
    args = process.parseArgs(["--listen", "web=127.0.0.1:0", "--backend", "127.0.0.1:%d" % backend])
    process.runSingle(reactor, args)
    reactor.addReader(_Commands(reactor))
    reactor.run()


# -- the driver ------------------------------------------------------------------------------------

def drive(port: int, count: int, concurrency: int) -> None:
    """C{count} short connections through C{port}, C{concurrency} at a time; each must get the answer."""
    if concurrency <= 1:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(REQUEST)
            got = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got += data
            s.close()
            if got != ANSWER:
                raise RuntimeError("a connection got %d bytes, not the answer" % len(got))
        return
    sel = selectors.DefaultSelector()
    started = done = 0
    got: dict[socket.socket, bytes] = {}

    def start() -> None:
        nonlocal started
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(REQUEST)
        s.setblocking(False)
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
        started += 1

    while started < min(concurrency, count):
        start()
    while done < count:
        for key, _ in sel.select(10):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            if data:
                got[s] += data
                continue
            sel.unregister(s)
            s.close()
            if got.pop(s) != ANSWER:
                raise RuntimeError("a connection did not get the answer")
            done += 1
            if started < count:
                start()


class Balancer:
    """A balancer child: start it, send it commands, stop it."""

    def __init__(self, backend: int, wrapper: list[str]) -> None:
        argv = wrapper + [sys.executable, os.path.abspath(__file__), "--role", "balancer",
                          "--backend", str(backend)]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the balancer did not start")
        info = json.loads(line)
        self.port = info["ports"]["web"]
        self.pid = info["pid"]

    def command(self, text: str) -> None:
        self.p.stdin.write(text.encode() + b"\n")
        self.p.stdin.flush()
        if self.p.stdout.readline().strip() != b"ok":
            raise RuntimeError("the balancer did not answer %r" % (text,))

    def stop(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def _callgrindTotal(path: str) -> int:
    total = 0
    with open(path) as f:
        for line in f:
            m = re.match(r"(summary|totals):\s+(\d+)", line)
            if m:
                total = max(total, int(m.group(2)))
    return total


def run(args: argparse.Namespace) -> dict:
    tmp = tempfile.mkdtemp(prefix="salvus-pathcost-")
    backend = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", "backend"],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    out: dict = {"connections": args.connections, "concurrency": args.concurrency}
    try:
        bport = int(backend.stdout.readline())
        # cProfile: calls per connection, and where they go
        b = Balancer(bport, [])
        try:
            drive(b.port, args.warmup, args.concurrency)
            stats = os.path.join(tmp, "profile")
            b.command("profile on")
            drive(b.port, args.connections, args.concurrency)
            b.command("profile off " + stats)
        finally:
            b.stop()
        ps = pstats.Stats(stats)
        # the command round trips themselves are not the connections' work
        own = {k: v for k, v in ps.stats.items() if "pathcost.py" not in k[0]}
        calls = sum(v[1] for v in own.values())
        out["calls_per_connection"] = calls / args.connections
        top = sorted(own.items(), key=lambda kv: -kv[1][1])[: args.top]
        out["top"] = [{"function": "%s:%d(%s)" % (os.path.relpath(k[0], ROOT) if k[0].startswith(ROOT)
                                                 else k[0].rsplit("site-packages/", 1)[-1], k[1], k[2]),
                       "per_connection": v[1] / args.connections} for k, v in top]  # fmt: skip
        if args.callgrind:
            if shutil.which("valgrind") is None:
                raise RuntimeError("valgrind is not installed")
            cg = os.path.join(tmp, "callgrind.out")
            b = Balancer(bport, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 "--callgrind-out-file=" + cg + ".%p"])  # fmt: skip
            try:
                drive(b.port, min(args.warmup, 50), args.concurrency)
                subprocess.run(["callgrind_control", "-i", "on", str(b.pid)], check=True,
                               capture_output=True, timeout=60)  # fmt: skip
                drive(b.port, args.callgrind, args.concurrency)
                subprocess.run(["callgrind_control", "-i", "off", str(b.pid)], check=True,
                               capture_output=True, timeout=60)  # fmt: skip
            finally:
                b.stop()
            files = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("callgrind.out")]
            total = sum(_callgrindTotal(f) for f in files)
            out["callgrind_connections"] = args.callgrind
            out["instructions_per_connection"] = total / args.callgrind
        if args.strace and shutil.which("strace"):
            trace = os.path.join(tmp, "strace")
            b = Balancer(bport, [])
            try:
                drive(b.port, args.warmup, args.concurrency)
                st = subprocess.Popen(["strace", "-c", "-f", "-o", trace, "-p", str(b.pid)],
                                      stderr=subprocess.DEVNULL)  # fmt: skip
                time.sleep(1.0)  # strace attaches
                drive(b.port, args.strace, args.concurrency)
                time.sleep(0.5)
                st.terminate()
                st.wait(30)
            finally:
                b.stop()
            with open(trace) as f:
                text = f.read()
            calls = {}
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                    calls[parts[-1]] = int(parts[3])
            calls.pop("total", None)
            out["syscalls_per_connection"] = sum(calls.values()) / args.strace
            ranked = sorted(calls.items(), key=lambda kv: -kv[1])
            out["syscalls"] = {k: round(v / args.strace, 2) for k, v in ranked if v / args.strace >= 0.05}
    finally:
        backend.kill()
        backend.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def printReport(res: dict) -> None:
    print("Balancer cost per new connection (%d connections, %d at a time)"
          % (res["connections"], res["concurrency"]))  # fmt: skip
    print("%-40s %12.1f" % ("Python calls (cProfile)", res["calls_per_connection"]))
    if "instructions_per_connection" in res:
        print("%-40s %12.0f" % ("instructions, user space (callgrind, %d)" % res["callgrind_connections"],
                                res["instructions_per_connection"]))  # fmt: skip
    if "syscalls_per_connection" in res:
        print("%-40s %12.1f" % ("system calls (strace)", res["syscalls_per_connection"]))
        print("    " + ", ".join("%s %.2f" % kv for kv in res["syscalls"].items()))
    print()
    print("calls per connection by function:")
    for row in res["top"]:
        print("  %6.2f  %s" % (row["per_connection"], row["function"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/balancer/pathcost.py", description=__doc__.split("\n")[1])
    p.add_argument("--role", choices=["driver", "backend", "balancer"], default="driver",
                   help=argparse.SUPPRESS)
    p.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    p.add_argument("--connections", type=int, default=2000, help="measured connections (default 2000)")
    p.add_argument("--warmup", type=int, default=300, help="connections before measuring (default 300)")
    p.add_argument("--concurrency", type=int, default=1, help="connections at a time (default 1)")
    p.add_argument("--callgrind", type=int, default=0, metavar="N",
                   help="also count instructions over N connections under callgrind (slow: ~50 ms each)")
    p.add_argument("--strace", type=int, default=0, metavar="N",
                   help="also count system calls over N connections")
    p.add_argument("--top", type=int, default=40, help="functions listed (default 40)")
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--quick", action="store_true",
                   help="100 connections, no callgrind or strace (CI checks it runs; no figures judged)")
    args = p.parse_args(argv)
    if args.quick:
        args.connections, args.warmup, args.callgrind, args.strace = 100, 20, 0, 0
    if args.role == "backend":
        serveBackend(sys.stdout)
        return 0
    if args.role == "balancer":
        serveBalancer(args.backend)
        return 0
    if args.connections < 1 or args.concurrency < 1:
        p.error("--connections and --concurrency must be >= 1")
    res = run(args)
    printReport(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

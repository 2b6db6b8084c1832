"""A network namespace behind a real round trip, for faults that only a real network shows.

On loopback a refused connect is known inside C{connect()}; behind even a 2 ms round trip the
refusal arrives later, as an error event on the waiting socket — the path real networks take.
L{DelayedNamespace} makes a namespace joined to this one through a delay line, runs backends
inside it as child processes, and removes it all at cleanup.

The delay is C{tc netem delay}'s, made in user space (L{tests.balancer.delayline}: two TUN
devices, one moved into the namespace, packets copied between them a millisecond late each way),
because the kernels this runs on may lack C{sch_netem} — this machine's does.

Addresses live only on the two TUN ends (chosen from the pid in 10.231.0.0/16); nothing is routed
anywhere else.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol

from tests.helpers import childEnv

__all__ = ["unavailable", "DelayedNamespace"]

_serial = itertools.count()


def unavailable() -> str | None:
    """Why a namespace cannot be made here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root for ip netns and TUN devices (run as root to test behind a real round trip)"
    if shutil.which("ip") is None:
        return "needs the 'ip' command (iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for the delay line"
    return None


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


class _Backend(ProcessProtocol):
    def __init__(self):
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.out = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"\n" in self.out:
            self.ready.callback(self)

    def errReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("backend exited: " + self.out.decode(errors="replace")))
        self.ended.callback(None)

    def kill(self) -> Deferred:
        if self.transport.pid is not None:
            self.transport.signalProcess("KILL")
        return self.ended


class _Line(ProcessProtocol):
    def __init__(self):
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.out = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"\n" in self.out:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("delay line exited: " + self.out.decode(errors="replace")))
        self.ended.callback(None)


class DelayedNamespace:
    """One namespace at C{inside} (this side at C{outside}), C{rtt_ms} of round trip between."""

    def __init__(self, testcase, rtt_ms: float = 2.0):
        n = next(_serial)
        tag = f"{os.getpid() % 100000}{n}"
        self.name = f"sbal{tag}"
        self.tun_out = f"tbo{tag}"[:15]
        self.tun_in = f"tbi{tag}"[:15]
        third = (os.getpid() // 64 + n) % 250 + 1
        fourth = (os.getpid() * 8 + n * 4) % 252
        self.outside = f"10.231.{third}.{fourth + 1}"
        self.inside = f"10.231.{third}.{fourth + 2}"
        self.rtt_ms = rtt_ms
        self.backends: list[_Backend] = []
        self.line: _Line | None = None
        testcase.addCleanup(self.destroy)

    @inlineCallbacks
    def make(self):
        """Create the namespace and the delay line; fires once packets flow."""
        _run("ip", "netns", "add", self.name)
        self.line = _Line()
        argv = [sys.executable, "-m", "tests.balancer.delayline", self.tun_out, self.tun_in,
                str(self.rtt_ms / 2)]
        reactor.spawnProcess(self.line, argv[0], argv, env=childEnv(), path=None)
        yield self.line.ready
        _run("ip", "link", "set", self.tun_in, "netns", self.name)
        _run("ip", "addr", "add", self.outside, "peer", self.inside, "dev", self.tun_out)
        _run("ip", "link", "set", self.tun_out, "up")
        _run("ip", "-n", self.name, "addr", "add", self.inside, "peer", self.outside, "dev", self.tun_in)
        _run("ip", "-n", self.name, "link", "set", self.tun_in, "up")
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def backend(self, port: int, name: str) -> Deferred:
        """Start a backend in the namespace at C{inside:port}; fires once it listens."""
        proto = _Backend()
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-m", "tests.balancer.nsbackend",
                self.inside, str(port), name]
        reactor.spawnProcess(proto, argv[0], argv, env=childEnv(), path=None)
        self.backends.append(proto)
        return proto.ready

    def destroy(self) -> Deferred | None:
        ended = [b.kill() for b in self.backends if not b.ended.called]
        if self.line is not None and not self.line.ended.called:
            self.line.transport.closeStdin()
            ended.append(self.line.ended)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        return gatherResults(ended) if ended else None

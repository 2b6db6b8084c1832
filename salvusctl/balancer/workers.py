"""
N worker processes accepting on the same listening sockets.

Python runs one core per process; a balancer that must use two cores runs two
workers.  The master binds the listening sockets (or takes them from its
predecessor) and serves them to its workers with the hand-over machinery
(C{"share"} requests over a Unix socket, C{SCM_RIGHTS}); every worker adopts
the same kernel sockets and accepts from the one shared queue, so the kernel
hands each new connection to whichever worker calls C{accept} first, and an
idle worker takes more.  The master accepts nothing itself: it supervises
(restarts a worker that dies) and answers hand-over requests for the whole
group.

An upgrade of the group: the new master takes the sockets from the old
master, starts its own workers, and confirms only when all of them accept;
then the old master sends SIGTERM to its workers, which stop accepting and
drain, and exits when they have.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.balancer.handover import (
    HandoverError,
    IHandoverSource,
    ProcessSockets,
    Takeover,
    encodeMessage,
    serveHandover,
    takeOver,
)

__all__ = ["Master", "mergeStates", "runWorker", "workerCommand", "zeroCounters"]

_log = Logger()


def workerCommand(sharePath: str) -> list[str]:
    """The argv of one worker process, fetching its sockets from C{sharePath}."""
    return [sys.executable, "-m", "salvusctl.balancer.process", "--worker-of", sharePath]


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, master: Master, index: int) -> None:
        self.master = master
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()
        self.started = 0.0

    def outReceived(self, data: bytes) -> None:
        pass

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.master.workerEnded(self)


@implementer(IHandoverSource)
class _ShareSource:
    """What the master's share socket hands to each worker."""

    def __init__(self, master: Master) -> None:
        self.master = master

    def handoverListeners(self) -> list:
        return list(self.master.sockets)

    def handoverState(self, kind: str = "share") -> dict:
        # The worker builds the same balancer from the master's own command line, and
        # continues the host states the group inherited; the counters go to one worker
        # only, so that the group's sum stays right.
        master = self.master
        inherit = master.state
        if master.countersGiven:
            inherit = zeroCounters(inherit)
        master.countersGiven = True
        return {"argv": master.args.argv, "inherit": inherit}

    def handedOver(self, kind: str) -> None:
        self.master.workerReady()

    def handoverDone(self, kind: str) -> None:
        pass


def zeroCounters(state: dict) -> dict:
    """The same host states with every traffic counter at zero."""
    from salvusctl.balancer.persist import _COUNTERS

    hosts = [dict(h, **{c: 0 for c in _COUNTERS}) for h in state.get("hosts", [])]
    return dict(state, hosts=hosts)


def mergeStates(states: list[dict]) -> dict:
    """One group state from its workers': host states of the first, counters summed."""
    from salvusctl.balancer.persist import _COUNTERS

    if not states:
        return {}
    merged = {"hosts": [dict(h) for h in states[0].get("hosts", [])], "groups": states[0].get("groups", [])}
    index = {(h["service"], h["grp"], h["host"]): h for h in merged["hosts"]}
    for other in states[1:]:
        for h in other.get("hosts", []):
            mine = index.get((h["service"], h["grp"], h["host"]))
            if mine is not None:
                for c in _COUNTERS:
                    mine[c] = int(mine.get(c) or 0) + int(h.get(c) or 0)
    return merged


class _StateServer(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(encodeMessage({"op": "state", "state": self.factory.proc.handoverState()}))
        self.transport.loseConnection()


class _StateServerFactory(Factory):
    """A worker answers every connection with its state (host rows), then closes."""

    protocol = _StateServer
    noisy = False

    def __init__(self, proc: Any) -> None:
        self.proc = proc


class _StateClient(Protocol):
    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data

    def connectionLost(self, reason: Any = None) -> None:
        d, self.factory.d = self.factory.d, None
        if d is None:
            return
        try:
            (size,) = struct.unpack_from("!I", self.buffer)
            message = json.loads(self.buffer[4 : 4 + size])
            d.callback(message["state"])
        except Exception as e:
            d.errback(HandoverError("bad state from a worker: %s" % (e,)))


class _StateClientFactory(ClientFactory):
    protocol = _StateClient
    noisy = False

    def __init__(self) -> None:
        self.d: defer.Deferred | None = defer.Deferred()

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        d, self.d = self.d, None
        if d is not None:
            d.errback(reason)


def _askState(reactor: Any, path: str, timeout: float = 5.0) -> defer.Deferred:
    factory = _StateClientFactory()
    reactor.connectUNIX(path, factory, timeout=timeout)
    d = factory.d
    d.addTimeout(timeout, reactor)
    return d


class _MasterWatch(Protocol):
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Any = None) -> None:
        if self.reactor.running:
            _log.warn("the master is gone; draining and exiting")
            self.reactor.stop()


def runWorker(reactor: Any, args: argparse.Namespace) -> Any:
    """A worker: fetch the sockets and the command line from the master, serve, report ready."""
    from salvusctl.balancer.process import ProxyProcess, parseArgs

    takeover = takeOver(args.workerOf, "share")
    if takeover is None:
        raise HandoverError("no master answers at %s" % (args.workerOf,))
    wargs = parseArgs(takeover.state["argv"])
    wargs.workers = 0
    wargs.control = None
    wargs.stats = None  # the master answers the stats socket, summing its workers
    proc = ProxyProcess(reactor, wargs)
    proc.sockets = list(takeover.listeners)
    if takeover.state.get("inherit"):
        proc.applyState(takeover.state["inherit"])
    # The master asks each worker for its state when the group is handed over.
    statePath = "%s.%d" % (args.workerOf, os.getpid())
    if os.path.exists(statePath):
        os.unlink(statePath)
    reactor.listenUNIX(statePath, _StateServerFactory(proc), backlog=4)
    # Our stdin is a pipe from the master: end of file means the master is gone (even by
    # SIGKILL), and a worker must not go on holding the sockets alone; drain and exit.
    from twisted.internet import stdio

    stdio.StandardIO(_MasterWatch(reactor), stdin=0, stdout=1, reactor=reactor)
    proc.adopt()
    takeover.confirm()
    reactor.addSystemEventTrigger("before", "shutdown", proc.shutdown)
    return proc


@implementer(IHandoverSource)
class Master(ProcessSockets):
    """Holds the listening sockets and runs C{args.workers} workers on them."""

    def __init__(self, reactor: Any, args: argparse.Namespace, out: Any = None) -> None:
        self.reactor = reactor
        self.args = args
        self.out = out if out is not None else sys.stdout
        self.sockets: list = []
        self.workers: dict[int, _WorkerProtocol] = {}
        self.ready = 0
        self.started = False
        self.stopping = False
        self.takeover: Takeover | None = None
        self.controlPort: Any = None
        self.statsPort: Any = None
        self.sharePort: Any = None
        self.sharePath = ""
        self.state: dict = {}
        self.countersGiven = False
        self.backoff: dict[int, float] = {}

    def start(self) -> None:
        """Acquire the sockets, serve them to workers, start the workers."""
        a = self.args
        if a.control:
            self.takeover = takeOver(a.control, "take")
        from salvusctl.balancer.process import buildDeclarations, listenSpecs, matchListeners

        specs = listenSpecs(buildDeclarations(a))
        inherited = []
        if self.takeover is not None:
            inherited = self.takeover.listeners
            self.state = self.takeover.state
        self.sockets = matchListeners(specs, inherited)
        base = a.control or os.path.join(tempfile.gettempdir(), "salvus-lb")
        self.sharePath = "%s.w%d" % (base, os.getpid())
        self.sharePort = serveHandover(self.reactor, self.sharePath, _ShareSource(self))
        self.reactor.addSystemEventTrigger("before", "shutdown", self.shutdown)
        for i in range(a.workers):
            self.spawn(i)

    def spawn(self, index: int) -> None:
        proto = _WorkerProtocol(self, index)
        argv = workerCommand(self.sharePath)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.reactor.spawnProcess(proto, argv[0], argv, env=env, childFDs={0: "w", 1: "r", 2: 2})
        proto.started = self.reactor.seconds()
        self.workers[index] = proto

    def workerReady(self) -> None:
        """A worker accepts now; once all do, finish our own start-up."""
        self.ready += 1
        if self.started or self.ready < self.args.workers:
            return
        self.started = True
        if self.takeover is not None:
            self.takeover.confirm()
            self.takeover = None
        self.serveControl()
        self.serveStats()
        ports = {name: sock.getsockname()[1] for name, sock in self.sockets}
        pids = sorted(w.transport.pid for w in self.workers.values() if w.transport.pid)
        inherited = sum(int(h.get("total") or 0) for h in self.state.get("hosts", []))
        line = {"ready": True, "pid": os.getpid(), "ports": ports, "workers": pids, "inherited": inherited}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def workerEnded(self, proto: _WorkerProtocol) -> None:
        if self.workers.get(proto.index) is proto:
            del self.workers[proto.index]
        if self.stopping:
            return
        # A worker that dies right after starting would otherwise be restarted in a
        # tight loop: back off (0.1 s doubling to 5 s) while they keep dying young.
        lived = self.reactor.seconds() - proto.started
        delay = 0.0 if lived > 10 else min(5.0, max(0.1, 2 * self.backoff.get(proto.index, 0.05)))
        self.backoff[proto.index] = delay
        _log.warn("worker {i} ended after {lived:.1f} s; starting it again in {d:.1f} s",
                  i=proto.index, lived=lived, d=delay)  # fmt: skip
        self.reactor.callLater(delay, self._respawn, proto.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self.spawn(index)

    def statsAnswer(self, command: str) -> Any:
        if command == "snapshot":
            return {"error": "with --workers each worker has its own snapshot; 'stats' sums them"}
        from salvusctl.balancer.stats import sumStats

        def total(state: dict) -> dict:
            parts = [w.get("stats", {}) for w in state.get("workers", [])]
            out = sumStats(parts)
            out.update(pid=os.getpid(), workers=len(parts))
            return out

        return self._workerStates().addCallback(total)

    def _workerStates(self) -> defer.Deferred:
        asks = []
        for proto in self.workers.values():
            pid = proto.transport.pid
            if pid:
                asks.append(_askState(self.reactor, "%s.%d" % (self.sharePath, pid)))
        d = defer.DeferredList(asks, consumeErrors=True)
        return d.addCallback(lambda results: {"asked": len(asks), "workers": [r for ok, r in results if ok]})

    # IHandoverSource, for a successor master

    def handoverListeners(self) -> list:
        return list(self.sockets)

    def handoverState(self, kind: str = "take") -> defer.Deferred:
        """The group's state: host states from one worker, counters summed over all."""
        d = self._workerStates()

        def merge(asked: dict) -> dict:
            states = asked["workers"]
            if len(states) < asked["asked"]:
                _log.warn("{n} of {m} workers did not give their state", n=asked["asked"] - len(states),
                          m=asked["asked"])  # fmt: skip
            merged = mergeStates(states)
            merged["pid"] = os.getpid()
            return merged

        d.addCallback(merge)
        return d

    def handedOver(self, kind: str) -> None:
        """The successor has our sockets: give up the control and stats paths now.

        Before "released" goes out, as L{ProxyProcess.stopAccepting} does: a closing Unix port
        removes its socket file, and the successor binds the same paths once it reads
        "released".  Closed later (at shutdown), our port removed the successor's file, or the
        successor's unlink of ours failed and its start-up with it.
        """
        if kind != "take":
            return
        for port in (self.controlPort, self.statsPort):
            if port is not None:
                port.stopListening()
        self.controlPort = self.statsPort = None

    def handoverDone(self, kind: str) -> None:
        if kind == "take":
            self.shutdown().addCallback(lambda _: self.reactor.stop())

    def shutdown(self) -> defer.Deferred:
        """Stop the workers (each drains), close our sockets, fire when all ended."""
        if self.stopping:
            return defer.gatherResults([w.ended for w in self.workers.values()])
        self.stopping = True
        for port in (self.controlPort, self.sharePort, self.statsPort):
            if port is not None:
                port.stopListening()
        self.controlPort = self.sharePort = self.statsPort = None
        ended = []
        for proto in list(self.workers.values()):
            ended.append(proto.ended)
            try:
                proto.transport.signalProcess(signal.SIGTERM)
            except Exception:
                pass
        for _name, sock in self.sockets:
            sock.close()
        self.sockets = []
        return defer.gatherResults(ended)

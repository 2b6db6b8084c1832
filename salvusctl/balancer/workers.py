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
import sys
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.balancer.handover import (
    HandoverError,
    HandoverServerFactory,
    IHandoverSource,
    Takeover,
    takeOver,
)

__all__ = ["Master", "runWorker", "workerCommand"]

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

    def handoverState(self) -> dict:
        # The worker builds the same balancer from the master's own command line.
        return {"argv": self.master.args.argv}

    def handedOver(self, kind: str) -> None:
        self.master.workerReady()

    def handoverDone(self, kind: str) -> None:
        pass


def runWorker(reactor: Any, args: argparse.Namespace) -> Any:
    """A worker: fetch the sockets and the command line from the master, serve, report ready."""
    from salvusctl.balancer.process import ProxyProcess, parseArgs

    takeover = takeOver(args.workerOf, "share")
    if takeover is None:
        raise HandoverError("no master answers at %s" % (args.workerOf,))
    wargs = parseArgs(takeover.state["argv"])
    wargs.workers = 0
    wargs.control = None
    proc = ProxyProcess(reactor, wargs)
    proc.sockets = list(takeover.listeners)
    proc.adopt()
    takeover.confirm()
    reactor.addSystemEventTrigger("before", "shutdown", proc.shutdown)
    return proc


@implementer(IHandoverSource)
class Master:
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
        self.sharePort: Any = None
        self.sharePath = ""
        self.state: dict = {}
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
        if os.path.exists(self.sharePath):
            os.unlink(self.sharePath)
        self.sharePort = self.reactor.listenUNIX(self.sharePath, HandoverServerFactory(_ShareSource(self)))
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
        ports = {name: sock.getsockname()[1] for name, sock in self.sockets}
        pids = sorted(w.transport.pid for w in self.workers.values() if w.transport.pid)
        line = {"ready": True, "pid": os.getpid(), "ports": ports, "workers": pids}
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

    def serveControl(self) -> None:
        path = self.args.control
        if not path:
            return
        if os.path.exists(path):
            os.unlink(path)
        self.controlPort = self.reactor.listenUNIX(path, HandoverServerFactory(self), backlog=8)

    # IHandoverSource, for a successor master

    def handoverListeners(self) -> list:
        return list(self.sockets)

    def handoverState(self) -> dict:
        return {"pid": os.getpid(), "workers": self.args.workers}

    def handedOver(self, kind: str) -> None:
        pass

    def handoverDone(self, kind: str) -> None:
        if kind == "take":
            self.shutdown().addCallback(lambda _: self.reactor.stop())

    def shutdown(self) -> defer.Deferred:
        """Stop the workers (each drains), close our sockets, fire when all ended."""
        if self.stopping:
            return defer.gatherResults([w.ended for w in self.workers.values()])
        self.stopping = True
        for port in (self.controlPort, self.sharePort):
            if port is not None:
                port.stopListening()
        self.controlPort = self.sharePort = None
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

"""
A balancer process: listeners, the fast path, hand-over and drain, in one place.

This is the real process that upgrades hand over between and that the
benchmark measures: ``python -m salvusctl.balancer.process --listen
web=127.0.0.1:8080 --backend 127.0.0.1:9000 --control /run/salvus/lb.sock``.
Started while another process answers on C{--control}, it takes that
process's listening sockets (see L{salvusctl.balancer.handover}) instead of
binding, and the old one drains and exits.  With C{--workers N} it is a master
that shares the sockets with N worker processes (L{salvusctl.balancer.workers}).

When ready it prints one JSON line on stdout: C{{"ready": true, "pid": ...,
"ports": {name: port}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from salvusctl.balancer.fastpath import ProxyFactory, RoundRobinPicker, StaticTarget, TimeoutWheel
from salvusctl.balancer.handover import (
    Drainer,
    HandoverError,
    HandoverServerFactory,
    IHandoverSource,
    Takeover,
    bindTCP,
    takeOver,
)

__all__ = ["ProxyProcess", "parseArgs", "parseHostPort", "main"]

_log = Logger()


def parseHostPort(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' or '[::1]:8080' -> (host, port), with a clear error."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % (text,))
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("port must be a number in %r" % (text,))
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("port out of range in %r" % (text,))
    return host, number


def _listenSpec(text: str) -> tuple[str, str, int]:
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME=HOST:PORT, got %r" % (text,))
    host, port = parseHostPort(rest)
    return name, host, port


def parseArgs(argv: Sequence[str]) -> argparse.Namespace:
    """The command line of a balancer process."""
    p = argparse.ArgumentParser(prog="salvus-balancer", description=__doc__.split("\n")[1])
    p.add_argument("--listen", action="append", type=_listenSpec, default=[], metavar="NAME=HOST:PORT")
    p.add_argument("--backend", action="append", type=parseHostPort, default=[], metavar="HOST:PORT")
    p.add_argument("--control", help="Unix socket for hand-over (taken over if a process answers)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: serve here)")
    p.add_argument("--worker-of", dest="workerOf", help=argparse.SUPPRESS)
    p.add_argument("--drain-timeout", dest="drainTimeout", type=float, default=30.0)
    p.add_argument("--hard-stop", dest="hardStop", type=float, default=60.0)
    p.add_argument("--connect-timeout", dest="connectTimeout", type=float, default=5.0)
    p.add_argument("--idle-timeout", dest="idleTimeout", type=float, default=0.0)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--read-size", dest="readSize", type=int, default=256 * 1024)
    p.add_argument("--backlog", type=int, default=4096)
    p.add_argument("--stock-reactor", dest="stockReactor", action="store_true",
                   help="use Twisted's default reactor instead of the lean epoll dispatch")  # fmt: skip
    args = p.parse_args(list(argv))
    if not args.workerOf:
        if not args.listen:
            p.error("at least one --listen NAME=HOST:PORT is required")
        names = [n for n, _, _ in args.listen]
        if len(set(names)) != len(names):
            p.error("duplicate listener name in --listen")
        addrs = [(h, port) for _, h, port in args.listen if port]
        if len(set(addrs)) != len(addrs):
            p.error("duplicate listen address in --listen")
        if not args.backend:
            p.error("at least one --backend HOST:PORT is required")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if args.drainTimeout < 0 or args.hardStop < args.drainTimeout:
        p.error("need 0 <= --drain-timeout <= --hard-stop")
    return args


@implementer(IHandoverSource)
class ProxyProcess:
    """
    One serving balancer process (a single process, or one worker).

    It owns its listening sockets, adopts them into the reactor, serves the
    hand-over socket, and drains on hand-over or SIGTERM.
    """

    def __init__(self, reactor: Any, args: argparse.Namespace, out: Any = None) -> None:
        self.reactor = reactor
        self.args = args
        self.out = out if out is not None else sys.stdout
        self.sockets: list[tuple[str, socket.socket]] = []
        self.ports: list[Any] = []
        self.controlPort: Any = None
        self.targets = [StaticTarget(h, p) for h, p in args.backend]
        self.wheel = TimeoutWheel(reactor)
        self.factory: ProxyFactory | None = None
        self.draining: defer.Deferred | None = None
        self.inherited = 0

    # -- start-up

    def buildFactory(self) -> ProxyFactory:
        a = self.args
        return ProxyFactory(
            self.reactor,
            RoundRobinPicker(self.targets),
            self.wheel,
            connectTimeout=a.connectTimeout,
            idleTimeout=a.idleTimeout,
            retries=a.retries,
            readSize=a.readSize,
        )

    def acquire(self) -> Takeover | None:
        """Take the sockets from a running process, or bind new ones."""
        takeover = None
        if self.args.control:
            takeover = takeOver(self.args.control, "take")
        if takeover is not None:
            self.sockets = list(takeover.listeners)
            self.applyState(takeover.state)
        else:
            self.sockets = [(n, bindTCP(h, p, self.args.backlog)) for n, h, p in self.args.listen]
        return takeover

    def adopt(self) -> None:
        """Accept on every socket (in this process) through the fast path."""
        self.factory = self.buildFactory()
        for _name, sock in self.sockets:
            self.ports.append(self.reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory))

    def serveControl(self) -> None:
        """Answer hand-over requests on the control path."""
        path = self.args.control
        if not path:
            return
        if os.path.exists(path):
            os.unlink(path)
        self.controlPort = self.reactor.listenUNIX(path, HandoverServerFactory(self), backlog=8)

    def announce(self) -> None:
        """Tell whoever started us which ports we serve."""
        ports = {name: sock.getsockname()[1] for name, sock in self.sockets}
        line = {"ready": True, "pid": os.getpid(), "ports": ports, "inherited": self.inherited}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    # -- state carried across a hand-over

    def handoverListeners(self) -> list:
        return list(self.sockets)

    def handoverState(self) -> dict:
        return {
            "pid": os.getpid(),
            "backends": [
                {"address": t.address, "port": t.port, "counters": t.counters()} for t in self.targets
            ],
        }

    def applyState(self, state: dict) -> None:
        """Continue the counters of backends we share with the previous process."""
        byAddr = {(t.address, t.port): t for t in self.targets}
        for entry in state.get("backends", []):
            target = byAddr.get((entry.get("address"), entry.get("port")))
            if target is None:
                continue
            c = entry.get("counters", {})
            self.inherited += int(c.get("total", 0))
            target.total += int(c.get("total", 0))
            target.failures += int(c.get("failures", 0))
            target.bytesIn += int(c.get("bytes_in", 0))
            target.bytesOut += int(c.get("bytes_out", 0))

    def handedOver(self, kind: str) -> None:
        if kind == "take":
            self.stopAccepting()

    def handoverDone(self, kind: str) -> None:
        if kind == "take":
            self.drain().addCallback(lambda _: self.reactor.stop())

    # -- stopping

    def stopAccepting(self) -> None:
        """Stop accepting; the sockets stay open in whoever else holds them."""
        for port in self.ports:
            port.stopListening()
        self.ports = []
        for _name, sock in self.sockets:
            sock.close()
        self.sockets = []
        if self.controlPort is not None:
            self.controlPort.stopListening()
            self.controlPort = None

    def drain(self) -> defer.Deferred:
        """Let open connections finish within the drain and hard-stop timeouts."""
        if self.draining is not None:
            return self.draining
        self.draining = d = defer.Deferred()
        factory = self.factory
        if factory is None:
            d.callback(None)
            return d
        drainer = Drainer(
            self.reactor,
            lambda: factory.open,
            factory.closeAll,
            lambda: d.callback(None),
            self.args.drainTimeout,
            self.args.hardStop,
        )
        drainer.start()
        return d

    def shutdown(self) -> defer.Deferred:
        """SIGTERM: stop accepting, drain, then let the reactor stop."""
        self.stopAccepting()
        return self.drain()


def runSingle(reactor: Any, args: argparse.Namespace) -> ProxyProcess:
    """Serve in this process (no workers)."""
    proc = ProxyProcess(reactor, args)
    takeover = proc.acquire()
    proc.adopt()
    if takeover is not None:
        takeover.confirm()
    proc.serveControl()
    reactor.addSystemEventTrigger("before", "shutdown", proc.shutdown)
    proc.announce()
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, acquire sockets, run the reactor."""
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    if not args.stockReactor:
        from salvusctl.balancer.fastreactor import install

        install()
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [level])], redirectStandardIO=False
    )

    if args.workerOf:
        proc = ProxyProcess(reactor, args)
        takeover = takeOver(args.workerOf, "share")
        if takeover is None:
            print("no master answers at %s" % (args.workerOf,), file=sys.stderr)
            return 2
        proc.sockets = list(takeover.listeners)
        cfg = takeover.state.get("config", {})
        proc.targets = [StaticTarget(h, p) for h, p in cfg.get("backends", [])]
        for key in ("connectTimeout", "idleTimeout", "retries", "readSize", "drainTimeout", "hardStop"):
            if key in cfg:
                setattr(args, key, cfg[key])
        proc.adopt()
        takeover.confirm()
        reactor.addSystemEventTrigger("before", "shutdown", proc.shutdown)
    elif args.workers:
        from salvusctl.balancer.workers import Master

        master = Master(reactor, args)
        try:
            master.start()
        except HandoverError as e:
            print("hand-over failed: %s" % (e,), file=sys.stderr)
            return 2
    else:
        try:
            runSingle(reactor, args)
        except HandoverError as e:
            print("hand-over failed: %s" % (e,), file=sys.stderr)
            return 2
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

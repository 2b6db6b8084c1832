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

from salvusctl._twistedcompat import serverEndpointAddress
from salvusctl.balancer import persist
from salvusctl.balancer.control import BalancerService
from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.balancer.handover import (
    Drainer,
    HandoverError,
    IHandoverSource,
    ProcessSockets,
    Takeover,
    bindTCP,
    takeOver,
)
from salvusctl.balancer.persist import exportState
from salvusctl.errors import ConfigError

__all__ = [
    "ProxyProcess",
    "buildDeclarations",
    "exportState",
    "listenSpecs",
    "loadConfig",
    "matchListeners",
    "parseArgs",
    "parseHostPort",
]

log = Logger()


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
    p.add_argument("--stats", metavar="PATH",
                   help="Unix socket answering 'stats' and 'snapshot' with JSON "
                        "(python -m salvusctl.balancer.stats PATH)")  # fmt: skip
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: serve here)")
    p.add_argument("--config", metavar="FILE.py",
                   help="a Python file that sets 'balanced' to a list of Balanced declarations "
                        "(instead of --listen/--backend)")  # fmt: skip
    p.add_argument("--worker-of", dest="workerOf", help=argparse.SUPPRESS)
    p.add_argument("--drain-timeout", dest="drainTimeout", type=float, default=30.0)
    p.add_argument("--hard-stop", dest="hardStop", type=float, default=60.0)
    p.add_argument("--connect-timeout", dest="connectTimeout", type=float, default=5.0)
    p.add_argument("--idle-timeout", dest="idleTimeout", type=float, default=0.0)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--scheduler", default="roundrobin")
    p.add_argument("--backlog", type=int, default=4096)
    p.add_argument("--stock-reactor", dest="stockReactor", action="store_true",
                   help="use Twisted's default reactor instead of the lean epoll dispatch")  # fmt: skip
    args = p.parse_args(list(argv))
    args.argv = list(argv)
    if args.config and (args.listen or args.backend):
        p.error("--config replaces --listen and --backend; give one or the other")
    if not args.workerOf and not args.config:
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


def loadConfig(path: str) -> list[Balanced]:
    """The C{balanced} list of a config file (plain Python, like a C{.tac}); validated."""
    namespace: dict[str, Any] = {"__file__": path, "__name__": "salvus_balancer_config"}
    try:
        with open(path) as f:
            code = compile(f.read(), path, "exec")
    except OSError as e:
        raise ConfigError("cannot read balancer config %s: %s" % (path, e.strerror))
    exec(code, namespace)
    decls = namespace.get("balanced")
    if not isinstance(decls, list | tuple) or not all(isinstance(d, Balanced) for d in decls) or not decls:
        raise ConfigError("%s must set 'balanced' to a non-empty list of Balanced declarations" % (path,))
    names = [d.name for d in decls]
    if len(set(names)) != len(names):
        raise ConfigError("%s: two balanced services have the same name" % (path,))
    for d in decls:
        d.validate()
    return list(decls)


def listenSpecs(decls: list[Balanced]) -> list[tuple[str, str, str, int, int]]:
    """
    (listener name, service name, host, port, backlog) for every listen endpoint.

    The process binds these sockets itself so that it can hand them over; only
    C{tcp:} and C{tcp6:} endpoints can be.  A listener is named after its service
    (C{web}, then C{web#1}, C{web#2} for further endpoints), which is how a new
    process matches the sockets it inherits to its own services.
    """
    from twisted.internet import endpoints

    from salvusctl.balancer.service import withBacklog

    specs = []
    seen: set[tuple[str, int]] = set()
    for decl in decls:
        for i, description in enumerate(decl.listen):
            # without backlog=, the kernel's somaxconn (as every balancer listener), not Twisted's 50
            ep = endpoints.serverFromString(None, withBacklog(description))
            if not isinstance(ep, endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint):
                raise ConfigError(
                    "service %r: %r cannot be handed over; the balancer process binds tcp: and "
                    "tcp6: endpoints only" % (decl.name, description)
                )
            address = serverEndpointAddress(ep)
            host = address.interface or ("::" if isinstance(ep, endpoints.TCP6ServerEndpoint) else "0.0.0.0")
            if address.port and (host, address.port) in seen:
                raise ConfigError("duplicate listen address %s:%d" % (host, address.port))
            seen.add((host, address.port))
            name = decl.name if i == 0 else "%s#%d" % (decl.name, i)
            specs.append((name, decl.name, host, address.port, address.backlog))
    return specs


def matchListeners(specs: list, inherited: list) -> list[tuple[str, socket.socket]]:
    """
    The sockets to serve: inherited ones by listener name, new ones bound.

    An inherited socket whose name the config no longer has is closed (that
    listener stops with the old process).
    """
    byName = dict(inherited)
    sockets = []
    for name, _svc, host, port, backlog in specs:
        sock = byName.pop(name, None)
        sockets.append((name, sock if sock is not None else bindTCP(host, port, backlog)))
    for name, sock in byName.items():
        log.info("listener {name} is not in the new config; closing it", name=name)
        sock.close()
    return sockets


def buildDeclarations(args: argparse.Namespace) -> list[Balanced]:
    """The declarations of C{--config}, or one service per C{--listen} over the C{--backend} hosts."""
    if args.config:
        return loadConfig(args.config)
    servers = [Server("%s:%d" % (h if ":" not in h else "[%s]" % h, p)) for h, p in args.backend]
    decls = []
    for name, host, port in args.listen:
        decl = Balanced(
            name,
            listen=["tcp:%d:interface=%s:backlog=%d" % (port, host.replace(":", "\\:"), args.backlog)],
            groups=[Group("main", list(servers), scheduler=args.scheduler)],
            connect_timeout=args.connectTimeout,
            client_timeout=args.idleTimeout,
            server_timeout=args.idleTimeout,
            retries=args.retries,
        )
        decl.validate()
        decls.append(decl)
    return decls


@implementer(IHandoverSource)
class ProxyProcess(ProcessSockets):
    """
    One serving balancer process (a single process, or one worker): the
    balancer service of L{salvusctl.balancer.control} on sockets it owns.

    It binds (or takes over) its listening sockets, adopts them into the
    services, serves the hand-over socket, and drains on hand-over or SIGTERM.
    """

    def __init__(self, reactor: Any, args: argparse.Namespace, out: Any = None) -> None:
        self.reactor = reactor
        self.args = args
        self.out = out if out is not None else sys.stdout
        self.sockets: list[tuple[str, socket.socket]] = []
        self.controlPort: Any = None
        self.statsPort: Any = None
        decls = buildDeclarations(args)
        self.specs = listenSpecs(decls)
        self.balancer = BalancerService(reactor, decls)
        for svc in self.balancer.balanced.values():
            svc.autoListen = False
        self.draining: defer.Deferred | None = None
        self.inherited = 0

    # -- start-up

    def acquire(self) -> Takeover | None:
        """Take the sockets from a running process, or bind new ones."""
        takeover = None
        if self.args.control:
            takeover = takeOver(self.args.control, "take")
        if takeover is not None:
            self.applyState(takeover.state)
        self.sockets = matchListeners(self.specs, takeover.listeners if takeover is not None else [])
        return takeover

    def adopt(self) -> None:
        """Start the balancer and accept on every socket (in this process)."""
        self.balancer.startService()
        services = {name: svc for name, svc, _h, _p, _b in self.specs}
        for name, sock in self.sockets:
            svc = self.balancer.balanced.get(services.get(name, name))
            if svc is None:
                raise HandoverError("no balanced service for the listener %r" % (name,))
            svc.adoptSocket(sock.fileno(), sock.family)

    def statsAnswer(self, command: str) -> dict:
        from salvusctl.balancer.stats import statsOf

        if command == "snapshot":
            return self.balancer.snapshot()
        return statsOf(self.balancer)

    def announce(self) -> None:
        """Tell whoever started us which ports we serve."""
        ports = {name: sock.getsockname()[1] for name, sock in self.sockets}
        line = {"ready": True, "pid": os.getpid(), "ports": ports, "inherited": self.inherited}
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    # -- state carried across a hand-over

    def handoverListeners(self) -> list:
        return list(self.sockets)

    def handoverState(self, kind: str = "take") -> dict:
        from salvusctl.balancer.stats import statsOf

        state = exportState(self.balancer.balanced, self.reactor.seconds())
        state["pid"] = os.getpid()
        state["stats"] = statsOf(self.balancer)  # what a master sums for its stats socket
        return state

    def applyState(self, state: dict) -> None:
        """Continue host states, weights and counters of the previous process."""
        hosts = state.get("hosts", [])
        persist.applyState(self.balancer.balanced, hosts, state.get("groups", []))
        self.inherited += sum(int(h.get("total") or 0) for h in hosts)

    def handedOver(self, kind: str) -> None:
        if kind == "take":
            self.stopAccepting()

    def handoverDone(self, kind: str) -> None:
        if kind == "take":
            self.drain().addCallback(lambda _: self.reactor.stop())

    # -- stopping

    def stopAccepting(self) -> None:
        """Stop accepting; the sockets stay open in whoever else holds them."""
        self.balancer.stopListening()
        for _name, sock in self.sockets:
            sock.close()
        self.sockets = []
        for port in (self.controlPort, self.statsPort):
            if port is not None:
                port.stopListening()  # the successor serves these paths once we released
        self.controlPort = self.statsPort = None

    def closeAll(self, abort: bool) -> None:
        """Close every proxied connection: gracefully, or abort (the hard stop)."""
        self.balancer.closeConnections(abort)

    def drain(self) -> defer.Deferred:
        """Let open connections finish within the drain and hard-stop timeouts."""
        if self.draining is not None:
            return self.draining
        self.draining = d = defer.Deferred()
        drainer = Drainer(
            self.reactor,
            self.balancer.openConnections,
            self.closeAll,
            lambda: d.callback(None),
            self.args.drainTimeout,
            self.args.hardStop,
        )
        drainer.start()
        return d

    def shutdown(self) -> defer.Deferred:
        """SIGTERM: stop accepting, drain, then stop the balancer service."""
        self.stopAccepting()
        d = self.drain()
        d.addCallback(lambda _: self.balancer.stopService())
        return d


def runSingle(reactor: Any, args: argparse.Namespace) -> ProxyProcess:
    """Serve in this process (no workers)."""
    proc = ProxyProcess(reactor, args)
    takeover = proc.acquire()
    proc.adopt()
    if takeover is not None:
        takeover.confirm()
    proc.serveControl()
    proc.serveStats()
    reactor.addSystemEventTrigger("before", "shutdown", proc.shutdown)
    proc.announce()
    return proc


if __name__ == "__main__":
    # Run as a program: the entry (which also starts workers) lives in its own module, so this one
    # and salvusctl.balancer.workers, which runs a ProxyProcess per worker, do not import each other.
    from salvusctl.balancer.standalone import main

    sys.exit(main())

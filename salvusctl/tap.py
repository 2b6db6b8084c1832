"""C{twistd salvus}: options and C{makeService}.  The only module that touches the global reactor."""

from __future__ import annotations

import os
import sys

from twisted.logger import Logger
from twisted.python import usage

from salvusctl.errors import ConfigError
from salvusctl.host.building import exitOnFatal

__all__ = ["Options", "makeService", "reloadOnHangup", "exitOnFatal"]

log = Logger(namespace="salvus.host")


class Options(usage.Options):
    """Command-line options of C{twistd salvus}."""

    synopsis = "[options]"
    longdesc = (
        "Run one Salvus host: the services its .tac file declares (balancer, supervisor, "
        "monitor, alerts, admin, backup).  Without --config, runs the built-in demo host."
    )
    optParameters = [
        ["config", "c", None, "The host file (.tac or .py) that declares `host = Host(...)`."],
        ["var", None, "var", "State directory of the default host (SQLite store, logs, certs)."],
        ["store", None, None, "Override the host's store URL (sqlite:PATH or postgresql://…)."],
    ]

    def postOptions(self) -> None:
        if self["config"] is not None and not self["config"]:
            raise usage.UsageError("--config needs a file name")


def loadConfiguredHost(options: Options):
    """The L{Host} the options name: a config file, or the default demo host.

    The host's C{source} reads the same config again with the same options (a reload).
    """
    from salvusctl.host.loading import loadHost

    if options["config"]:
        host = loadHost(options["config"])
        read = host.source
    else:
        from salvusctl.host.demo import defaultHost

        host = defaultHost(var=options["var"])
        var = os.path.abspath(options["var"])
        read = lambda: defaultHost(var=var)  # noqa: E731
    if options["store"]:
        host.store_url = options["store"]
        if host.origin is not None:
            host.origin["store"] = options["store"]
    store = options["store"]

    def source():
        again = read()
        if store:
            again.store_url = store
        return again

    host.source = source
    return host


#: Bits the host always keeps out of its umask: no file it creates is group-writable or
#: readable by other accounts (twistd's log, the store, the deploys' logs, pid files).
UMASK_BITS = 0o027


def tightenUmask(bits: int = UMASK_BITS) -> int:
    """Add C{bits} to the process umask (never loosen it); returns the umask now in force.

    Called from L{makeService}, which twistd runs before it opens C{--logfile}: the log, like
    every file the host writes under C{var/}, is created 0640 at most (0600 where the host sets
    it: credentials, keys).  Supervised processes inherit the umask, as under supervisord.
    """
    umask = os.umask(0) | bits
    os.umask(umask)
    return umask


def makeService(options: Options):
    """Build the host's service tree; a bad config exits with one line, never a traceback.

    The config is read before the reactor is imported: a host none of whose components speaks
    TLS starts without pyOpenSSL (L{salvusctl.host.lean}), which saves a supervise-only host a
    quarter of its memory.
    """
    tightenUmask()
    try:
        host = loadConfiguredHost(options)
    except ConfigError as e:
        sys.stderr.write(f"salvus: error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(1)
    from salvusctl.host.lean import needsTLS, withoutTLS

    lean = not needsTLS(host.declarations()) and withoutTLS()
    from twisted.internet import reactor

    if lean:
        log.info("TLS not loaded: no component of this host speaks it "
                 "(a reload that adds one asks for a restart)")
    try:
        service = host.build(reactor)
        # A host already running on this var dir hands its balancer's sockets over, then stops.
        # Only a host that declares a balancer loads it (a supervise-only host stays small).
        took = False
        if "balancer" in host.context.services:
            from salvusctl.balancer.hosthandover import takeForHost

            took = takeForHost(host, service)
        # Before any service starts: a taken port is one line, and no admin user is made yet.
        from salvusctl.portcheck import checkListenersFree

        if took:
            checkListenersFree(host, skip=("balancer",), wait=15.0)
        else:
            checkListenersFree(host)
    except ConfigError as e:
        sys.stderr.write(f"salvus: error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(1)
    if not options["config"]:
        from salvusctl.demo.banner import DemoBanner

        # Started last: prints the URLs, the password's file and the next command once all listen.
        DemoBanner(host.context).setServiceParent(service)
    reloadOnHangup(reactor, host)
    exitOnFatal(reactor, service)
    from salvusctl.gctune import tuneCollector

    tuneCollector(reactor)  # once everything started: freeze start-up's objects (tail latency)
    return service


def reloadOnHangup(reactor, host) -> None:
    """SIGHUP re-reads the host's config and applies the differences, as supervisord's SIGHUP does.

    twistd rotates its log on SIGUSR1 and leaves SIGHUP alone.  A bad config is logged in one
    line and changes nothing.
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="salvus.reload")

    def reload() -> None:
        d = host.context.reloader.reconcile()

        def done(changes):
            failed = {name: entry["failed"] for name, entry in (changes or {}).items() if entry.get("failed")}
            if failed:
                log.error("SIGHUP: config reloaded but not all of it applied: {failed}", failed=failed)
            log.info("SIGHUP: config reloaded: {changes}", changes=changes or "no differences")

        def failed(failure):
            from salvusctl.supervisor.service import RollFailed

            if failure.check(ConfigError, RollFailed):
                log.error("SIGHUP: config not reloaded: {error}", error=str(failure.value))
            else:
                log.failure("SIGHUP: reload failed", failure)

        d.addCallbacks(done, failed)

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))

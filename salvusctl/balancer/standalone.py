"""C{python -m salvusctl.balancer} (or C{salvusctl.balancer.process}): the standalone balancer.

The entry sits above both ways to serve: one L{salvusctl.balancer.process.ProxyProcess}, or a
L{salvusctl.balancer.workers.Master} whose workers each run one.  Keeping it here lets C{workers}
import C{process} without C{process} importing C{workers} back.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from salvusctl.balancer.handover import HandoverError
from salvusctl.balancer.process import parseArgs, runSingle
from salvusctl.balancer.workers import Master, runWorker
from salvusctl.errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, acquire sockets (one process, or a master and its workers), run the
    reactor."""
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
        try:
            runWorker(reactor, args)
        except (HandoverError, ConfigError, OSError) as e:
            print("worker start failed: %s" % (e,), file=sys.stderr)
            return 2
    elif args.workers:
        master = Master(reactor, args)
        try:
            master.start()
        except (HandoverError, ConfigError, OSError) as e:
            print("cannot start: %s" % (e,), file=sys.stderr)
            return 2
    else:
        try:
            runSingle(reactor, args)
        except (HandoverError, ConfigError, OSError) as e:
            print("cannot start: %s" % (e,), file=sys.stderr)
            return 2
    reactor.run()
    return 0

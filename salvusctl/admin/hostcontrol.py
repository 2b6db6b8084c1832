"""supervisord's C{supervisor.shutdown} and C{supervisor.restart} for a Salvus host.

C{shutdown} stops the host exactly as a SIGTERM to twistd does (C{reactor.stop()}: every service
stops in reverse order, the supervisor stops its programs, the store closes last), once the answer
has reached the caller, as supervisord answers before it goes.  C{restart} is supervisord's
in-process restart: every program stops, the config file is read again and applied, and the
autostart programs start; the host process (and its pid, its listening sockets) stays.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from salvusctl.admin.faults import Faults, rpcFault

__all__ = ["shutdownHost", "restartHost"]

log = Logger()


def _reactor(state: Any) -> Any:
    context = state.context
    reactor = getattr(context, "reactor", None)
    if reactor is None:
        raise rpcFault(Faults.NO_SERVICE, "this admin runs outside a host: there is no host to stop")
    return reactor


def _afterAnswer(request: Any, reactor: Any, action: Any) -> None:
    """Run C{action} once the answer is written (at once when there is no request)."""
    if request is None or not hasattr(request, "notifyFinish"):
        reactor.callLater(0, action)
        return
    request.notifyFinish().addBoth(lambda _: reactor.callLater(0, action))


def shutdownHost(state: Any, request: Any, who: str) -> bool:
    """Stop the host as SIGTERM would, after answering."""
    reactor = _reactor(state)
    log.info("shutdown requested over XML-RPC by {who}: stopping the host", who=who)
    _afterAnswer(request, reactor, reactor.stop)
    return True


def restartHost(state: Any, request: Any, who: str) -> bool:
    """Stop every program, read and apply the config file again, start the autostart programs."""
    reactor = _reactor(state)
    supervisor = state.optional("supervisor")
    reloader = state.reloader()
    log.info("restart requested over XML-RPC by {who}", who=who)

    @defer.inlineCallbacks
    def restart():
        try:
            if supervisor is not None:
                yield supervisor.stopAll()
            if reloader is not None:
                yield reloader.reconcile()
            if supervisor is not None:
                yield supervisor.startAll()
            log.info("restart done")
        except Exception:
            log.failure("restart failed")

    _afterAnswer(request, reactor, restart)
    return True

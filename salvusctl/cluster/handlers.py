"""The message kinds every cluster member handles.

- C{ping} → the receiver sends C{pong} back to the sender (C{reply_to} the ping's uid);
- C{pong} → fires the L{Pings} waiter of the ping it answers, with the round-trip time;
- C{deploy.restart} C{{"deploy": NAME, "batch": 1}}, C{deploy.start} and C{deploy.stop}
  C{{"deploy": NAME}} → that verb of the receiving host's L{ISupervisor}; the result (or the
  reason it failed) is recorded in the message's delivery.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.logger import Logger

from salvusctl.cluster.domain import Message

__all__ = ["Pings", "installBuiltins", "DEPLOY_VERBS"]

log = Logger()

DEPLOY_VERBS = ("deploy.restart", "deploy.start", "deploy.stop")


class NoPong(Exception):
    """A ping got no pong within its timeout."""


class Pings:
    """Pings sent by this host and waiting for their pong."""

    def __init__(self, clock: Any, mailbox: Any):
        self.clock = clock
        self.mailbox = mailbox
        self._waiting: dict[str, tuple[Deferred, float]] = {}

    def ping(self, host: str, timeout: float = 10.0) -> Deferred:
        """Send C{ping} to C{host}; fires with the round-trip seconds, or fails with L{NoPong}."""
        uid = secrets.token_hex(12)
        sent = self.clock.seconds()
        waiter: Deferred = Deferred(lambda _: self._waiting.pop(uid, None))
        self._waiting[uid] = (waiter, sent)
        waiter.addTimeout(timeout, self.clock)

        def late(failure):
            failure.trap(TimeoutError)
            self._waiting.pop(uid, None)
            raise NoPong(f"no pong from {host} within {timeout:g}s (is it up? see `salvusctl cluster hosts`)")

        waiter.addErrback(late)
        d = self.mailbox.send(host, "ping", {"sent": sent}, uid=uid)

        def notSent(failure):
            self._waiting.pop(uid, None)
            if not waiter.called:
                waiter.errback(failure)
            return None

        d.addErrback(notSent)
        return waiter

    def answer(self, message: Message) -> Any:
        """Handle C{pong}: fire the waiting ping with the round trip."""
        entry = self._waiting.pop(message.reply_to or "", None)
        if entry is None:
            return {"late": True}  # its ping timed out already (or another run of this host sent it)
        waiter, sent = entry
        rtt = max(0.0, self.clock.seconds() - sent)
        waiter.callback(rtt)
        return {"rtt": rtt}

    def cancelAll(self) -> None:
        for waiter, _ in list(self._waiting.values()):
            if not waiter.called:
                waiter.cancel()
        self._waiting.clear()


def _deployName(message: Message) -> str:
    body = message.body
    if not isinstance(body, dict) or not isinstance(body.get("deploy"), str) or not body["deploy"]:
        raise ValueError(f"{message.kind} needs a body {{\"deploy\": NAME}}, not {body!r}")
    return body["deploy"]


def installBuiltins(mailbox: Any, pings: Pings, supervisor: Any = None) -> None:
    """Register the built-in kinds on C{mailbox}."""

    def ping(message: Message) -> Any:
        sent = message.body.get("sent") if isinstance(message.body, dict) else None
        d = mailbox.send(message.sender, "pong", {"sent": sent}, reply_to=message.uid)
        return d.addCallback(lambda message_id: {"pong": message_id})

    mailbox.addHandler("ping", ping)
    mailbox.addHandler("pong", pings.answer)

    def deployVerb(verb: str):
        def handle(message: Message) -> Any:
            name = _deployName(message)
            if supervisor is None:
                raise LookupError(f"{mailbox.name} runs no supervisor: cannot {verb} {name!r}")
            log.info("cluster: {sender} asked {verb} of deploy {name}", sender=message.sender,
                     verb=verb, name=name)
            if verb == "restart":
                batch = message.body.get("batch", 1)
                if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
                    raise ValueError(f"deploy.restart: batch must be an integer >= 1 or null, not {batch!r}")
                d = supervisor.restartDeploy(name, batch)
            elif verb == "start":
                d = supervisor.startDeploy(name)
            else:
                d = supervisor.stopDeploy(name)
            return maybeDeferred(lambda: d).addCallback(lambda _: {verb: name})

        return handle

    for kind in DEPLOY_VERBS:
        mailbox.addHandler(kind, deployVerb(kind.split(".", 1)[1]))

"""Active checks: a TCP health check (with optional send/expect) and the agent check, per host.

A host marked down — by a failed check or a failed client connect — is not put back blindly: it
needs C{rise} consecutive good checks.  An up host goes down after C{fall} consecutive bad ones.
Each check is one short TCP connection driven by the injected reactor, so a C{Clock} and a
C{MemoryReactor} can drive it in tests and real sockets exercise it end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger

from salvusctl.balancer.agent import parseAgentReply
from salvusctl.balancer.fdbudget import isLocalError
from salvusctl.balancer.model import BackendHost

__all__ = ["HealthCheck", "AgentCheck", "HostMonitor", "probe"]

log = Logger()


@dataclass
class HealthCheck:
    """How a group checks its hosts.

    @ivar send: bytes written after connecting (e.g. C{b"PING\\r\\n"}).
    @ivar expect: bytes that must appear in the reply for the check to pass.
    @ivar port: check this port instead of the host's service port.
    """

    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    send: bytes | None = None
    expect: bytes | None = None
    port: int | None = None

    def validate(self) -> str | None:
        if self.interval <= 0 or self.timeout <= 0:
            return "health check interval and timeout must be > 0"
        if self.rise < 1 or self.fall < 1:
            return "health check rise and fall must be >= 1"
        return None


@dataclass
class AgentCheck:
    """HAProxy-compatible agent check: where the backend's agent listens and how often to ask."""

    port: int
    interval: float = 5.0
    timeout: float = 1.0
    send: bytes | None = None

    def validate(self) -> str | None:
        if not 0 < int(self.port) < 65536:
            return f"agent port must be 1..65535, not {self.port}"
        if self.interval <= 0 or self.timeout <= 0:
            return "agent check interval and timeout must be > 0"
        return None


class _Probe(Protocol):
    def __init__(self, send: bytes | None, expect: bytes | None, line: bool, done):
        self.send = send
        self.expect = expect
        self.line = line
        self.done = done
        self.buf = b""

    def connectionMade(self):
        if self.send:
            self.transport.write(self.send)
        if not self.expect and not self.line:
            self.done(True, "connected", b"")
            self.transport.loseConnection()

    def dataReceived(self, data):
        self.buf += data
        if self.line and b"\n" in self.buf:
            self.done(True, "reply", self.buf.split(b"\n", 1)[0])
            self.transport.loseConnection()
        elif self.expect and self.expect in self.buf:
            self.done(True, "expected reply", self.buf)
            self.transport.loseConnection()
        elif len(self.buf) > 65536:
            self.done(False, "reply too long", b"")
            self.transport.abortConnection()

    def connectionLost(self, reason):
        if self.line and self.buf:
            self.done(True, "reply", self.buf)
        else:
            self.done(False, "closed before the expected reply", self.buf)


class _ProbeFactory(ClientFactory):
    noisy = False

    def __init__(self, send, expect, line, done):
        self.args = (send, expect, line, done)
        self.done = done

    def buildProtocol(self, addr):
        return _Probe(*self.args)

    def clientConnectionFailed(self, connector, reason):
        if isLocalError(reason):
            # No socket here (EMFILE, ENOBUFS...): that says nothing about the backend.
            self.done(None, f"not checked: no local resource ({reason.getErrorMessage()})", b"")
            return
        self.done(False, f"connect failed: {reason.getErrorMessage()}", b"")


def probe(
    reactor: Any,
    ip: str,
    port: int,
    timeout: float,
    send: bytes | None = None,
    expect: bytes | None = None,
    line: bool = False,
) -> Deferred:
    """One check connection; fires with C{(ok, why, data)} and never errbacks.

    C{ok} is None when the check could not be made for a resource error of this host
    (L{salvusctl.balancer.fdbudget.isLocalError}): neither a good nor a bad check.
    """
    result: Deferred = Deferred()
    state: dict[str, Any] = {}

    def done(ok, why, data):
        if result.called:
            return
        timer = state.get("timer")
        if timer is not None and timer.active():
            timer.cancel()
        result.callback((ok, why, data))

    def expire():
        if result.called:
            return
        connector = state.get("connector")
        done(False, f"timeout after {timeout:g}s", b"")
        if connector is not None:
            connector.disconnect()

    state["timer"] = reactor.callLater(timeout, expire)
    try:
        state["connector"] = reactor.connectTCP(ip, port, _ProbeFactory(send, expect, line, done),
                                                timeout=None)
    except OSError as e:
        if not isLocalError(e):
            raise
        done(None, f"not checked: no local resource ({e.strerror})", b"")
    return result


class HostMonitor:
    """Runs one host's health check and (optionally) agent check on their intervals.

    @param onChange: called as C{onChange(host, what)} after a state change, for logs and store.
    """

    def __init__(
        self,
        reactor: Any,
        host: BackendHost,
        health: HealthCheck,
        agent: AgentCheck | None = None,
        onChange: Any = None,
    ):
        self.reactor = reactor
        self.host = host
        self.health = health
        if agent is None and host.agent_port:
            agent = AgentCheck(port=host.agent_port)
        self.agent = agent
        self.onChange = onChange
        self.ok = 0
        self.fail = 0
        self.skipped = 0  # consecutive checks not made for a local resource error
        self._seen_healthy = host.healthy
        self._health_call = None
        self._agent_call = None
        self._running = False
        self._inflight = False

    def start(self) -> None:
        self._running = True
        self._scheduleHealth(self.health.interval)
        if self.agent is not None:
            self._agent_call = self.reactor.callLater(self.agent.interval, self._runAgent)

    def stop(self) -> None:
        self._running = False
        for call in (self._health_call, self._agent_call):
            if call is not None and call.active():
                call.cancel()
        self._health_call = self._agent_call = None

    def _scheduleHealth(self, delay: float) -> None:
        if not self._running:
            return
        if self._health_call is not None and self._health_call.active():
            self._health_call.cancel()
        self._health_call = self.reactor.callLater(delay, self._runHealth)
        self.host.next_check = self.reactor.seconds() + delay

    def _runHealth(self) -> None:
        self._health_call = None
        d = self.checkOnce()
        d.addCallback(lambda _: self._scheduleHealth(self.health.interval))

    def checkOnce(self, force: bool = False) -> Deferred:
        """Run one health check now; C{force} readmits a down host on a single success.

        Fires with True when the check passed.
        """
        host = self.host
        if host.ip is None:
            self._result(False, "address not resolved", force)
            d: Deferred = Deferred()
            d.callback(False)
            return d
        port = self.health.port or host.check_port or host.port
        d = probe(self.reactor, host.ip, port, self.health.timeout, self.health.send, self.health.expect)
        d.addCallback(lambda r: self._result(r[0], r[1], force))
        return d

    def _result(self, ok: bool | None, why: str, force: bool = False) -> bool:
        host = self.host
        if ok is None:
            # A local resource error: the host's record of good and bad checks stays as it was.
            host.last_check = why
            self.skipped += 1
            if self.skipped == 1:
                log.warn("host {host}: {why}; its state is unchanged", host=host.name, why=why)
            return False
        self.skipped = 0
        if self._seen_healthy and not host.healthy:
            # marked down by traffic since the last check: readmission starts from zero
            self.ok = 0
        host.last_check = "ok" if ok else why
        if ok:
            self.ok += 1
            self.fail = 0
            if not host.healthy and (force or self.ok >= self.health.rise):
                host.markUp()
                log.info("host {host} is up again ({n} good checks)", host=host.name, n=self.ok)
                self._notify("up")
        else:
            self.fail += 1
            self.ok = 0
            if host.healthy and self.fail >= self.health.fall:
                host.markDown(f"health check: {why}")
                log.warn("host {host} is down: {why}", host=host.name, why=why)
                self._notify("down")
            elif not host.healthy:
                host.down_reason = host.down_reason or f"health check: {why}"
        self._seen_healthy = host.healthy
        return ok

    def _runAgent(self) -> None:
        self._agent_call = None
        agent = self.agent
        host = self.host
        if host.ip is None or agent is None:
            self._rescheduleAgent()
            return
        port = host.agent_port or agent.port
        d = probe(self.reactor, host.ip, port, agent.timeout, agent.send, None, line=True)
        d.addCallback(self._agentResult)
        d.addBoth(lambda _: self._rescheduleAgent())

    def _rescheduleAgent(self) -> None:
        if self._running and self.agent is not None:
            self._agent_call = self.reactor.callLater(self.agent.interval, self._runAgent)

    def _agentResult(self, result) -> None:
        ok, why, data = result
        if not ok:
            # HAProxy: an unreachable agent changes nothing
            return
        reply = parseAgentReply(data.decode("latin-1"))
        percent = reply.percent
        if reply.weight is not None:
            percent = int(100 * reply.weight / max(1, self.host.weight))
        before = (self.host.state, self.host.currentWeight())
        self.host.setAgent(reply.state, percent, reply.maxconn)
        if (self.host.state, self.host.currentWeight()) != before:
            text = data.decode("latin-1").strip()
            log.info("agent of {host} says {text!r}", host=self.host.name, text=text)
            self._notify("agent")

    def _notify(self, what: str) -> None:
        if self.onChange is not None:
            self.onChange(self.host, what)

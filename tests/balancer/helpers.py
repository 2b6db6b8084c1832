"""Real-socket helpers for balancer tests: named backends and a collecting client on 127.0.0.1."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from tests.helpers import deadPort

__all__ = ["NamedBackend", "startBackend", "fetch", "request", "HoldingClient", "openHolding",
           "deadPort", "balanced", "tempdir"]


class _NamedProtocol(Protocol):
    def connectionMade(self):
        self.factory.connections.append(self)
        self.factory.accepted += 1

    def dataReceived(self, data):
        self.factory.received += data
        if self.factory.mode == "reply-close":
            self.transport.write(self.factory.name + b":" + data)
            self.transport.loseConnection()
        else:
            self.transport.write(self.factory.name + b":" + data)

    def connectionLost(self, reason):
        if self in self.factory.connections:
            self.factory.connections.remove(self)


class NamedBackend(Factory):
    """Answers each chunk with C{name:chunk}; closes after one reply in C{reply-close} mode."""

    protocol = _NamedProtocol
    noisy = False

    def __init__(self, name: bytes, mode: str = "reply-close"):
        self.name = name
        self.mode = mode
        self.connections: list = []
        self.accepted = 0
        self.received = b""
        self.port = None


def startBackend(testcase, name: bytes, mode: str = "reply-close") -> NamedBackend:
    backend = NamedBackend(name, mode)
    backend.port = reactor.listenTCP(0, backend, interface="127.0.0.1")
    testcase.addCleanup(backend.port.stopListening)

    def dropAll():
        for c in list(backend.connections):
            c.transport.abortConnection()

    testcase.addCleanup(dropAll)
    return backend


def address(backend: NamedBackend) -> str:
    return f"127.0.0.1:{backend.port.getHost().port}"


class _Collect(Protocol):
    def __init__(self, send: bytes, done: Deferred):
        self.send = send
        self.done = done
        self.data = b""

    def connectionMade(self):
        if self.send:
            self.transport.write(self.send)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        from twisted.internet.error import ConnectionDone

        self.done.callback((self.data, reason.check(ConnectionDone) is not None))


class _CollectFactory(ClientFactory):
    noisy = False

    def __init__(self, send, done):
        self.send = send
        self.done = done

    def buildProtocol(self, addr):
        return _Collect(self.send, self.done)

    def clientConnectionFailed(self, connector, reason):
        self.done.errback(reason)


def fetch(port: int, send: bytes = b"hello") -> Deferred:
    """Connect, send, collect until the peer closes; fires with (data, closed_cleanly)."""
    done: Deferred = Deferred()
    reactor.connectTCP("127.0.0.1", port, _CollectFactory(send, done))
    return done


class _Patient(Protocol):
    def __init__(self, done: Deferred):
        self.done = done
        self.data = b""

    def connectionMade(self):
        self.transport.write(b"hello")

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(self.data)


class _PatientFactory(ClientFactory):
    noisy = False

    def __init__(self, done: Deferred):
        self.done = done
        self.proto = None

    def buildProtocol(self, addr):
        self.proto = _Patient(self.done)
        return self.proto

    def clientConnectionFailed(self, connector, reason):
        if not self.done.called:
            self.done.callback(None)


def request(port: int, patience: float) -> Deferred:
    """One client that sends C{hello}: fires with the answer, b"" if closed unanswered, None if
    refused, or "hung" after C{patience} seconds without an end (then it is aborted).

    Unlike L{fetch} it never errs and never waits forever, so a test can count every kind of end
    among many clients at once.
    """
    done: Deferred = Deferred()
    factory = _PatientFactory(done)
    reactor.connectTCP("127.0.0.1", port, factory)

    def hung():
        if not done.called:
            done.callback("hung")
            if factory.proto is not None:
                factory.proto.transport.abortConnection()

    call = reactor.callLater(patience, hung)
    done.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
    return done


class HoldingClient(Protocol):
    """A client that stays connected; C{received} fires on each chunk (re-armed by the test)."""

    def __init__(self):
        self.data = b""
        self.waiting: Deferred | None = None
        self.lost: Deferred = Deferred()
        self.ready: Deferred = Deferred()

    def connectionMade(self):
        self.ready.callback(self)

    def dataReceived(self, data):
        self.data += data
        if self.waiting is not None:
            w, self.waiting = self.waiting, None
            w.callback(self.data)

    def next(self) -> Deferred:
        self.waiting = Deferred()
        return self.waiting

    def connectionLost(self, reason):
        self.lost.callback(self.data)


def openHolding(testcase, port: int) -> Deferred:
    """Connect a L{HoldingClient}; fires with it once connected (closed at cleanup)."""
    client = HoldingClient()

    class F(ClientFactory):
        noisy = False

        def buildProtocol(self, addr):
            return client

    reactor.connectTCP("127.0.0.1", port, F())

    def cleanup():
        if client.transport is not None and client.transport.connected:
            client.transport.abortConnection()
            return client.lost

    testcase.addCleanup(cleanup)
    return client.ready


def balanced(servers, name="svc", scheduler="roundrobin", health=None, **kwargs) -> Balanced:
    """A service on an ephemeral port with one group C{main}."""
    health = health or HealthCheck(interval=60.0, timeout=1.0)
    group_kwargs = {k: kwargs.pop(k) for k in ("scheduler_options", "agent", "slowstart") if k in kwargs}
    return Balanced(
        name,
        listen=["tcp:0:interface=127.0.0.1"],
        groups=[Group("main", [s if isinstance(s, Server) else Server(s) for s in servers], scheduler,
                      health=health, **group_kwargs)],
        **kwargs,
    )


def tempdir(testcase) -> str:
    """A fresh directory outside the source tree, removed at cleanup."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="salvus-balancer-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path

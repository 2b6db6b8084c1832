"""Every use of a private Twisted API, in one place.

Twisted promises nothing about names that start with an underscore: any release may rename or
remove them.  Salvus needs a few — to parse endpoint strings without a reactor, to read what an
endpoint will bind, to write to a socket at once, to adopt a listening socket into a subclassed
port, to spawn children with C{posix_spawn} — so each is wrapped here, named by what Salvus
assumes of it, and C{tests/test_twistedcompat.py} checks each assumption against the installed
Twisted.  When Twisted changes one, that test fails and names it; nothing else in Salvus imports a
private Twisted name or reads a private attribute of a Twisted object.

setup.cfg bounds C{twisted} below its next major release, and CI moves the bound deliberately,
after this module's tests pass on the new release.

Subclasses that override private hooks (the balancer's TLS protocol, the supervisor's process,
the alerts' SMTP sender) take their base class from here; L{PRIVATE_HOOKS} lists the private
names each relies on, and the tests check they are still there.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet import endpoints as _endpoints

__all__ = [
    "parseEndpointWords",
    "checkServerDescription",
    "ServerAddress",
    "serverEndpointAddress",
    "serverEndpointContextFactory",
    "hasQueuedWrites",
    "isWriteDisconnected",
    "canSendNow",
    "closeWithoutShutdown",
    "halfCloseNow",
    "adoptListeningPort",
    "forgetDescriptor",
    "EPOLL_REACTOR_PRIVATES",
    "processReactor",
    "listOpenFDs",
    "spawnFileActions",
    "twistedWaitsFor",
    "PIPE_READ_SIZE",
    "PRIVATE_HOOKS",
]


# -- endpoint strings (twisted.internet.endpoints._parse, _parseServer) -------------------------


def parseEndpointWords(description: str) -> tuple[list[str], dict[str, str]]:
    """C{(["tcp", "8080"], {"interface": "127.0.0.1"})} for C{"tcp:8080:interface=127.0.0.1"}.

    Twisted's own splitter (C{endpoints._parse}): colons separate words, C{name=value} words are
    options, a backslash escapes a colon.  No plugin is looked up, nothing is bound.
    """
    return _endpoints._parse(description)


def checkServerDescription(description: str) -> None:
    """Raise as C{serverFromString} would for a bad server endpoint string, without a reactor.

    C{endpoints._parseServer(description, None)} finds the endpoint plugin and calls its
    parser: an unknown kind raises ValueError, an unknown option TypeError, a bad port
    ValueError.  For C{ssl:} it also reads and loads the key and certificate files.
    """
    _endpoints._parseServer(description, None)


# -- what a server endpoint binds (private attributes of TCP4/TCP6/SSL4ServerEndpoint) ----------


class ServerAddress(NamedTuple):
    """What a TCP (or SSL) server endpoint will bind: C{interface} is C{""} for every one."""

    interface: str
    port: int
    backlog: int


def serverEndpointAddress(endpoint: Any) -> ServerAddress:
    """The constructor's C{interface}, C{port} and C{backlog} of a TCP/TCP6/SSL4 server endpoint,
    which Twisted keeps only as the private C{_interface}, C{_port}, C{_backlog}."""
    return ServerAddress(endpoint._interface, endpoint._port, endpoint._backlog)


def serverEndpointContextFactory(endpoint: Any) -> Any:
    """The TLS context factory an C{SSL4ServerEndpoint} was made with (C{_sslContextFactory})."""
    return endpoint._sslContextFactory


# -- writing and closing a TCP transport now (twisted.internet.tcp.Connection privates) --------


def hasQueuedWrites(transport: Any) -> bool:
    """Has a C{tcp.Connection} bytes not yet handed to the kernel?

    Twisted queues in C{dataBuffer} and in the private C{_tempDataBuffer} (counted by
    C{_tempDataLen}); both empty means a C{socket.send} now keeps the byte order.
    """
    return bool(transport._tempDataLen or transport.dataBuffer)


def isWriteDisconnected(transport: Any) -> bool:
    """Has the write side been shut down (C{_writeDisconnected}, set by C{loseWriteConnection})?"""
    return bool(transport._writeDisconnected)


def canSendNow(transport: Any) -> bool:
    """May bytes go to the socket now, in order: connected, not closing, nothing queued
    (L{hasQueuedWrites}), the write side not shut (L{isWriteDisconnected})?  One call for the
    four checks every forwarded message makes."""
    return bool(
        transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and not transport.dataBuffer
        and not transport._writeDisconnected
    )


def closeWithoutShutdown(transport: Any) -> None:
    """Make the coming C{connectionLost} close the socket without a C{shutdown()} first
    (C{tcp.Connection._shouldShutdown}): C{close()} alone sends the FIN."""
    transport._shouldShutdown = False


def halfCloseNow(transport: Any) -> None:
    """Shut the write side down now, as C{loseWriteConnection} does after its next writable event:
    mark it (C{_writeDisconnecting}, C{_writeDisconnected}), stop writing, and call
    C{_closeWriteConnection}, which shuts the socket's write side and tells the protocol
    C{writeConnectionLost}."""
    transport._writeDisconnecting = True
    transport._writeDisconnected = True
    transport.stopWriting()
    transport._closeWriteConnection()


# -- adopting a listening socket into a subclassed port (tcp.Port._fromListeningDescriptor) ----


def adoptListeningPort(portClass: type, reactor: Any, fd: int, family: int, factory: Any) -> Any:
    """A C{portClass} (a C{tcp.Port} subclass) around an already listening socket, not started.

    C{reactor.adoptStreamPort} does the same but always makes a plain C{tcp.Port}; its private
    constructor C{Port._fromListeningDescriptor} takes the class.  The descriptor is duplicated:
    the caller still owns C{fd}.
    """
    return portClass._fromListeningDescriptor(reactor, fd, family, factory)


# -- the epoll reactor's tables (twisted.internet.epollreactor.EPollReactor privates) ----------

#: The private attributes of an C{EPollReactor} instance that the balancer's lean reactor
#: (L{salvusctl.balancer.fastreactor}, a subclass: its dispatch and main loop) and
#: L{forgetDescriptor} read; the tests check each on a new reactor.
EPOLL_REACTOR_PRIVATES = ("_poller", "_selectables", "_reads", "_writes", "_started",
                          "_newTimedCalls", "_pendingTimedCalls", "_doReadOrWrite",
                          "_disconnectSelectable")


def forgetDescriptor(reactor: Any, fd: int) -> None:
    """Take C{fd} out of an C{EPollReactor} for reading and writing at once: one C{epoll_ctl},
    where C{removeReader} then C{removeWriter} look it up twice (C{_selectables}, C{_reads},
    C{_writes}, C{_poller})."""
    if reactor._selectables.pop(fd, None) is not None:
        reactor._poller.unregister(fd)
        reactor._reads.discard(fd)
        reactor._writes.discard(fd)


# -- child processes (twisted.internet.process privates) ---------------------------------------

# C{ProcessBase} (C{twisted.internet.process.Process}, imported lazily) is the base of the
# supervisor's process class; it overrides the private hooks listed in L{PRIVATE_HOOKS}
# (C{_fork}, C{_execChild}, C{_trySpawnInsteadOfFork}).


def processReactor(process: Any) -> Any:
    """The reactor a C{Process} was made with (C{_reactor}: Twisted keeps no public name)."""
    return process._reactor


def listOpenFDs() -> list[int]:
    """This process's open descriptors, as Twisted lists them before a spawn (C{_listOpenFDs})."""
    from twisted.internet import process

    return list(process._listOpenFDs())


def spawnFileActions(fdState: list[tuple[int, bool]], fdmap: dict[int, int]) -> list[tuple]:
    """The C{posix_spawn} file actions that give a child C{fdmap} (child fd -> parent fd) and close
    the rest of C{fdState} (C{(fd, close-on-exec)} pairs), as Twisted's own spawn computes them
    (C{_getFileActions} with C{_PS_CLOSE} and C{_PS_DUP2})."""
    from twisted.internet import process

    return process._getFileActions(fdState, fdmap, doClose=process._PS_CLOSE, doDup2=process._PS_DUP2)


def twistedWaitsFor(pid: int) -> bool:
    """Is C{pid} a child Twisted itself reaps (C{process.reapProcessHandlers}, not in C{__all__})?"""
    from twisted.internet import process

    return pid in process.reapProcessHandlers


# -- reading a child's pipes in large chunks (process.ProcessReader, Process.processReaderFactory)

#: What one read of a child's stdout/stderr pipe takes at most, as supervisord reads (128 KiB).
#: Twisted's C{ProcessReader.doRead} reads 8 KiB (C{fdesc.readFromFD}): a flooding child's
#: output then costs one reactor wakeup, one line split and one log write per 8 KiB.
PIPE_READ_SIZE = 128 * 1024

_readerClass: list[type] = []


def largeReadProcessReader() -> type:
    """A C{ProcessReader} subclass reading up to L{PIPE_READ_SIZE} per readable event, for a
    C{Process} subclass's C{processReaderFactory} (the class attribute C{Process.__init__} calls
    as C{factory(reactor, process, childFD, parentFD)} for each C{"r"} child descriptor).

    Its C{doRead} is C{fdesc.readFromFD} with the larger size: the same returns (None on
    EAGAIN/EINTR, C{CONNECTION_LOST} on another error, C{CONNECTION_DONE} at end of file) and
    the data handed to C{dataReceived}.  Only the processes of classes that set it read so;
    Twisted's own readers are untouched."""
    if not _readerClass:
        import errno
        import os

        from twisted.internet import main, process

        class LargeReadProcessReader(process.ProcessReader):
            readSize = PIPE_READ_SIZE

            def doRead(self):
                try:
                    data = os.read(self.fd, self.readSize)
                except OSError as e:
                    if e.args[0] in (errno.EAGAIN, errno.EINTR):
                        return None
                    return main.CONNECTION_LOST
                if not data:
                    return main.CONNECTION_DONE
                self.dataReceived(data)
                return None

        _readerClass.append(LargeReadProcessReader)
    return _readerClass[0]


# -- private hooks overridden by subclasses -----------------------------------------------------

#: Base class (dotted name) -> the private methods and attributes Salvus's subclasses of it call
#: or override.  The bases are imported from here (TLS and SMTP lazily: they pull in OpenSSL and
#: the mail package, which most importers of this module do not need; the endpoint parser is the
#: only Twisted module imported with this one).
PRIVATE_HOOKS: dict[str, tuple[str, ...]] = {
    # salvusctl.supervisor.oscalls.InstanceProcess
    "twisted.internet.process.Process": ("_fork", "_execChild", "_trySpawnInsteadOfFork", "_reactor"),
    # salvusctl._twistedcompat.largeReadProcessReader (public names, but an assumption all the same)
    "twisted.internet.process.ProcessReader": ("doRead", "dataReceived"),
    # salvusctl.balancer.tlslisten.TLSServerProtocol
    "twisted.protocols.tls.TLSMemoryBIOProtocol": (
        "_shutdownTLS", "_flushSendBIO", "_tlsShutdownFinished", "_aborted", "_handshakeDone",
        "_lostTLSConnection", "_producer", "_tlsConnection"),
    # salvusctl.alerts.actions.EmailAction.SenderFactory
    "twisted.mail.smtp.ESMTPSenderFactory": ("_processConnectionError",),
}

_LAZY: dict[str, Any] = {
    "ProcessBase": ("twisted.internet.process", "Process"),
    "TLSMemoryBIOProtocol": "twisted.protocols.tls",
    "TLSMemoryBIOFactory": "twisted.protocols.tls",
    "ESMTPSenderFactory": "twisted.mail.smtp",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        where = _LAZY[name]
        module, attr = where if isinstance(where, tuple) else (where, name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

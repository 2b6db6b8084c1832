"""The receiving end of the systemd notification protocol (C{sd_notify}), for C{Ready('notify')}.

A daemon that supports systemd's C{Type=notify} sends datagrams such as C{READY=1} or
C{STATUS=accepting connections} to the Unix socket named by C{$NOTIFY_SOCKET}.  Salvus listens on
one such socket per supervisor and tells instances apart by the sender's pid, which the kernel
attaches to each datagram (C{SO_PASSCRED}): nothing the sender writes can claim to be another
instance.

One datagram socket read from the reactor (L{IReadDescriptor}); the reactor is injected.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

__all__ = ["NotifySocket", "INotifyChannel", "parseNotification", "abstractName"]

log = Logger()

# A notification is a few short lines; systemd itself accepts at most this much.
MAX_DATAGRAM = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size)
_CREDENTIALS = (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)


def parseNotification(data: bytes) -> dict[str, str]:
    """C{b"READY=1\\nSTATUS=up"} -> C{{"READY": "1", "STATUS": "up"}}; malformed lines are skipped."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key and key.isupper():
            fields[key] = value
    return fields


class INotifyChannel(Interface):
    """An open C{NOTIFY_SOCKET} (see C{IProcessOS.openNotify}): L{NotifySocket}, or a fake."""

    address = Attribute("The value of an instance's C{NOTIFY_SOCKET}.")

    def close():
        """Stop receiving notifications."""



def abstractName(token: str) -> str:
    """The abstract socket name for a supervisor's token (its run directory's hash).

    Abstract, not a file: a file would need a path short enough for C{sun_path} (107 bytes) and
    write permission for every deploy's user (PostgreSQL runs as C{postgres}).  Anyone may send to
    an abstract socket, but a notification counts only from an instance's own process, which the
    kernel vouches for (C{SCM_CREDENTIALS}).  Written C{@name} in C{$NOTIFY_SOCKET}, as systemd
    itself does and libsystemd's C{sd_notify} understands.
    """
    return f"salvus-notify-{token}"


@implementer(IReadDescriptor, INotifyChannel)
class NotifySocket:
    """A bound C{AF_UNIX}/C{SOCK_DGRAM} socket that hands each notification to C{deliver(pid, fields)}.

    @ivar address: the value to put in an instance's C{NOTIFY_SOCKET}.
    """

    def __init__(self, reactor, name: str, deliver: Callable[[int, dict[str, str]], None]):
        self.reactor = reactor
        self.deliver = deliver
        self.address = "@" + name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind("\0" + name)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "NotifySocket"

    def doRead(self) -> None:
        # Drain what is queued (a burst of 200 READY=1), but give the reactor back after a while.
        for _ in range(256):
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                log.error("notify socket: {e}", e=e)
                return
            pid = 0
            for level, kind, payload in ancillary:
                if (level, kind) == _CREDENTIALS and len(payload) >= _UCRED.size:
                    pid = _UCRED.unpack_from(payload)[0]
            if not pid:
                continue
            try:
                self.deliver(pid, parseNotification(data))
            except Exception:
                log.failure("notification from pid {pid} failed", pid=pid)

    def connectionLost(self, reason) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the socket (the name is free again at once)."""
        if self.sock.fileno() < 0:
            return
        self.reactor.removeReader(self)
        self.sock.close()

"""The admin's unix socket knows its peers by C{SO_PEERCRED}: root and the host's own uid are
operators with no password (so a child's C{supervisor.childutils.getRPCInterface(os.environ)}
works, as under supervisord); any other uid must log in like everybody else."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from tests.admin.helpers import OP, tempDir, writeUsers

# A child that (optionally) becomes another uid first, then calls supervisor.getState over the
# socket with a raw HTTP request and prints the status line.
CLIENT = r"""
import os, socket, sys
path, uid, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
body = (b"<?xml version='1.0'?><methodCall><methodName>supervisor.getState</methodName>"
        b"<params></params></methodCall>")
head = b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nConnection: close\r\n"
if auth:
    head += b"Authorization: Basic " + auth.encode() + b"\r\n"
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n", 1)[0].decode())
print("RUNNING" in data.decode())
"""


class PeerCredentialTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.sockdir = os.path.join("/tmp", f"salvus-peer-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.sockdir, exist_ok=True)
        os.chmod(self.sockdir, 0o755)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        self.sock = os.path.join(self.sockdir, "admin.sock")
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        state = AdminState(services={}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{self.sock}", users=users)
        declaration.validate(None)
        self.admin = AdminService(reactor, [declaration], state, self.tmp)
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        yield self.admin.ready

    def call(self, uid: int = -1, auth: tuple[str, str] | None = None):
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else ""
        d = getProcessOutputAndValue(sys.executable, ["-c", CLIENT, self.sock, str(uid), token],
                                     env=dict(os.environ))
        d.addCallback(lambda r: (r[0].decode().split("\n")[:2], r[1].decode(), r[2]))
        return d

    @defer.inlineCallbacks
    def test_own_uid_needs_no_password(self):
        """The host's own uid (and root) is an operator on the socket without a password."""
        (status, running), err, code = yield self.call()
        self.assertEqual((status, running, code), ("HTTP/1.1 200 OK", "True", 0), err)

    @defer.inlineCallbacks
    def test_other_uid_is_refused_without_password(self):
        """Another local account (C{nobody}) that can reach the socket still has to log in."""
        if os.getuid() != 0:
            raise SkipTest("needs root to run a client as another uid")
        nobody = pwd.getpwnam("nobody").pw_uid
        os.chmod(self.sock, 0o666)  # let it connect: the file mode is not what refuses it
        (status, running), err, code = yield self.call(nobody)
        self.assertEqual((status, running), ("HTTP/1.1 401 Unauthorized", "False"), err)
        (status, running), err, code = yield self.call(nobody, OP)
        self.assertEqual((status, running), ("HTTP/1.1 200 OK", "True"), err)

    @defer.inlineCallbacks
    def test_empty_credentials_count_as_none(self):
        """C{supervisor.childutils.getRPCInterface} sends an empty user and password: the peer's
        uid decides, as with no header (not a failed login that the rate limiter counts)."""
        for _ in range(8):
            (status, running), err, code = yield self.call(auth=("", ""))
            self.assertEqual((status, running), ("HTTP/1.1 200 OK", "True"), err)
        if os.getuid() == 0:
            os.chmod(self.sock, 0o666)
            (status, _), err, code = yield self.call(pwd.getpwnam("nobody").pw_uid, ("", ""))
            self.assertEqual(status, "HTTP/1.1 401 Unauthorized", err)

"""A first start on a taken port: one line, no admin user made, and the retry prints the password.

Real C{twistd -n salvus} children of the demo host in a temporary directory, real sockets.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.errors import ConfigError
from salvusctl.host.demo import defaultHost
from salvusctl.portcheck import checkListenersFree
from tests.helpers import childEnv, freePort


def _taken() -> tuple[socket.socket, int]:
    """A port some other program listens on for the rest of the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


class PortCheckTests(TestCase):
    def test_takenPortIsNamed(self):
        """The check names the first listener whose port is taken, in the words of the issue."""
        sock, port = _taken()
        self.addCleanup(sock.close)
        host = defaultHost(var=self.mktemp(), web_port=port, admin_port=freePort(),
                           admin_http_port=freePort())
        with self.assertRaises(ConfigError) as e:
            checkListenersFree(host)
        self.assertEqual(str(e.exception), f"tcp:{port}: address already in use")

    def test_freePortsPass(self):
        host = defaultHost(var=self.mktemp(), web_port=freePort(), admin_port=freePort(),
                           admin_http_port=freePort())
        checkListenersFree(host)


class FirstStartTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_takenPortThenRetry(self):
        """A port clash at first start is one line and creates no admin user; the retry, once
        the port is free, is a real first start that prints the password."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        var = os.path.join(tmp, "var")
        sock, web = _taken()
        self.addCleanup(sock.close)
        env = childEnv(SALVUS_WEB_PORT=str(web), SALVUS_ADMIN_PORT=str(freePort()),
                       SALVUS_ADMIN_HTTP_PORT=str(freePort()))
        argv = ["-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "salvus", "--var", var]
        out, err, code = yield getProcessOutputAndValue(sys.executable, argv, env=env, path=tmp)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(err.decode().strip().splitlines(),
                         [f"salvus: error: tcp:{web}: address already in use"])
        self.assertNotIn(b"password", out)
        self.assertFalse(os.path.exists(os.path.join(var, "admin-users")))

        sock.close()  # the retry: the same command, now the port is free
        proc_out = []

        class Watch(ProcessProtocol):
            def __init__(self):
                self.seen = Deferred()
                self.ended = Deferred()
                self.buffer = b""

            def outReceived(self, data):
                self.buffer += data
                proc_out.append(data)
                if b"password" in self.buffer and not self.seen.called:
                    self.seen.callback(self.buffer)

            errReceived = outReceived

            def processEnded(self, reason):
                self.ended.callback(None)
                if not self.seen.called:
                    self.seen.callback(self.buffer)

        watch = Watch()
        process = reactor.spawnProcess(watch, sys.executable, [sys.executable] + argv, env=env, path=tmp)

        def stop():
            if not watch.ended.called:
                process.signalProcess("TERM")
                return watch.ended

        self.addCleanup(stop)
        seen = yield watch.seen
        self.assertIn(b"password", seen, b"".join(proc_out))
        self.assertTrue(os.path.exists(os.path.join(var, "admin-users")))

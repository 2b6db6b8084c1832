"""The demo host as a reader starts it: a real C{twistd -n salvus} (what C{make run} runs) in a
fresh directory, on free ports, waited for until it prints its banner."""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

from tests.helpers import childEnv, freePort

__all__ = ["TWISTD_INT", "Collect", "DemoHost"]

# A test run as a background job inherits SIGINT ignored, and twistd would then ignore Ctrl-C:
# give the child Python's own SIGINT handler first, as an interactive shell would.
TWISTD_INT = [sys.executable, "-c",
              "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from twisted.scripts.twistd import run; run()"]

#: The banner's last line: once printed, the listeners are up and the password file is written.
BANNER_END = b"salvus demo: next, try:"


class Collect(ProcessProtocol):
    """A child's stdout and stderr together in C{output}; C{ended} fires with (exit code, signal)."""

    def __init__(self):
        self.output = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback((getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None)))


class DemoHost:
    """The demo host of one test: C{tmp} its directory, C{web}, C{admin}, C{http} its ports
    (balancer, HTTPS admin, loopback HTTP for C{supervisorctl}), C{proto} its output.

    L{start} spawns it and fires once it printed its banner; at cleanup it gets Ctrl-C (SIGINT),
    as from a terminal, and the test waits until it has ended.
    """

    def __init__(self, testcase):
        self.testcase = testcase
        self.tmp = os.path.abspath(testcase.mktemp())
        os.makedirs(self.tmp)
        self.web, self.admin, self.http = freePort(), freePort(), freePort()
        self.proto = Collect()

    @inlineCallbacks
    def start(self, patience: float) -> Deferred:
        """Spawn it; fire once the banner is out, fail the test after C{patience} seconds."""
        env = childEnv(SALVUS_WEB_PORT=str(self.web), SALVUS_ADMIN_PORT=str(self.admin),
                       SALVUS_ADMIN_HTTP_PORT=str(self.http))
        argv = TWISTD_INT + ["-n", "--pidfile=", "salvus"]
        process = reactor.spawnProcess(self.proto, sys.executable, argv, env=env, path=self.tmp)

        def stop():
            if not self.proto.ended.called:
                process.signalProcess("INT")
                return self.proto.ended

        self.testcase.addCleanup(stop)
        deadline = reactor.seconds() + patience
        while BANNER_END not in self.proto.output and not self.proto.ended.called:
            self.testcase.assertLess(reactor.seconds(), deadline,
                                     self.proto.output.decode(errors="replace")[-3000:])
            yield deferLater(reactor, 0.1, lambda: None)

    def password(self) -> str:
        """The admin password the first start wrote."""
        with open(os.path.join(self.tmp, "var", "admin", "admin.password")) as f:
            return f.read().strip()

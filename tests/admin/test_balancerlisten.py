"""salvus.balancerAddService: an explicit interface for every network listener, nothing
registered when the call fails."""

from __future__ import annotations

import os

from twisted.internet.defer import FirstError
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.balancerlisten import checkListen
from salvusctl.admin.faults import Faults
from salvusctl.balancer.control import BalancerService
from tests.admin.helpers import Harness, HarnessTestCase, tempDir


class CheckListenTests(SynchronousTestCase):
    def test_networkEndpointsNeedAnInterface(self):
        """tcp:PORT alone listens on every interface: it could relay loopback-only services out."""
        for description in ("tcp:8081", "tcp6:8081", "tcp:8081:interface=", "ssl:8443:privateKey=k.pem"):
            with self.assertRaises(ValueError) as caught:
                checkListen([description])
            self.assertIn("interface", str(caught.exception), description)

    def test_explicitInterfacesAndUnixSocketsPass(self):
        """Loopback, a named address, and 0.0.0.0 written out are the operator's explicit choice."""
        listen = ["tcp:0:interface=127.0.0.1", "tcp:0:interface=0.0.0.0", r"tcp6:0:interface=\:\:1",
                  "unix:/tmp/salvus-x.sock"]
        self.assertEqual(checkListen(listen), listen)

    def test_otherKindsAndShapesAreRefused(self):
        for listen in ("tcp:1:interface=127.0.0.1", [], [""], [1], ["systemd:domain=INET:index=0"],
                       ["tcp:notaport:interface=127.0.0.1"]):
            self.assertRaises(ValueError, checkListen, listen)

    def test_unreadableKeyFileIsRefused(self):
        """An ssl: endpoint's key is loaded here, the way the listener would load it."""
        tmp = tempDir(self)
        bad = os.path.join(tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        for key in (bad, os.path.join(tmp, "missing.pem")):
            with self.assertRaises(ValueError) as caught:
                checkListen([f"ssl:0:interface=127.0.0.1:privateKey={key}"])
            self.assertIn("bad listen endpoint", str(caught.exception))


class AddServiceOverFakeTests(HarnessTestCase):
    def test_noInterfaceRegistersNothing(self):
        fault = self.assertFault(self.call("salvus.balancerAddService", "api", ["tcp:8081"]),
                                 Faults.BAD_ARGUMENTS)
        self.assertIn("interface=127.0.0.1", fault.faultString)
        self.assertNotIn("api", self.h.balancer.services)

    def test_badKeyFileRegistersNothing(self):
        key = os.path.join(self.tmp, "missing.pem")
        listen = ["tcp:0:interface=127.0.0.1", f"ssl:0:interface=127.0.0.1:privateKey={key}"]
        self.assertFault(self.call("salvus.balancerAddService", "api", listen), Faults.BAD_ARGUMENTS)
        self.assertNotIn("api", self.h.balancer.services)

    def test_loopbackIsAdded(self):
        self.assertIs(self.call("salvus.balancerAddService", "api", ["tcp:8081:interface=127.0.0.1"]), True)
        self.assertIn("api", self.h.balancer.services)


class _TakenPortReactor(MemoryReactorClock):
    """A reactor on which port 7 is in use."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == 7:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


class AddServiceOverRealBalancerTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = _TakenPortReactor()
        self.balancer = BalancerService(self.reactor)
        self.balancer.startService()
        self.addCleanup(self.balancer.stopService)
        self.h = Harness(tempDir(self), services={"balancer": self.balancer})

    def test_listenerThatCannotBindRegistersNothing(self):
        """The balancer logs a failed listener and keeps the service; the call takes it back and
        fails, so the same call can be made again once the port is free."""
        listen = ["tcp:8081:interface=127.0.0.1", "tcp:7:interface=127.0.0.1"]
        fault = self.h.rpc(self, "salvus.balancerAddService", "api", listen)
        self.assertEqual(fault.faultCode, Faults.FAILED, fault)
        self.assertIn("nothing was added", fault.faultString)
        self.flushLoggedErrors(FirstError)
        self.assertNotIn("api", self.balancer.balanced)
        self.assertNotIn("api", self.balancer.snapshot()["services"])
        self.assertIs(self.h.rpc(self, "salvus.balancerAddService", "api", listen[:1]), True)
        self.assertEqual(self.balancer.balanced["api"].listen, listen[:1])

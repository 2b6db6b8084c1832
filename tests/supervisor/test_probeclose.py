"""The TCP liveness probe closes its connection cleanly, so the probed server logs nothing."""

from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from salvusctl.supervisor.deploy import Probe
from salvusctl.supervisor.service import SupervisorService


class _Recorder(Protocol):
    def connectionLost(self, reason):
        self.factory.lost.callback(reason.value)


class TCPProbeCloseTests(TestCase):
    @inlineCallbacks
    def test_probe_closes_without_reset(self):
        """A reset made every demo worker log a traceback every 2 s (issue 12): a FIN instead."""
        factory = Factory.forProtocol(_Recorder)
        factory.lost = Deferred()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        service = SupervisorService(reactor, [], runDir=self.mktemp(), os=object())
        instance = SimpleNamespace(deploy=SimpleNamespace(probe=Probe(kind="tcp")),
                                   port=port.getHost().port)
        ok = yield service.probe(instance)
        self.assertTrue(ok)
        reason = yield factory.lost
        self.assertIsInstance(reason, ConnectionDone)

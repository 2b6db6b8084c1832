"""The instance page of a real supervisor: both output streams and the reason it is not running.

A program that fails usually says why on stderr, or never gets far enough to say anything (a
missing executable).  Real child processes, so the lines and the spawn error are the ones the
supervisor really captured.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor.deploy import Backoff, Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import Harness, tempDir
from tests.helpers import waitFor
from tests.supervisor import scratch

FAILING = "import sys; print('starting up'); sys.stderr.write('config missing: /etc/app.ini\\n'); sys.exit(3)"


class InstancePageOutputTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_fatalProgramShowsStderrAndReason(self):
        """A FATAL program that wrote its reason to stderr shows it on the instance page, with
        stdout beside it and the reason the supervisor gave up."""
        svc = SupervisorService(reactor, [
            Deploy("bad", command=[sys.executable, "-c", FAILING], startsecs=1,
                   backoff=Backoff(0.05, 1, 0.05, 1)),
            Deploy("ghost", command=["/nonexistent/salvus-test-program"], startsecs=1,
                   backoff=Backoff(0.05, 1, 0.05, 0), cwd="/nonexistent/dir"),
        ], runDir=scratch(self), reapInterval=0.2)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        yield waitFor(lambda: svc.instanceInfo("bad:0")["state"] == "FATAL"
                      and svc.instanceInfo("ghost:0")["state"] == "FATAL")
        h = Harness(tempDir(self), services={"supervisor": svc})
        response, body = h.request(self, "GET", "/instance/bad:0")
        page = body.decode()
        self.assertEqual(response.code, 200)
        self.assertIn('<pre class="log stdout">starting up', page)
        self.assertIn('<pre class="log stderr">config missing: /etc/app.ini', page)
        self.assertIn('class="reason"', page)
        response, body = h.request(self, "GET", "/instance/ghost:0")
        page = body.decode()
        spawnerr = svc.instanceInfo("ghost:0")["spawnerr"] or svc.instanceInfo("ghost:0")["reason"]
        self.assertTrue(spawnerr)
        # the command is checked first, as supervisord checks it before the fork
        self.assertIn("find command", page)
        self.assertIn("/nonexistent/salvus-test-program", page)
        self.assertIn('href="/logtail/ghost%3A0/stderr"', page)

"""The README's "Operating it" commands, run as written against a real demo host.

A real C{twistd -n salvus} (the host C{make run} starts) in a temporary directory; then every
line of the README's shell block that operates it runs through C{/bin/sh} from that directory,
with the venv's C{salvusctl} and C{supervisorctl} on C{PATH}.  Only what a reader must supply is
filled in: the demo's ports where the README writes the defaults (8443, 9001), and the admin
password where it writes C{…}.  Each must succeed; the cluster line, on a host that declares no
cluster, must say so in one line.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from salvusctl.cli.main import ExitCode
from tests.demohost import DemoHost
from tests.helpers import childEnv
from tests.test_docs import SHELLS, blocks

BIN = os.path.dirname(sys.executable)


def operatingLines() -> list[str]:
    """The shell lines under the README's "Operating it" heading."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Operating it")
    line = text[:start].count("\n") + 1
    [block] = [b for b in blocks("README.md") if b.language in SHELLS and b.line > line][:1]
    return [raw for raw in block.lines if raw.strip() and not raw.lstrip().startswith("#")]


class ReadmeCommandsTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def test_operatingCommandsWorkAsWritten(self):
        demo = DemoHost(self)
        yield demo.start(patience=60)
        tmp, admin, http, password = demo.tmp, demo.admin, demo.http, demo.password()
        # The reader's shell: the venv's commands on PATH, no SALVUS_* settings of its own but the
        # password the README says the prompt asks for (no tty here, so the CLI reads it from env).
        shell = {k: v for k, v in childEnv(HOME=tmp).items() if not k.startswith("SALVUS_")}
        shell["PATH"] = BIN + os.pathsep + shell.get("PATH", "")
        shell["SALVUS_PASSWORD"] = password
        # Until the demo's workers are RUNNING, status exits 3.
        deadline = reactor.seconds() + 60
        while True:
            out, err, code = yield getProcessOutputAndValue("salvusctl", ["status"], env=shell, path=tmp)
            if code == 0 or reactor.seconds() > deadline:
                break
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(code, 0, (out, err))
        lines = operatingLines()
        self.assertGreater(len(lines), 8)
        failed = []
        for line in lines:
            command = (line.replace("127.0.0.1:8443", f"127.0.0.1:{admin}")
                       .replace("127.0.0.1:9001", f"127.0.0.1:{http}").replace("-p …", f"-p {password}"))
            out, err, code = yield getProcessOutputAndValue("/bin/sh", ["-c", command], env=shell, path=tmp)
            if " cluster " in line:
                # the demo host declares no cluster: one clear line, the no-service code
                if code != ExitCode.NO_SERVICE or len(err.strip().splitlines()) != 1:
                    failed.append((line, code, out[-500:], err[-500:]))
            elif code != 0:
                failed.append((line, code, out[-500:], err[-500:]))
        self.assertEqual(failed, [])

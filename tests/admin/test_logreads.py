"""Log reads cost what they return, not what the file holds: real log files, real children.

Each test gives an instance a 64 MiB log (earlier runs' lines, then the child's own) and counts
the bytes this process reads (C{rchar} in C{/proc/self/io}, every read(2) of any descriptor):
serving a 1600-byte tail, or following the log with the real C{supervisorctl tail -f}, must
read kilobytes, where reading the whole file read 64 MiB per call (twice a second per follower).
"""

from __future__ import annotations

import os
import shutil
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.admin.helpers import OP, Harness, tempDir, writeUsers
from tests.admin.test_supervisorctl import SUPERVISORCTL, _Collect
from tests.helpers import waitFor
from tests.supervisor import scratch

BIG = 64 << 20
#: A child that prints one numbered line every 50 ms until stopped.
TICKER = (
    "import itertools, sys, time\n"
    "for i in itertools.count():\n    print(f'tick {i}', flush=True)\n    time.sleep(0.05)\n"
)


def bytesRead() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


class _BigLog(TestCase):
    timeout = 30

    def supervisor(self) -> SupervisorService:
        run = scratch(self)
        logs = os.path.join(run, "logs")
        os.makedirs(logs)
        with open(os.path.join(logs, "tick-0.stdout.log"), "wb") as f:
            block = b"2026-01-01T00:00:00.000000Z INFO an old line of an earlier run\n" * 16384
            for _ in range(BIG // len(block) + 1):  # a large log from earlier runs
                f.write(block)
        svc = SupervisorService(reactor, [
            Deploy("tick", command=[sys.executable, "-c", TICKER], startsecs=0, log_max_bytes=0),
        ], runDir=run, logDir=logs, reapInterval=0.2)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        return svc


class SeekReadTests(_BigLog):
    @inlineCallbacks
    def test_tailOfALargeLogReadsOnlyTheTail(self):
        """readProcessStdoutLog(-1600, 0) and tailProcessStdoutLog of a 64 MiB log return the
        child's last lines and read a few KiB, not the file."""
        svc = self.supervisor()
        yield waitFor(lambda: len(svc.tailLog("tick:0", 5)) >= 3)
        h = Harness(tempDir(self), services={"supervisor": svc})
        before = bytesRead()
        text = h.rpc(self, "supervisor.readProcessStdoutLog", "tick:0", -1600, 0)
        data, offset, overflow = h.rpc(self, "supervisor.tailProcessStdoutLog", "tick:0", 0, 1600)
        read = bytesRead() - before
        self.assertLess(read, 1 << 20, f"{read} bytes read to serve two 1600-byte tails")
        self.assertIn("\ntick ", text)
        self.assertIn("\ntick ", data)
        self.assertTrue(overflow)
        self.assertGreater(offset, BIG)
        self.assertEqual(len(data.encode()), 1600)
        before = bytesRead()
        head = h.rpc(self, "supervisor.readProcessStdoutLog", "tick:0", 0, 0)
        self.assertLess(bytesRead() - before, 4 << 20)  # "to the end" is capped, not the file
        self.assertTrue(head.startswith("2026-01-01T00:00:00.000000Z INFO an old line"), head[:80])


class FollowTests(_BigLog):
    skip = None if os.path.exists(SUPERVISORCTL) else f"needs {SUPERVISORCTL}"

    @inlineCallbacks
    def test_supervisorctlTailFollowIsPushedNotPolled(self):
        """The real `supervisorctl tail -f` gets the child's new lines as they come, and
        following for a while reads nothing like the 64 MiB file again."""
        svc = self.supervisor()
        tmp = tempDir(self)
        sockdir = os.path.join("/tmp", f"salvus-lr-{os.getpid()}")
        os.makedirs(sockdir, exist_ok=True)
        self.addCleanup(shutil.rmtree, sockdir, True)
        users = os.path.join(tmp, "users")
        writeUsers(users)
        state = AdminState(services={"supervisor": svc}, clock=reactor, host_name="testhost")
        declaration = Admin(f"unix:{sockdir}/admin.sock", users=users)
        declaration.validate(None)
        admin = AdminService(reactor, [declaration], state, tmp)
        admin.startService()
        self.addCleanup(admin.stopService)
        yield admin.ready
        yield waitFor(lambda: svc.tailLog("tick:0", 1))
        collector = _Collect()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "PYTHONUNBUFFERED": "1"}
        argv = [SUPERVISORCTL, "-s", f"unix://{sockdir}/admin.sock", "-u", OP[0], "-p", OP[1],
                "tail", "-f", "tick:0"]
        before = bytesRead()
        process = reactor.spawnProcess(collector, SUPERVISORCTL, argv, env=env, path=tmp)
        try:
            last = int(svc.tailLog("tick:0", 1)[0].split()[1])
            # 20 more lines (about a second) pushed to the follower
            yield collector.waitFor(f"tick {last + 20}\n".encode())
        finally:
            process.signalProcess("KILL")
            yield collector.ended
        read = bytesRead() - before
        self.assertLess(read, 4 << 20, f"{read} bytes read while following")
        # What the program wrote, as supervisord's tail -f shows it: no receive time, no level
        # (those are kept beside the stream: the store, the pages).
        ours = collector.out[collector.out.index(b"tick "):]  # before: the file's earlier lines
        self.assertNotIn(b" INFO ", ours)
        self.assertIn(f"\ntick {last + 1}\ntick {last + 2}\n".encode(), collector.out)

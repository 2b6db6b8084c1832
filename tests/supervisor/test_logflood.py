"""Output floods from real children: what reaches the store and what stays in memory.

A child that repeats one line (a probe's traceback, a retry loop) must not fill the store's
``logs`` table, and a child printing long lines must not make the supervisor hold 1,000 of them
per stream.  Real processes through a real SupervisorService.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.logs import MAX_LINE
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch

REPEATER = (
    "import sys, time\n"
    "print('starting', flush=True)\n"
    "for _ in range(20000):\n    print('ERROR probe failed: connection reset by peer')\n"
    "print('done', flush=True)\n"
    "time.sleep(100000)\n"
)
LONG = (
    "import sys, time\nsys.stdout.write(('z' * 60000 + '\\n') * 300)\n"
    "sys.stdout.flush()\ntime.sleep(100000)\n"
)


class FloodTests(TestCase):
    timeout = 60

    def service(self, *deploys) -> SupervisorService:
        svc = SupervisorService(reactor, list(deploys), runDir=scratch(self), reapInterval=0.2)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    @inlineCallbacks
    def test_repeated_line_reaches_the_store_once_with_its_count(self):
        """20,000 identical lines: the store gets the line once and, at the end of the window
        (here the host's stop), one record counting the other 19,999; the lines around the
        flood are stored; the log file keeps all 20,002."""
        stored = []
        svc = self.service(Deploy("chatty", command=[sys.executable, "-c", REPEATER], startsecs=0,
                                  store_repeat_window=3600))
        svc.setStoreHook(lambda line: line.stream != "supervisor" and stored.append(line))
        svc.startService()
        yield waitFor(lambda: any(line.text == "done" for line in stored))
        texts = [line.text for line in stored]
        self.assertEqual(texts, ["starting", "ERROR probe failed: connection reset by peer", "done"])
        yield svc.stopService()
        self.assertEqual(
            [line.text for line in stored][3:],
            ["ERROR probe failed: connection reset by peer [repeated 19999 more times in "
             + stored[3].text.rsplit(" in ", 1)[1]],
        )
        self.assertEqual(stored[3].level, "error")
        with open(svc.instanceInfo("chatty:0")["stdout_logfile"]) as f:
            self.assertEqual(sum(1 for _ in f), 20002)

    @inlineCallbacks
    def test_long_lines_held_in_memory_are_bounded_by_bytes(self):
        """Four instances printing 300 lines of 60 KB each: each stream's tail holds at most
        log_tail_bytes (plus the newest line), not 1,000 lines of 64 KiB; a tail still answers,
        from the file."""
        svc = self.service(Deploy("long", command=[sys.executable, "-c", LONG], numprocs=4, startsecs=0,
                                  log_tail_bytes=512 * 1024))
        svc.startService()
        names = [f"long:{i}" for i in range(4)]

        def lines(name):
            try:
                with open(svc.instanceInfo(name)["stdout_logfile"]) as f:
                    return sum(1 for _ in f)
            except FileNotFoundError:
                return 0

        yield waitFor(lambda: all(lines(n) >= 300 for n in names))
        for name in names:
            log = svc.instances[name].log
            self.assertLessEqual(sum(map(len, log.rings["stdout"])), 512 * 1024 + MAX_LINE)
            tail = svc.tailLog(name, 100)
            self.assertGreaterEqual(len(tail), 8)
            self.assertEqual(set(tail), {"z" * 60000})

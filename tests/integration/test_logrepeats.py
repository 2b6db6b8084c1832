"""A child that repeats one line fills no store: the real host's PostgreSQL C{logs} table.

A probe's traceback every 2 s once made 93,043 of a demo store's 94,355 log rows.  Here a real
host (supervisor, monitor, PostgreSQL store) runs a child that prints one line 5,000 times: the
table gets that line once and one row with the count of its repeats, so nothing is dropped
silently; the program's log file keeps every line.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from salvusctl.host import Host
from salvusctl.monitor import Monitor
from salvusctl.supervisor import Deploy
from tests.helpers import waitFor
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

REPEATER = ("import signal\nprint('starting', flush=True)\n"
            "for _ in range(5000):\n    print('ERROR probe failed: connection reset by peer')\n"
            "print('done', flush=True)\nsignal.pause()\n")


class RepeatedLinesInTheStoreTests(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_repeatedLineIsOneRowAndACount(self):
        if POSTGRES_SKIP:
            raise SkipTest(POSTGRES_SKIP)
        db = TempDatabase().create()
        self.addCleanup(db.drop)
        var = os.path.abspath(self.mktemp())
        host = Host(name="repeats", store=db.url, var=var)
        host.add(Deploy("chatty", command=[sys.executable, "-c", REPEATER], startsecs=0,
                        store_repeat_window=3600))
        host.add(Monitor(interval=0.2))
        top = host.build(reactor)
        top.startService()
        stopped = []

        def stop():
            if not stopped:
                stopped.append(True)
                return top.stopService()

        self.addCleanup(stop)
        supervisor = host.context.services["supervisor"]
        yield host.context.services["store"].ready
        yield supervisor.ready

        def rows():
            return db.query("SELECT text, level FROM logs WHERE instance = 'chatty:0' "
                            "AND stream = 'stdout' ORDER BY received_at, text")

        yield waitFor(lambda: any(text == "done" for text, _ in rows()), timeout=30)
        logfile = supervisor.instanceInfo("chatty:0")["stdout_logfile"]
        yield stop()
        texts = [text for text, _ in rows()]  # lines of one read share a receive time
        self.assertEqual(len(texts), 4, texts)
        self.assertEqual(sorted(texts[:3]), ["ERROR probe failed: connection reset by peer", "done",
                                             "starting"])
        self.assertRegex(texts[3], r"^ERROR probe failed: connection reset by peer "
                                   r"\[repeated 4999 more times in \S+\]$")
        with open(logfile) as f:
            self.assertEqual(sum(1 for _ in f), 5002)

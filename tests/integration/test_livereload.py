"""SIGHUP to a real C{twistd salvus} applies monitor, alerts and backup edits live.

The host runs under twistd as a child process, from a C{--config} file.  The file is edited (the
monitor's interval from an hour to 0.2 s, an alert rule added, a scheduled backup set added) and
twistd gets SIGHUP.  The new interval shows as samples arriving in the store, the new rule as an
alert recorded, the new set as a finished run, while the supervised process keeps its pid: the
reload touched only what the edit changed.  Everything is read from outside, as an operator would:
the host's SQLite store, its log file and the process table.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import textwrap

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.helpers import TWISTD, childEnv, waitFor

_TAC = """\
import sys
from salvusctl.alerts.build import AlertRule
from salvusctl.backup.declare import Backup
from salvusctl.host import Host
from salvusctl.monitor.build import Monitor
from salvusctl.supervisor.deploy import Deploy

host = Host(name="live", store="sqlite:{work}/var/salvus.db", var="{work}/var")
host.add(Deploy("nap", command=[sys.executable, "-c", "import time; time.sleep(600)"],
                startsecs=0.1, stopwaitsecs=2))
host.add(Monitor(interval={interval}, disk_interval=3600, mounts=False))
host.add(AlertRule("fatal", deploy="nap", name="nap-fatal"))
host.add(Backup("files", destination="{work}/backups/files", paths={{"data": "{work}/data"}}))
"""

AFTER = """\
host.add(AlertRule("rss", 1, deploy="nap", name="rss-nap"))
host.add(Backup("more", destination="{work}/backups/more", paths={{"data": "{work}/data"}}, every=0.5))
"""


class _Twistd(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class LiveReloadTests(TestCase):
    timeout = 90

    def write(self, interval: float, after: bool = False) -> None:
        text = _TAC.format(work=self.work, interval=interval)
        if after:
            text += AFTER.format(work=self.work)
        with open(self.tac, "w") as f:
            f.write(text)

    def query(self, sql: str):
        if not os.path.exists(self.db):
            return []
        connection = sqlite3.connect(self.db, timeout=5)
        try:
            return connection.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # the host has not made its tables yet
        finally:
            connection.close()

    def log(self) -> str:
        if not os.path.exists(self.logfile):
            return ""
        with open(self.logfile) as f:
            return f.read()

    def napPids(self):
        return self.query("SELECT pid FROM services WHERE site = 'nap:0' AND running = 1")

    @defer.inlineCallbacks
    def stopTwistd(self):
        if self.child.ended.called:
            return
        self.transport.signalProcess("TERM")
        timer = reactor.callLater(20, lambda: self.child.ended.called or self.transport.signalProcess("KILL"))
        yield self.child.ended
        if timer.active():
            timer.cancel()

    @defer.inlineCallbacks
    def setUp(self):
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.work, "data"))
        with open(os.path.join(self.work, "data", "file.txt"), "w") as f:
            f.write("precious\n")
        self.tac = os.path.join(self.work, "host.tac")
        self.db = os.path.join(self.work, "var", "salvus.db")
        self.logfile = os.path.join(self.work, "twistd.log")
        self.write(interval=3600)
        self.child = _Twistd()
        self.transport = reactor.spawnProcess(
            self.child, TWISTD[0],
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "salvus", "--config", self.tac],
            env=childEnv(), path=self.work,
        )
        self.addCleanup(self.stopTwistd)
        yield waitFor(lambda: self.napPids(), timeout=30)
        yield waitFor(lambda: self.query("SELECT COUNT(*) FROM host_status")[0][0] >= 1)

    @defer.inlineCallbacks
    def test_hangupAppliesMonitorAlertsAndBackupLive(self):
        """After SIGHUP the monitor samples every 0.2 s, the added rule fires and the added backup
        set runs on its schedule; the supervised process is the same one."""
        [(pid,)] = self.napPids()
        samples = self.query("SELECT COUNT(*) FROM host_status")[0][0]
        self.assertEqual(samples, 1, "one sample at start, the next an hour away")
        self.write(interval=0.2, after=True)
        os.kill(self.transport.pid, signal.SIGHUP)
        yield waitFor(lambda: "config reloaded" in self.log(), timeout=20)
        reloaded = next(line for line in self.log().splitlines() if "config reloaded" in line)
        self.assertIn("'monitor': {'added': [], 'changed': ['interval']", reloaded)
        self.assertIn("'alerts': {'added': ['rss-nap']", reloaded)
        self.assertIn("'backup': {'added': ['more']", reloaded)
        self.assertNotIn("restart", reloaded)

        yield waitFor(lambda: self.query("SELECT COUNT(*) FROM host_status")[0][0] >= samples + 5, timeout=20)
        yield waitFor(lambda: self.query("SELECT subject FROM alerts WHERE rule = 'rss-nap'") == [("nap:0",)],
                      timeout=20)
        yield waitFor(lambda: ("more", "ok") in self.query("SELECT backup, outcome FROM backup_runs"),
                      timeout=30)
        self.assertEqual(self.query("SELECT backup FROM backup_runs WHERE backup = 'files'"), [])
        self.assertTrue(os.path.isdir(os.path.join(self.work, "backups", "more")))

        self.assertEqual(self.napPids(), [(pid,)])
        os.kill(pid, 0)  # the same process is alive
        self.assertEqual(self.query("SELECT COUNT(*) FROM services WHERE site = 'nap:0'"), [(1,)])
        self.assertNotIn("Traceback", self.log())

    @defer.inlineCallbacks
    def test_hangupWithABrokenEditChangesNothing(self):
        """A broken edit is logged in one line; the monitor keeps its hour-long interval."""
        [(pid,)] = self.napPids()
        with open(self.tac, "a") as f:
            f.write(textwrap.dedent(AFTER.format(work=self.work)))
            f.write('host.add(Backup("more", destination="/elsewhere", paths={"d": "/tmp"}))\n')
        os.kill(self.transport.pid, signal.SIGHUP)
        yield waitFor(lambda: "config not reloaded" in self.log(), timeout=20)
        self.assertIn("two backup sets are named 'more'", self.log())
        self.assertEqual(self.query("SELECT COUNT(*) FROM host_status"), [(1,)])
        self.assertEqual(self.query("SELECT COUNT(*) FROM alerts WHERE rule = 'rss-nap'"), [(0,)])
        self.assertEqual(self.napPids(), [(pid,)])

"""The backup service's pure parts: schedules, retention tiers, rsync output, declarations."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.backup.dbtools import MysqlInsertCounter, PgCopyCounter, countQuery, parseCounts
from salvusctl.backup.declare import Backup, parseDatabase
from salvusctl.backup.hashtree import compareTrees, hashTree
from salvusctl.backup.layout import makeRunId, runStarted
from salvusctl.backup.restore import Restorer
from salvusctl.backup.retention import DAY, HOUR, Retention, RunInfo, selectRuns
from salvusctl.backup.rsync import (
    ProgressParser,
    copyCommand,
    parseLocation,
    parseStats,
    snapshotCommand,
)
from salvusctl.backup.schedule import Scheduler, nextTime, parseSchedule
from salvusctl.errors import ConfigError

from .fakes import FakeSupervisor
from .helpers import tempPath

STATS = """\r          3   0%    0.00kB/s    0:00:00  \r      3,000,003 100%  715.26MB/s    0:00:00 \
(xfr#2, to-chk=0/4)
Number of files: 4 (reg: 2, dir: 2)
Number of created files: 3 (reg: 2, dir: 1)
Number of regular files transferred: 2
Total file size: 3,000,003 bytes
Total transferred file size: 1,500 bytes
Total bytes sent: 3,000,919
"""


class ScheduleTests(SynchronousTestCase):
    def test_intervalCountsFromLastStart(self):
        """An interval is measured from the previous run's start, skipping missed slots."""
        s = parseSchedule(every=60)
        self.assertEqual(nextTime(s, 100.0), 160.0)
        self.assertEqual(nextTime(s, 100.0, last=90.0), 150.0)
        self.assertEqual(nextTime(s, 200.0, last=90.0), 210.0)

    def test_dailyIsNextOccurrence(self):
        """A daily time fires today if still ahead, else tomorrow."""
        s = parseSchedule(daily="03:30")
        day = 20000 * DAY
        self.assertEqual(nextTime(s, day), day + 3.5 * HOUR)
        self.assertEqual(nextTime(s, day + 3.5 * HOUR), day + DAY + 3.5 * HOUR)

    def test_badSchedules(self):
        """Bad values are refused with the reason."""
        for kwargs in ({"every": 0}, {"every": "1h"}, {"daily": "25:00"}, {"daily": "3pm"},
                       {"every": 5, "daily": "01:00"}):
            self.assertRaises(ValueError, parseSchedule, **kwargs)
        self.assertIsNone(parseSchedule())

    def test_schedulerRunsOneAtATimeAndSurvivesFailure(self):
        """A failing job is logged and the next run is still scheduled; runs never overlap."""
        clock = Clock()
        calls = []
        pending = []

        def job():
            calls.append(clock.seconds())
            if len(calls) == 1:
                return fail(RuntimeError("boom"))
            d = Deferred()
            pending.append(d)
            return d

        scheduler = Scheduler(clock, parseSchedule(every=10), job)
        scheduler.start()
        clock.advance(10)
        self.assertEqual(calls, [10])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        clock.advance(10)
        self.assertEqual(calls, [10, 20])
        clock.advance(50)  # still running: no second start
        self.assertEqual(calls, [10, 20])
        pending[0].callback(None)
        clock.advance(10)
        self.assertEqual(calls, [10, 20, 80])
        scheduler.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class RetentionTests(SynchronousTestCase):
    def test_tiers(self):
        """Like rsnapshot: newest per hour/day/week bucket, up to each tier's count."""
        now = 1000 * DAY
        runs = [RunInfo(f"r{i}", now - i * 6 * HOUR, True) for i in range(40)]  # 10 days, 4/day
        keep, drop = selectRuns(runs, now, Retention(hourly=2, daily=3, weekly=1))
        # hourly: r0, r1; daily: newest in each of 3 newest days; weekly: newest overall.
        days = {}
        for r in runs:
            days.setdefault(int(r.started // DAY), r.run_id)
        expected = {"r0", "r1"} | set(list(days.values())[:3])
        self.assertEqual(set(keep), expected)
        self.assertEqual(set(keep) | set(drop), {r.run_id for r in runs})

    def test_weeklyBucketsStartOnMonday(self):
        """Weekly keeps the newest run of each ISO week (Monday to Sunday, UTC)."""
        monday = 4 * DAY  # 1970-01-05 was a Monday
        runs = [RunInfo("sun", monday - HOUR, True), RunInfo("mon", monday + HOUR, True),
                RunInfo("tue", monday + DAY, True), RunInfo("sat-before", monday - 2 * DAY, True)]
        keep, drop = selectRuns(runs, monday + 2 * DAY, Retention(weekly=2))
        self.assertEqual(keep, ["tue", "sun"])
        self.assertEqual(sorted(drop), ["mon", "sat-before"])

    def test_maxAgeButNeverTheNewestGood(self):
        """Age removes old runs, but the newest good run survives any policy."""
        runs = [RunInfo("old", 0.0, True), RunInfo("older", -10.0, True)]
        keep, drop = selectRuns(runs, 100 * DAY, Retention(last=5, max_age=DAY))
        self.assertEqual(keep, ["old"])
        self.assertEqual(drop, ["older"])

    def test_failedRunsGoOnceSuperseded(self):
        """A failed run older than the newest good one is dropped; a newer one is kept to inspect."""
        runs = [RunInfo("f1", 1.0, False), RunInfo("g", 2.0, True), RunInfo("f2", 3.0, False)]
        keep, drop = selectRuns(runs, 10.0, Retention())
        self.assertEqual(keep, ["f2", "g"])
        self.assertEqual(drop, ["f1"])

    def test_badRetention(self):
        self.assertRaises(ValueError, Retention(daily=-1).validate)
        self.assertRaises(ValueError, Retention(max_age=0).validate)


class RsyncTests(SynchronousTestCase):
    def test_stats(self):
        """Snapshot size and bytes transferred come from --stats."""
        stats = parseStats(STATS)
        self.assertEqual((stats.total_size, stats.transferred, stats.files, stats.files_transferred),
                         (3000003, 1500, 4, 2))

    def test_progressInAnyChunking(self):
        """Progress lines end with \\r; split anywhere they still parse."""
        parser = ProgressParser()
        found = []
        data = STATS.encode()
        for i in range(0, len(data), 7):
            found += parser.feed(data[i:i + 7])
        self.assertEqual(sorted({(p.bytes, p.percent) for p in found}), [(3, 0), (3000003, 100)])
        self.assertEqual(parseStats(parser.finish()).total_size, 3000003)

    def test_progressLineReadBeforeItsTerminator(self):
        """A progress line is reported as soon as it is complete, before the next \\r."""
        parser = ProgressParser()
        found = parser.feed(b"\r         32,768   1%    0.00kB/s    0:00:00  ")
        self.assertEqual([(p.bytes, p.percent) for p in found], [(32768, 1)])

    def test_commands(self):
        """Local and remote (rsync -e ssh) snapshot lines; link-dest only with a good base."""
        local = parseLocation("/b")
        argv = snapshotCommand("/src", local, "r2/files/web", link_dest="/b/r1/files/web")
        self.assertIn("--link-dest=/b/r1/files/web", argv)
        self.assertEqual(argv[-2:], ["/src/", "/b/r2/files/web/"])
        self.assertNotIn("-e", argv)
        remote = parseLocation("bk@vault:/srv/b", ssh="ssh -p 2222")
        argv = snapshotCommand("/src", remote, "r2/files/web", link_dest="/srv/b/r1/files/web")
        self.assertEqual(argv[argv.index("-e") + 1], "ssh -p 2222")
        self.assertEqual(argv[-1], "bk@vault:/srv/b/r2/files/web/")
        self.assertIn("--link-dest=/srv/b/r1/files/web", argv)
        self.assertEqual(copyCommand("a", "h:/b", ssh="ssh")[-4:], ["-e", "ssh", "a/", "h:/b/"])

    def test_badLocations(self):
        for text in ("relative/path", "", "host:relative"):
            self.assertRaises(ValueError, parseLocation, text)


class DeclarationTests(SynchronousTestCase):
    def test_valid(self):
        b = Backup("main", "/b", postgres=["postgresql://u:pw@db:5433/shop"], mysql=["mysql://wiki.host/wiki"],
                   paths={"web": "/srv/web"}, daily="02:00", keep=Retention(daily=7))
        b.validate(None)
        self.assertEqual([d.key for d in b.databases], ["postgresql-shop", "mysql-wiki"])
        self.assertEqual(b.databases[0].password, "pw")
        self.assertEqual(b.databases[1].port, 3306)
        self.assertEqual(b.databases[0].url(), "postgresql://u@db:5433/shop")

    def test_invalid(self):
        """Each bad field gives a ConfigError naming it."""
        bad = [
            dict(name="a b", destination="/b", paths={"x": "/x"}),
            dict(name="a", destination="rel", paths={"x": "/x"}),
            dict(name="a", destination="/b"),
            dict(name="a", destination="/b", paths={"x": "rel"}),
            dict(name="a", destination="/b", postgres=["mysql://h/x"]),
            dict(name="a", destination="/b", postgres=["postgresql://h/"]),
            dict(name="a", destination="/b", paths={"x": "/x"}, every=-1),
            dict(name="a", destination="/b", paths={"x": "/x"}, keep="daily"),
        ]
        for kwargs in bad:
            with self.assertRaises(ConfigError) as cm:
                Backup(**kwargs).validate(None)
            self.assertIn("backup", str(cm.exception))
        self.assertRaises(ValueError, parseDatabase, "postgresql://h:99999/x", "postgresql")


class CounterTests(SynchronousTestCase):
    def test_pgCopyBlocks(self):
        counter = PgCopyCounter()
        data = (b'COPY public.t (a, b) FROM stdin;\n1\tx\n2\ty\n\\.\n'
                b'COPY "S"."We""ird" (a) FROM stdin;\n\\.\n')
        for i in range(0, len(data), 5):
            counter.feed(data[i:i + 5])
        self.assertEqual(counter.finish(), {"public.t": 2, 'S.We"ird': 0})

    def test_mysqlInserts(self):
        counter = MysqlInsertCounter()
        counter.feed(b"CREATE TABLE `e` (\nCREATE TABLE `a` (\nINSERT INTO `a` VALUES (1,'x\\ny');\n"
                     b"INSERT INTO `a` VALUES (2,'b');\n")
        self.assertEqual(counter.finish(), {"a": 2, "e": 0})

    def test_countQueryAndParse(self):
        self.assertIn('FROM "public"."t"', countQuery("postgresql", ["public.t"]))
        self.assertIn("FROM `a`", countQuery("mysql", ["a"]))
        self.assertEqual(parseCounts(b"public.t\t3\nx\t0\n"), {"public.t": 3, "x": 0})


class LayoutTests(SynchronousTestCase):
    def test_runIds(self):
        rid = makeRunId("main", 86400.0 + 61)
        self.assertEqual(rid, "main-19700102T000101Z")
        self.assertEqual(makeRunId("main", 86400.0 + 61, {rid}), rid + "-2")
        self.assertEqual(runStarted(rid + "-2"), 86400.0 + 61)
        self.assertIsNone(runStarted("index.json"))

    def test_hashTree(self):
        root = tempPath(self)
        os.makedirs(os.path.join(root, "d"))
        with open(os.path.join(root, "d", "f"), "wb") as f:
            f.write(b"abc")
        os.symlink("d/f", os.path.join(root, "l"))
        tree = hashTree(root)
        self.assertEqual(tree["d/f"][0], 3)
        self.assertEqual(tree["l"], ["link", "d/f"])
        changed = dict(tree, **{"d/f": [3, "0" * 64]})
        self.assertEqual(compareTrees(tree, changed), ["checksum mismatch d/f"])
        self.assertEqual(compareTrees(tree, {}), ["missing file d/f", "missing file l"])

    def test_hashTreeReusesChecksumsOfHardlinkedFiles(self):
        """A file that is the same inode as in the previous snapshot keeps its checksum unread;
        a copied file is hashed."""
        old, new = tempPath(self), tempPath(self)
        os.makedirs(old)
        os.makedirs(new)
        for name in ("same", "copied"):
            with open(os.path.join(old, name), "wb") as f:
                f.write(b"data")
        os.link(os.path.join(old, "same"), os.path.join(new, "same"))
        with open(os.path.join(new, "copied"), "wb") as f:
            f.write(b"data")
        base = {"same": [4, "recorded"], "copied": [4, "recorded"]}
        stats = {}
        tree = hashTree(new, old, base, stats)
        self.assertEqual(tree["same"], [4, "recorded"])
        self.assertNotEqual(tree["copied"][1], "recorded")
        self.assertEqual(stats, {"hashed": 1, "reused": 1})


class _Job:
    """What a L{Restorer} reads of its job to plan a restore."""

    def __init__(self, decl: Backup):
        self.decl = decl
        self.records = None
        self.work_dir = "/nonexistent"


class RestorePlanTests(SynchronousTestCase):
    """A restore stops the deploys that use the data, but never the one that serves a database
    it restores into (tac/services.tac's PostgreSQL): that server must be up for the restore."""

    URL = "postgresql://postgres@127.0.0.1:5433/app"
    MANIFEST = {"run_id": "s-1", "databases": [
        {"key": "postgresql-app", "kind": "postgresql", "url": URL, "file": "app.dump", "tables": {}}]}

    def restorer(self, supervisor: FakeSupervisor) -> Restorer:
        decl = Backup("s", "/backups", postgres=[self.URL], deploys=["pg", "app"])
        decl.validate(None)
        return Restorer(Clock(), _Job(decl), supervisor)

    def kinds(self, supervisor: FakeSupervisor) -> list[tuple[str, str]]:
        restorer = self.restorer(supervisor)
        steps = restorer.plan(self.MANIFEST, "/run", "x", restorer._runningDeploys(),
                              restorer.servingDeploys(self.MANIFEST))
        return [(s.kind, s.description.split(":")[0]) for s in steps]

    def test_deployServingTheDatabaseKeepsRunning(self):
        """The deploy listening on the database's port is kept; the others stop and start."""
        supervisor = FakeSupervisor(running=["pg", "app"], ports={"pg": 5433, "app": 8000})
        self.assertEqual([k for k, _ in self.kinds(supervisor)],
                         ["stop", "note", "database", "record", "start"])
        self.assertEqual([d for k, d in self.kinds(supervisor) if k != "database"],
                         ["stop deploy app", "keep deploy pg running",
                          "record the restore of s-1 in the store", "start deploy app"])

    def test_stoppedServerIsStartedFirst(self):
        """A serving deploy that is stopped is started before the databases are restored."""
        supervisor = FakeSupervisor(running=["app"], stopped=["pg"], ports={"pg": 5433})
        kinds = self.kinds(supervisor)
        self.assertEqual(kinds[1], ("serve", "start deploy pg first"))
        self.assertEqual(kinds[2][0], "database")

    def test_remoteDatabaseServesNothingHere(self):
        """A database on another machine is not served by a local deploy on the same port."""
        restorer = self.restorer(FakeSupervisor(running=["pg"], ports={"pg": 5433}))
        manifest = {"databases": [dict(self.MANIFEST["databases"][0], key="postgresql-other",
                                       url="postgresql://postgres@10.0.0.9:5433/other")]}
        self.assertEqual(restorer.servingDeploys(manifest), {})

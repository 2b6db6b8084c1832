"""The faces of the backup service: builder, schedule wiring, XML-RPC, CLI, PostgreSQL DDL."""

from __future__ import annotations

import io
import xmlrpc.client as xmlrpclib

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import xmlrpc as twisted_xmlrpc

from salvusctl.admin.faults import Faults
from salvusctl.backup.build import buildBackup
from salvusctl.backup.cli import backupMain, formatSize, restoreMain
from salvusctl.backup.declare import Backup
from salvusctl.backup.records import BACKUP_MIGRATIONS
from salvusctl.backup.rpc import BackupXMLRPC, rpcSafe
from salvusctl.backup.service import BackupService
from salvusctl.backup.testing import FakeBackup
from salvusctl.errors import ConfigError
from salvusctl.host import Host, HostContext
from salvusctl.store.dialects import SQLITE

from .fakes import FakeSupervisor
from .helpers import TempPostgres, tempPath


class _FakeStore:
    dialect = "sqlite"
    sql = SQLITE

    def __init__(self):
        self.migrations = {}

    def addMigrations(self, component, steps):
        self.migrations[component] = steps

    def runOperation(self, sql, args=()):
        return succeed(None)

    def runQuery(self, sql, args=()):
        return succeed([])


class _SupervisorService:
    """A supervisor service that holds its ISupervisor as an attribute."""

    def __init__(self, supervisor):
        self.supervisor = supervisor


class BuildTests(SynchronousTestCase):
    def context(self, services=None):
        store = _FakeStore()
        context = HostContext(reactor=Clock(), host=Host(name="alpha"), store=store,
                              var_dir=tempPath(self))
        context.services.update(services or {})
        return context

    def test_buildsOneServiceAndRegistersTables(self):
        """All declarations become one service; the store learns the backup tables first."""
        supervisor = FakeSupervisor(running=["web"])
        context = self.context()
        service = buildBackup(context, [Backup("a", "/b/a", paths={"x": "/x"}, every=60),
                                        Backup("b", "/b/b", paths={"x": "/x"})],
                              supervisor=_SupervisorService(supervisor))
        self.assertIsInstance(service, BackupService)
        self.assertEqual(sorted(service.jobs), ["a", "b"])
        self.assertIs(context.store.migrations["backup"], BACKUP_MIGRATIONS)
        self.assertIs(service.supervisor(), supervisor)
        self.assertIsNone(buildBackup(context, []))

    def test_refusesDuplicates(self):
        """Two sets with one name or one destination are a config error."""
        context = self.context()
        self.assertRaises(ConfigError, buildBackup, context,
                          [Backup("a", "/b/a", paths={"x": "/x"}), Backup("a", "/b/c", paths={"x": "/x"})])
        self.assertRaises(ConfigError, buildBackup, context,
                          [Backup("a", "/b/a", paths={"x": "/x"}), Backup("c", "/b/a", paths={"x": "/x"})])

    def test_hostValidatesTheDeclaration(self):
        """A bad Backup in a .tac fails Host.validate() with the reason."""
        host = Host(name="alpha")
        host.add(Backup("a", "relative", paths={"x": "/x"}))
        with self.assertRaises(ConfigError) as cm:
            host.validate()
        self.assertIn("absolute path", str(cm.exception))

    def test_scheduleDrivesRunsOnTheInjectedClock(self):
        """Each scheduled set runs when due on the service's clock; status shows the next time."""
        clock = Clock()
        clock.advance(1000)
        decl = _valid(Backup("a", "/b/a", paths={"x": "/x"}, every=60))
        service = BackupService(clock, _FakeStore(), [decl],
                                host_name="alpha", work_dir="/tmp/unused")
        runs = []
        service.jobs["a"].run = lambda: runs.append(clock.seconds()) or succeed({})
        service.startService()
        self.assertEqual(service.status()[0]["next_due"], 1060)
        self.assertEqual(service.status()[0]["schedule"], "every 60s")
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(runs, [1060, 1120])
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


def _valid(decl: Backup) -> Backup:
    decl.validate(None)
    return decl


def _service(size: int = 1000) -> FakeBackup:
    """The public fake (it passes the real service's contract suite), one set named C{a}."""
    clock = Clock()
    clock.advance(1_800_000_000)
    return FakeBackup({"a": "/srv/backups"}, clock, host_name="alpha", size=size)


class RPCTests(SynchronousTestCase):
    def test_resultsMarshalForAnyClient(self):
        """None becomes '' and 64-bit sizes become doubles, so xmlrpc.client can dump them."""
        rpc = BackupXMLRPC(_service(size=2**40))
        result = self.successResultOf(rpc.xmlrpc_run())
        self.assertEqual(result["snapshot_size"], float(2**40))
        self.assertEqual(result["base_run"], "")
        xmlrpclib.dumps((result,), methodresponse=True)
        self.assertEqual(rpcSafe({"a": [None, True, 3]}), {"a": ["", True, 3]})

    def test_errorsAreFaultsOfTheOneTable(self):
        """Refused requests and unknown runs use the admin's fault table, as every other verb."""
        rpc = BackupXMLRPC(_service())
        fault = self.failureResultOf(rpc.xmlrpc_restore(), twisted_xmlrpc.Fault).value
        self.assertEqual((fault.faultCode, fault.faultString),
                         (Faults.REFUSED, "REFUSED: backup a: no good run to restore in /srv/backups"))
        fault = self.failureResultOf(rpc.xmlrpc_verify("x"), twisted_xmlrpc.Fault).value
        self.assertEqual(fault.faultCode, Faults.BAD_NAME)


class CLITests(SynchronousTestCase):
    def run_cli(self, main, argv, responses):
        calls = []

        def call(method, *args):
            calls.append((method,) + args)
            value = responses[method]
            if isinstance(value, Exception):
                raise value
            return value

        out = io.StringIO()
        code = main(argv, call, out)
        return code, out.getvalue(), calls

    def test_backupVerbs(self):
        run = {"run_id": "a-20261123T000000Z", "outcome": "ok", "snapshot_size": 3 * 2**20,
               "dump_size": 2048, "bytes_transferred": 10, "base_run": ""}
        code, text, calls = self.run_cli(backupMain, ["run", "a"], {"backup.run": run})
        self.assertEqual((code, calls), (0, [("backup.run", "a")]))
        self.assertIn("snapshot 3.0 MiB", text)
        status = [{"backup": "a", "destination": "/b", "schedule": "every 60s", "state": "running",
                   "run_id": "a-1", "phase": "files", "step": "web", "percent": 42, "bytes": 5000,
                   "last": "", "next_due": ""}]
        code, text, _ = self.run_cli(backupMain, ["status"], {"backup.status": status})
        self.assertIn("files web 42%", text)
        listing = [{"run_id": "a-1", "outcome": "failed", "started": 0, "snapshot_size": "",
                    "dump_size": "", "bytes_transferred": "", "base_run": "", "deleted_at": 5}]
        code, text, _ = self.run_cli(backupMain, ["list"], {"backup.list": listing})
        self.assertIn("failed (deleted)", text)
        verify = {"run_id": "a-1", "ok": False, "checked": [], "problems": ["web: checksum mismatch f"]}
        code, text, _ = self.run_cli(backupMain, ["verify", "a-1"], {"backup.verify": verify})
        self.assertEqual(code, 1)
        self.assertIn("PROBLEM  web: checksum mismatch f", text)

    def test_restoreVerbs(self):
        report = {"run_id": "a-1", "backup": "a", "dry_run": True,
                  "steps": [{"step": "stop deploy web", "outcome": "planned"}]}
        code, text, calls = self.run_cli(restoreMain, ["--dry-run"], {"backup.restore": report})
        self.assertEqual((code, calls), (0, [("backup.restore", "", True, "")]))
        self.assertIn("would restore a-1", text)
        self.assertIn("planned  stop deploy web", text)
        failed = dict(report, dry_run=False, outcome="failed",
                      steps=[{"step": "restore db", "outcome": "failed", "error": "pg_restore failed"}])
        code, text, _ = self.run_cli(restoreMain, ["a-1"], {"backup.restore": failed})
        self.assertEqual(code, 1)
        self.assertIn("[pg_restore failed]", text)

    def test_usageAndFaults(self):
        """Bad usage and refused requests exit 2 with one line."""
        code, text, calls = self.run_cli(backupMain, ["explode"], {})
        self.assertEqual((code, calls), (2, []))
        self.assertIn("invalid choice", text)
        fault = xmlrpclib.Fault(Faults.REFUSED, "no good run to restore")
        code, text, _ = self.run_cli(restoreMain, [], {"backup.restore": fault})
        self.assertEqual((code, text), (2, "error: no good run to restore\n"))
        self.assertEqual(formatSize(""), "-")
        self.assertEqual(formatSize(1536), "1.5 KiB")


class PostgresDialectTests(TestCase):
    """The backup tables' PostgreSQL DDL applies and holds a run (the shared store's dialect)."""

    def test_postgresqlMigrationApplies(self):
        pg = TempPostgres(self)
        for statement in BACKUP_MIGRATIONS[0].statements("postgresql"):
            pg.query(statement)
        pg.query("INSERT INTO backup_runs (run_id, backup, started, outcome, bytes_transferred)"
                 " VALUES ('a-1', 'a', 1.5, 'ok', 5000000000)")
        self.assertEqual(pg.query("SELECT bytes_transferred FROM backup_runs"), "5000000000")
        pg.query("INSERT INTO backup_restores (run_id, backup, kind, dry_run, started, outcome)"
                 " VALUES ('a-1', 'a', 'verify', false, 2.0, 'ok')")



class AdminArgumentTests(SynchronousTestCase):
    """The backup verbs check their arguments' types like every other admin verb."""

    def methods(self):
        from twisted.internet.task import Clock

        from salvusctl.admin.backuprpc import BackupNamespace
        from salvusctl.admin.state import AdminState

        state = AdminState(services={}, clock=Clock(), host_name="h")
        self.backup = _service()
        return BackupNamespace(state, self.backup).methods()

    def test_wrongTypesAreBadArguments(self):
        """A dict for a name or a string for dry_run was passed on into the backup service; now it
        is BAD_ARGUMENTS naming the argument (the admin's one check, read from the verbs' type
        hints), before anything runs."""
        from salvusctl.admin.faults import Faults
        from salvusctl.admin.verbs import verbSchema

        methods = self.methods()
        for verb, args, what in [("run", ({"a": 1},), "name"), ("log", (3,), "run_id"),
                                 ("restore", ("", "yes"), "dry_run"), ("verify", ([],), "run_id")]:
            with self.assertRaises(twisted_xmlrpc.Fault) as caught:
                verbSchema(methods[verb]).check(verb, args)
            self.assertEqual(caught.exception.faultCode, Faults.BAD_ARGUMENTS, verb)
            self.assertIn(what, caught.exception.faultString)
        with self.assertRaises(twisted_xmlrpc.Fault) as caught:
            verbSchema(methods["status"]).check("status", ("extra",))
        self.assertEqual(caught.exception.faultCode, Faults.INCORRECT_PARAMETERS)

    def test_rightTypesStillCall(self):
        methods = self.methods()
        self.assertEqual(self.successResultOf(methods["list"]()), [])
        run = self.successResultOf(methods["run"]("a"))
        self.assertIn(run["run_id"], self.successResultOf(methods["log"](run["run_id"])))
        self.assertEqual([r["run_id"] for r in self.successResultOf(methods["list"]("a"))], [run["run_id"]])

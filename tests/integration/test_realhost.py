"""The admin against the real services of a real host, driven as operators drive it.

The admin's own tests use the public fakes; these prove that what it shows and does is what the
real supervisor, balancer, monitor, alerts and backup services have and do: XML-RPC changes the
real balancer, C{/metrics} carries its real counters, monitor queries return real psutil samples,
C{salvusctl} and C{supervisorctl} work as child processes, and stopping the host leaves nothing
behind.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import xmlrpc.client

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from salvusctl.admin.faults import Faults
from tests.helpers import waitFor
from tests.integration.helpers import OPERATOR, VIEWER, RealHost
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class RealHostTestCase(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.host = RealHost(os.path.abspath(self.mktemp()))
        self.addCleanup(self.host.stop)
        yield self.host.start()


class BalancerTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_xmlrpcChangesTheRealBalancer(self):
        """Show, add, drain and weight through XML-RPC act on the balancer that carries traffic."""
        bodies = yield self.host.throughBalancer(3)
        self.assertEqual(set(bodies), {"hello from the twisted backend\n"})
        snapshot = yield self.host.rpc("salvus.balancerSnapshot")
        twisted = snapshot["services"]["www"]["groups"]["main"]["hosts"][0]
        self.assertEqual((twisted["name"], twisted["state"]), ("twisted", "up"))
        self.assertEqual(twisted["total"], 3)
        self.assertGreater(twisted["bytes_out"], 0)

        # The deploy's worker joins the group live, then takes traffic once checked.
        port = self.host.instance()["port"]
        name = yield self.host.rpc("salvus.balancerAddHost", "www", "main", "127.0.0.1", port, 1, "worker")
        self.assertTrue(name)
        yield waitFor(lambda: self.host.balancerHost("main", "worker")["state"] == "up")
        yield self.host.rpc("salvus.balancerSetState", "www", "main", "twisted", "drain")
        self.assertEqual(self.host.balancerHost("main", "twisted")["admin"], "drain")
        bodies = yield self.host.throughBalancer(2)
        self.assertEqual(set(bodies), {f"hello from web:0 on port {port}\n"})
        yield self.host.rpc("salvus.balancerSetWeight", "www", "main", "worker", 7)
        self.assertEqual(self.host.balancerHost("main", "worker")["weight"], 7)
        yield self.host.rpc("salvus.balancerSetState", "www", "main", "twisted", "down")
        self.assertEqual(self.host.balancerHost("main", "twisted")["state"], "maint")
        yield self.host.rpc("salvus.balancerSetState", "www", "main", "twisted", "up")
        self.assertEqual(self.host.balancerHost("main", "twisted")["state"], "up")

        # The config declares no worker: diff says so, in the admin's terms.
        diff = yield self.host.rpc("salvus.diff")
        self.assertIn("www/main/worker", diff["balancer"]["removed"])
        refused = yield self.assertFailure(
            self.host.rpc("salvus.balancerSetWeight", "www", "main", "worker", 3, user=VIEWER),
            xmlrpc.client.Fault,
        )
        self.assertEqual(refused.faultCode, Faults.PERMISSION_DENIED)
        missing = yield self.assertFailure(
            self.host.rpc("salvus.balancerSetState", "www", "main", "nope", "up"), xmlrpc.client.Fault
        )
        self.assertEqual(missing.faultCode, Faults.BAD_NAME)

    @defer.inlineCallbacks
    def test_leastLoadReadsTheMonitor(self):
        """A least-load group given an unbound MonitorLoadSource is fed by the host's monitor.

        The supervised worker has a cpu % from psutil; the in-test backend is no instance of
        this host (load unknown).  Fed, the scheduler sends every client to the known, loaded
        worker; unfed, it would fall back to least connections and alternate.
        """
        source = self.host.services["balancer"].balanced["least"].groups["main"].scheduler.source
        self.assertTrue(source.bound)
        port = self.host.instance()["port"]
        yield self.host.rpc("salvus.balancerAddHost", "least", "main", "127.0.0.1", port, 1, "worker")
        yield waitFor(lambda: self.host.balancerHost("main", "worker", "least")["state"] == "up")
        yield waitFor(lambda: source.loadOf(("127.0.0.1", port)) is not None)
        bodies = yield self.host.throughBalancer(4, "least")
        self.assertEqual(set(bodies), {f"hello from web:0 on port {port}\n"})

    @defer.inlineCallbacks
    def test_addAndRemoveAServiceLive(self):
        """balancerAddService starts a real listener with an empty 'default' group; remove stops it."""
        yield self.host.rpc("salvus.balancerAddService", "extra", ["tcp:0:interface=127.0.0.1"])
        balancer = self.host.services["balancer"]
        address = balancer.snapshot()["services"]["extra"]["addresses"][0]
        yield self.host.rpc(
            "salvus.balancerAddHost", "extra", "default", "127.0.0.1", self.host.backend_port, 1, "b"
        )
        yield waitFor(lambda: self.host.balancerHost("default", "b", "extra")["state"] == "up")
        host, port = address.rsplit(":", 1)
        self.host.addresses["extra"] = (host, int(port))
        bodies = yield self.host.throughBalancer(1, "extra")
        self.assertEqual(bodies, ["hello from the twisted backend\n"])
        duplicate = yield self.assertFailure(
            self.host.rpc("salvus.balancerAddService", "extra", ["tcp:0:interface=127.0.0.1"]),
            xmlrpc.client.Fault,
        )
        self.assertEqual(duplicate.faultCode, Faults.BAD_ARGUMENTS)
        yield self.host.rpc("salvus.balancerRemoveService", "extra")
        self.assertNotIn("extra", balancer.snapshot()["services"])
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex((host, int(port))), 0)

    @defer.inlineCallbacks
    def test_addServiceOnATakenPortFailsAndAddsNothing(self):
        """salvusctl balancer add-service on a port another program holds: one line with the
        reason, a non-zero exit, no traceback in the host's log, and the service list as before
        (the same call works once the port is free)."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        before = sorted(self.host.services["balancer"].snapshot()["services"])
        shown = yield self.host.salvusctl("balancer", "show")
        errors = []
        observer = errors.append
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        out, err, code = yield self.host.salvusctl("balancer", "add-service", "t3",
                                                   f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(code, 0, (out, err))
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertRegex(err, rf"^salvusctl: .*t3.*tcp:{port}:interface=127.0.0.1.*address already in use")
        self.assertEqual(sorted(self.host.services["balancer"].snapshot()["services"]), before)
        self.assertEqual((yield self.host.salvusctl("balancer", "show")), shown)
        self.assertEqual([e for e in errors if e.get("log_failure") is not None], [])
        taken.close()
        out, err, code = yield self.host.salvusctl("balancer", "add-service", "t3",
                                                   f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(code, 0, err)
        self.assertIn("t3", self.host.services["balancer"].snapshot()["services"])

    @defer.inlineCallbacks
    def test_metricsAndPagesShowRealCounters(self):
        """/metrics parses with the client's own parser and carries the real balancer counters."""
        yield self.host.throughBalancer(4)
        code, text = yield self.host.get("/metrics", user=VIEWER)
        self.assertEqual(code, 200)
        metrics = _metrics(text)
        key = (("group", "main"), ("host", "twisted"), ("service", "www"))
        self.assertEqual(metrics[("salvus_balancer_host_connections_total", key)], 4.0)
        self.assertEqual(metrics[("salvus_balancer_host_up", key)], 1.0)
        self.assertGreater(metrics[("salvus_balancer_host_sent_bytes_total", key)], 0)
        self.assertEqual(metrics[("salvus_up", (("host", "integ"),))], 1.0)
        self.assertEqual(metrics[("salvus_scrape_errors", ())], 0.0)

        code, page = yield self.host.get("/balancer")
        self.assertEqual(code, 200)
        self.assertIn("twisted", page)
        self.assertIn(f"127.0.0.1:{self.host.backend_port}", page)
        code, page = yield self.host.get("/")
        self.assertIn("Backends up", page)
        self.assertIn("2 / 2", page)  # backends: the twisted one in www and in least
        self.assertIn("1 / 1", page)  # instances running


class MonitorTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_monitorQueriesReturnRealSamples(self):
        """Latest, history and least-loaded come from psutil samples of the real child."""
        pid = self.host.instance()["pid"]

        @defer.inlineCallbacks
        def history():
            rows = yield self.host.rpc("salvus.monitorHistory", "web:0", -600, 0)
            return rows

        yield waitFor(lambda: self.host.services["monitor"].ticks >= 3)
        latest = yield self.host.rpc("salvus.monitorLatest")
        sample = latest["web:0"]
        self.assertEqual((sample["pid"], sample["state"]), (pid, "RUNNING"))
        self.assertGreater(sample["rss"], 1_000_000)
        self.assertGreaterEqual(sample["cpu_percent"], 0.0)

        rows: list = []
        for _ in range(100):
            rows = yield history()
            if rows:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(rows, "no stored samples")
        self.assertGreater(rows[-1]["rss"], 1_000_000)
        least = yield self.host.rpc("salvus.monitorLeastLoaded", "web")
        self.assertEqual(least, "web:0")
        info = yield self.host.rpc("salvus.storeInfo")
        self.assertEqual(info["dialect"], "sqlite")
        self.assertGreaterEqual(info["samples"], len(rows))
        left = yield self.host.rpc("salvus.storePrune", 3600)
        self.assertGreaterEqual(left, info["samples"])  # nothing is an hour old; sampling goes on

        code, text = yield self.host.get("/metrics")
        metrics = _metrics(text)
        self.assertGreater(metrics[("salvus_instance_resident_bytes", (("instance", "web:0"),))], 1_000_000)
        code, page = yield self.host.get("/instance/web:0")
        self.assertEqual(code, 200)
        self.assertIn("<svg", page)
        code, page = yield self.host.get("/deploys")
        self.assertIn(" MiB", page)

    @defer.inlineCallbacks
    def test_alertsFromTheRealEngine(self):
        """The rule fires on a real sample and shows in XML-RPC, the page and /metrics."""
        yield waitFor(lambda: self.host.services["alerts"].active())
        alerts = yield self.host.rpc("salvus.alerts")
        self.assertEqual([(a["rule"], a["subject"]) for a in alerts], [("rss-over-1mb", "web:0")])
        code, page = yield self.host.get("/alerts")
        self.assertIn("rss-over-1mb", page)
        code, text = yield self.host.get("/metrics")
        self.assertEqual(_metrics(text)[("salvus_alerts_active", ())], 1.0)


class CommandLineTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_salvusctlAndSupervisorctl(self):
        """The console script and the real supervisorctl drive the real supervisor and balancer."""
        yield self.host.throughBalancer(1)
        out, err, code = yield self.host.salvusctl("status")
        self.assertEqual(code, 0, err)
        self.assertIn("web:0", out)
        self.assertIn("RUNNING", out)
        out, err, code = yield self.host.salvusctl("balancer", "show")
        self.assertEqual(code, 0, err)
        self.assertIn("www/main/twisted", out)
        out, err, code = yield self.host.salvusctl("balancer", "drain", "www/main/twisted")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.host.balancerHost("main", "twisted")["admin"], "drain")
        out, err, code = yield self.host.salvusctl("balancer", "weight", "www/main/twisted", "4")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.host.balancerHost("main", "twisted")["weight"], 4)
        yield waitFor(lambda: self.host.services["monitor"].ticks >= 2)
        out, err, code = yield self.host.salvusctl("monitor", "top")
        self.assertEqual(code, 0, err)
        self.assertIn("web:0", out)
        self.assertIn("MiB", out)

        out, err, code = yield self.host.supervisorctl("status")
        self.assertIn("web:0", out)
        self.assertIn("RUNNING", out)
        self.assertEqual(os.stat(self.host.socket).st_mode & 0o777, 0o600)
        out, err, code = yield self.host.supervisorctl("status", unix=True)
        self.assertIn("web:0", out)
        self.assertIn("RUNNING", out)

        pid = self.host.instance()["pid"]
        self.assertTrue(_alive(pid))
        out, err, code = yield self.host.salvusctl("stop", "web:0")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.host.instance()["state"], "STOPPED")
        self.assertFalse(_alive(pid))
        out, err, code = yield self.host.salvusctl("status")
        self.assertEqual(code, 3, "status exits 3 when something is not running")
        out, err, code = yield self.host.supervisorctl("start", "web:0")
        self.assertIn("started", out)
        self.assertEqual(self.host.instance()["state"], "RUNNING")
        self.assertNotEqual(self.host.instance()["pid"], pid)

        out, err, code = yield self.host.salvusctl("stop", "web:0", user=VIEWER)
        self.assertEqual(code, 5)
        self.assertIn("operator", err)


class DeployTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_logsRestartsAndThePages(self):
        """Output, restarts and the page buttons work on the real supervisor's child process."""
        port = self.host.instance()["port"]
        response = yield self.host.http.get(f"http://127.0.0.1:{port}/")
        self.assertEqual((yield response.text()), f"hello from web:0 on port {port}\n")
        yield waitFor(lambda: any("GET / HTTP" in line for line in
                                  self.host.services["supervisor"].tailLog("web:0", 10)))
        out, err, code = yield self.host.salvusctl("tail", "web:0")
        self.assertEqual(code, 0, err)
        self.assertIn(f"web:0 listening on 127.0.0.1:{port}", out)
        self.assertIn('"GET / HTTP/1.1" 200', out)
        out, err, code = yield self.host.supervisorctl("tail", "web:0")
        self.assertIn('"GET / HTTP/1.1" 200', out)

        pid = self.host.instance()["pid"]
        out, err, code = yield self.host.supervisorctl("restart", "web:0")
        self.assertIn("web:0: started", out)
        self.assertNotEqual(self.host.instance()["pid"], pid)
        self.assertFalse(_alive(pid))
        code, text = yield self.host.get("/metrics")
        transitions = {
            dict(labels)["state"]: value
            for (name, labels), value in _metrics(text).items()
            if name == "salvus_instance_transitions_total" and dict(labels)["instance"] == "web:0"
        }
        self.assertGreaterEqual(transitions.get("STOPPED", 0), 1)
        self.assertGreaterEqual(transitions.get("RUNNING", 0), 1)

        # The stop button of the deploys page, as a browser posts it.
        code, page = yield self.host.get("/deploys")
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        pid = self.host.instance()["pid"]
        response = yield self.host.http.post(
            self.host.admin_url + "/deploys/web:0/stop",
            data={"csrf": token},
            auth=OPERATOR,
            headers={"Origin": [self.host.admin_url]},
            allow_redirects=False,
        )
        yield response.content()
        self.assertEqual(response.code, 303)
        yield waitFor(lambda: self.host.instance()["state"] == "STOPPED")
        self.assertFalse(_alive(pid))
        code, page = yield self.host.get("/deploys")
        self.assertIn("STOPPED", page)


class BackupTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_backupThroughTheAdmin(self):
        """backup.* is mounted; salvusctl backup/restore and the page show the real runs."""
        code, page = yield self.host.get("/backups")
        self.assertIn("never", page)
        out, err, code = yield self.host.salvusctl("backup", "status")
        self.assertEqual(code, 0, err)
        self.assertIn("files ->", out)
        self.assertIn("idle", out)
        out, err, code = yield self.host.salvusctl("backup", "run", user=VIEWER)
        self.assertEqual(code, 5, out + err)
        out, err, code = yield self.host.salvusctl("backup", "run")
        self.assertEqual(code, 0, out + err)
        self.assertIn(": ok;", out)
        run_id = out.split(":")[0]
        status = yield self.host.rpc("backup.status", user=VIEWER)
        self.assertEqual(status[0]["last"]["run_id"], run_id)
        out, err, code = yield self.host.salvusctl("backup", "list")
        self.assertIn(run_id, out)
        out, err, code = yield self.host.salvusctl("backup", "verify", run_id)
        self.assertEqual(code, 0, out + err)
        out, err, code = yield self.host.salvusctl("restore", run_id, "--dry-run")
        self.assertEqual(code, 0, out + err)
        self.assertIn(f"would restore {run_id}", out)
        code, page = yield self.host.get("/backups")
        self.assertIn(f"{run_id} ok", page)
        code, page = yield self.host.get("/")
        self.assertIn("last ok", page)


class ShutdownTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_stoppingTheHostLeavesNothing(self):
        """HostService.stopService: no listening port, child, thread, timer or store connection.

        A host is stopped by twistd on SIGTERM and by tests; anything it leaves running outlives
        it (a port a restart cannot bind, an orphan child, a thread that keeps the process alive).
        """
        threads_before = set(threading.enumerate())
        calls_before = set(reactor.getDelayedCalls())
        selectables_before = set(reactor.getReaders()) | set(reactor.getWriters())
        host = RealHost(os.path.abspath(self.mktemp()))
        self.addCleanup(host.stop)
        yield host.start()
        yield host.throughBalancer(2)
        yield host.rpc("salvus.hostInfo")
        yield waitFor(lambda: host.services["monitor"].ticks >= 2)
        pid = host.instance()["pid"]
        store = host.store
        ports = [host.admin_port, host.balancer_address[1]]

        yield host.stop()

        self.assertFalse(_alive(pid), "the deploy's child outlived the host")
        self.assertFalse(os.path.exists(host.socket), "the admin's unix socket is left behind")
        for port in ports:
            with socket.socket() as s:
                self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0, f"port {port} still listens")
        left = set(reactor.getReaders()) | set(reactor.getWriters())
        # The reactor's own SIGCHLD waker appears with the first child process of the run.
        left = {s for s in left - selectables_before if type(s).__module__ != "twisted.internet._signals"}
        self.assertEqual(left, set())
        timers = [
            c
            for c in reactor.getDelayedCalls()
            if c not in calls_before and c.active() and not c.func.__module__.startswith("twisted.trial")
        ]
        self.assertEqual(timers, [])
        extra = [
            t
            for t in set(threading.enumerate()) - threads_before
            if t.is_alive() and not t.name.startswith("PoolThread-twisted.internet.reactor")
        ]
        self.assertEqual(extra, [])
        self.assertIsNone(store._conn)
        self.assertIsNone(store._pool)


def _keys(value, path="") -> set[str]:
    """Every key path of nested dicts (lists: their first element), to compare two shapes."""
    out = set()
    if isinstance(value, dict):
        keyed_by_name = path.endswith(("/services", "/groups"))
        for k, v in value.items():
            here = f"{path}/*" if keyed_by_name else f"{path}/{k}"
            out.add(here)
            out |= _keys(v, here)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out |= _keys(value[0], path + "[]")
    return out


class ShapeTests(RealHostTestCase):
    @defer.inlineCallbacks
    def test_fakesAnswerTheRealShapes(self):
        """The public fakes have exactly the keys of the real services' answers, so the admin's
        tests (which use the fakes) read what the real services give."""
        from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor

        real = self.host.services["balancer"].snapshot()
        real["services"] = {"www": real["services"]["www"]}  # options of "least" hold its source
        fake = FakeBalancer({"www": {"main": [("127.0.0.1", 8000)]}}).snapshot()
        self.assertEqual(_keys(fake), _keys(real))

        yield waitFor(lambda: self.host.services["alerts"].active())
        monitor = self.host.services["monitor"]
        fake_monitor = FakeMonitor(FakeSupervisor({"web": 1}))
        fake_monitor.record("web:0", 1.0, 2.0, 3)
        self.assertEqual(set(fake_monitor.latest()["web:0"]), set(monitor.latest()["web:0"]))
        rows: list = []
        for _ in range(100):
            rows = yield monitor.history("web:0", 0)
            if rows:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        fake_rows = yield fake_monitor.history("web:0", 0)
        self.assertEqual(set(fake_rows[0]), set(rows[0]))

        fake_alerts = FakeAlerts()
        fake_alerts.fire("rss-over-1mb", "web:0", "m", 1.0)
        self.assertEqual(set(fake_alerts.alerts()[0]), set(self.host.services["alerts"].alerts()[0]))


class PostgresHostTests(TestCase):
    """The same host on the PostgreSQL store (its own temporary database)."""

    timeout = 60
    skip = POSTGRES_SKIP

    @defer.inlineCallbacks
    def test_adminOverThePostgresStore(self):
        """Monitor history, store info and the alert records come from PostgreSQL."""
        db = TempDatabase().create()
        self.addCleanup(db.drop)
        host = RealHost(os.path.abspath(self.mktemp()), store=db.url)
        self.addCleanup(host.stop)
        yield host.start()
        info = yield host.rpc("salvus.storeInfo")
        self.assertEqual(info["dialect"], "postgresql")
        self.assertNotIn("password", info["url"])
        rows: list = []
        for _ in range(100):
            rows = yield host.rpc("salvus.monitorHistory", "web:0", -600, 0)
            if rows:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertGreater(rows[-1]["rss"], 1_000_000)
        yield waitFor(lambda: db.query("SELECT COUNT(*) FROM alerts WHERE rule = 'rss-over-1mb'")[0][0] >= 1)
        out, err, code = yield host.salvusctl("monitor", "history", "web:0", "--since", "600")
        self.assertEqual(code, 0, err)
        self.assertIn("MiB", out)
        yield host.stop()
        # the store's connections are closed: the database can be dropped without forcing
        others = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        self.assertEqual(db.query(others, (db.name,)), [(0,)])

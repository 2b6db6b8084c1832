"""tac/services.tac for real: PostgreSQL, Redis, memcached and HAProxy supervised by one host.

Each deploy must be RUNNING only once it answers (sd_notify from PostgreSQL, Redis and HAProxy; a
probe for memcached), HAProxy must run from its rendered template and reach Redis, and stopping
the host must leave none of their processes.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from salvusctl.host.loading import loadHost
from tests.helpers import REPO, freePort, waitFor
from tests.store.pgcluster import CLUSTER_SKIP

PROGRAMS = ("redis-server", "memcached", "haproxy")
PORTS = ("SALVUS_PG_PORT", "SALVUS_REDIS_PORT", "SALVUS_MEMCACHED_PORT", "SALVUS_HAPROXY_PORT")


def _skipReason() -> str | None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} not installed (.ci/run installs them): services.tac NOT RUN"
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        return "no PostgreSQL server binaries: services.tac NOT RUN"
    return CLUSTER_SKIP


def _ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return s.recv(200)


class ServicesTacTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def startHost(self):
        """Start tac/services.tac on free ports in a scratch directory; fires with (host service,
        supervisor, ports by variable, names in the order they became RUNNING) once all four are."""
        reason = _skipReason()
        if reason:
            raise SkipTest(reason)
        base = tempfile.mkdtemp(prefix="salvus-services-")
        os.chmod(base, 0o755)  # the postgres user walks down to its data directory
        self.addCleanup(shutil.rmtree, base, True)
        env = {"SALVUS_VAR": os.path.join(base, "var"), **{k: str(freePort()) for k in PORTS}}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        self.addCleanup(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
                                 for k, v in saved.items()])
        host = loadHost(os.path.join(REPO, "tac", "services.tac"))
        host.validate()
        top = host.build(reactor)
        supervisor = top.getServiceNamed("supervisor")
        order: list[str] = []
        supervisor.addObserver(lambda name, old, new, info: order.append(name)
                               if info["event"] == "state" and new.name == "RUNNING" else None)
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        yield waitFor(lambda: len(set(order)) == 4, timeout=90)
        return top, supervisor, {k: int(env[k]) for k in PORTS}, order

    @inlineCallbacks
    def test_services_host_runs_and_stops_clean(self):
        """Every deploy of services.tac is RUNNING and answering, in its order, and a stop leaves
        no process of theirs."""
        top, supervisor, ports, order = yield self.startHost()
        self.assertEqual(len(order), 4, order)  # each became RUNNING once: no restart
        self.assertLess(order.index("redis:0"), order.index("haproxy:0"))
        infos = {i["name"]: i for i in supervisor.instanceInfos()}
        self.assertTrue(all(i["state"] == "RUNNING" and i["ready"] for i in infos.values()), infos)
        # Each answers at the moment it is RUNNING; Redis through HAProxy's rendered config.
        socket.create_connection(("127.0.0.1", ports["SALVUS_PG_PORT"]), timeout=5).close()
        self.assertEqual(_ask(ports["SALVUS_REDIS_PORT"], b"PING\r\n"), b"+PONG\r\n")
        self.assertTrue(_ask(ports["SALVUS_MEMCACHED_PORT"], b"version\r\n").startswith(b"VERSION "))
        yield waitFor(lambda: _tryAsk(ports["SALVUS_HAPROXY_PORT"]) == b"+PONG\r\n", timeout=10)
        pids = {p for i in infos.values() for p in supervisor.instances[i["name"]].members}
        yield top.stopService()
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        self.assertEqual(alive, [])


    @inlineCallbacks
    def test_restore_keeps_the_postgresql_it_restores_into(self):
        """services.tac backs up the PostgreSQL its C{pg} deploy runs: a restore must restore into
        that running server (stopping it would refuse every connection), and the data comes back."""
        top, supervisor, ports, order = yield self.startHost()
        port = ports["SALVUS_PG_PORT"]
        yield _psql(port, "CREATE TABLE items (id int PRIMARY KEY, name text);"
                          " INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g")
        backup = top.getServiceNamed("backup")
        run = yield backup.run("pg")
        self.assertEqual(run["outcome"], "ok", run.get("log"))
        yield _psql(port, "DELETE FROM items WHERE id > 10; CREATE TABLE junk (x int)")
        pid = supervisor.instanceInfo("pg:0")["pid"]
        changes: list[tuple[str, str]] = []
        supervisor.addObserver(lambda name, old, new, info: changes.append((name, new.name))
                               if info["event"] == "state" else None)
        report = yield backup.restore(run["run_id"])
        self.assertEqual(report["outcome"], "ok", report)
        self.assertEqual((yield _psql(port, "SELECT count(*) FROM items")), "50")
        self.assertEqual((yield _psql(port, "SELECT to_regclass('junk') IS NULL")), "t")
        self.assertEqual([c for c in changes if c[0] == "pg:0"], [])
        self.assertEqual(supervisor.instanceInfo("pg:0")["pid"], pid)
        self.assertIn("keep deploy pg running", "\n".join(s["step"] for s in report["steps"]))


@inlineCallbacks
def _psql(port: int, sql: str):
    """Run C{sql} in the services host's C{postgres} database; fires with its output, stripped."""
    out, err, code = yield getProcessOutputAndValue(
        "psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                 "-d", "postgres", "-c", sql], env=dict(os.environ))
    if code:
        raise RuntimeError(f"psql failed ({code}): {err.decode()}")
    return out.decode().strip()


def _tryAsk(port: int) -> bytes:
    try:
        return _ask(port, b"PING\r\n")
    except OSError:
        return b""


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

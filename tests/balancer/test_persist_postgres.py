"""The balancer's migration and upserts on a real PostgreSQL (its own temporary database).

The PostgreSQL store lives in the store package; here the balancer's SQL is run through a minimal
synchronous adapter with the store's conventions (C{?} placeholders, one transaction per
interaction), so the dialect is proven independently of it.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from salvusctl.balancer import persist
from salvusctl.balancer.service import BalancedService
from salvusctl.store.dialects import POSTGRESQL
from tests.balancer.helpers import balanced


class _Cursor:
    def __init__(self, cursor):
        self.cursor = cursor

    def execute(self, sql, args=()):
        self.cursor.execute(sql.replace("?", "%s"), args)

    def executemany(self, sql, seq):
        self.cursor.executemany(sql.replace("?", "%s"), seq)


class SyncPostgres:
    """Enough of IStore for the balancer's persistence, run synchronously."""

    dialect = "postgresql"
    sql = POSTGRESQL

    def __init__(self, conn):
        self.conn = conn

    def runInteraction(self, fn, *args, **kwargs):
        with self.conn:
            with self.conn.cursor() as c:
                result = fn(_Cursor(c), *args, **kwargs)
        return succeed(result)

    def runQuery(self, sql, args=()):
        with self.conn:
            with self.conn.cursor() as c:
                c.execute(sql.replace("?", "%s"), args)
                return succeed(c.fetchall())


class PostgresPersistTests(SynchronousTestCase):
    def setUp(self):
        dsn = os.environ.get("SALVUS_TEST_POSTGRES")
        if not dsn:
            raise SkipTest("SALVUS_TEST_POSTGRES is not set: balancer SQL NOT checked on PostgreSQL "
                           "(e.g. SALVUS_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test)")
        import psycopg2

        name = "salvus_t_" + secrets.token_hex(6)
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        with admin.cursor() as c:
            c.execute(f"CREATE DATABASE {name}")

        def drop():
            with admin.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.close()

        self.addCleanup(drop)
        parts = urlsplit(dsn)
        self.conn = psycopg2.connect(urlunsplit(parts._replace(path="/" + name)))
        self.addCleanup(self.conn.close)
        with self.conn, self.conn.cursor() as c:
            for step in persist.MIGRATIONS:
                for statement in step.statements("postgresql"):
                    c.execute(statement)
        self.store = SyncPostgres(self.conn)

    def test_save_twice_then_restore(self):
        clock = Clock()
        svc = BalancedService(clock, balanced(["10.0.0.1:80", "10.0.0.2:80"]))
        hosts = list(svc.groups["main"].hosts.values())
        hosts[0].total, hosts[0].bytes_in = 10, 1000
        hosts[1].markDown("connect failed: refused")
        hosts[0].setAdmin("drain")
        self.successResultOf(persist.saveState(self.store, {"svc": svc}, 1.0))
        hosts[0].total = 12
        self.successResultOf(persist.saveState(self.store, {"svc": svc}, 2.0))
        saved_hosts, saved_groups = self.successResultOf(persist.loadState(self.store))
        self.assertEqual(len(saved_hosts), 2)
        fresh = BalancedService(clock, balanced(["10.0.0.1:80", "10.0.0.2:80"]))
        self.assertEqual(persist.applyState({"svc": fresh}, saved_hosts, saved_groups), 2)
        a, b = fresh.groups["main"].hosts.values()
        self.assertEqual((a.total, a.bytes_in, a.state), (12, 1000, "drain"))
        self.assertEqual((b.state, b.down_reason), ("down", "connect failed: refused"))

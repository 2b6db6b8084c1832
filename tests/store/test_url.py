"""Store URLs: what a host file may name, and one clear error for what it may not."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.errors import ConfigError
from salvusctl.store import DEFAULT_STORE_URL, makeStore, parseStoreURL
from salvusctl.store.sqlite import SQLiteStore


class ParseStoreURLTests(SynchronousTestCase):
    def assertBad(self, url, *fragments):
        error = self.assertRaises(ConfigError, parseStoreURL, url)
        text = str(error)
        self.assertEqual(len(text.splitlines()), 1, text)
        for fragment in fragments:
            self.assertIn(fragment, text)
        return text

    def test_default_is_sqlite_under_var(self):
        """With no store named, a host keeps its state in SQLite under ./var/."""
        parsed = parseStoreURL(DEFAULT_STORE_URL)
        self.assertEqual((parsed.scheme, parsed.path), ("sqlite", "var/salvus.db"))

    def test_sqlite_forms(self):
        """Absolute, relative and in-memory SQLite paths."""
        self.assertEqual(parseStoreURL("sqlite:/abs/x.db").path, "/abs/x.db")
        self.assertEqual(parseStoreURL("sqlite://rel/x.db").path, "rel/x.db")
        self.assertEqual(parseStoreURL("sqlite::memory:").path, ":memory:")

    def test_postgresql_parts(self):
        """User, password (percent-decoded), host, port and database reach psycopg2;
        the form that is logged has no password."""
        parsed = parseStoreURL("postgresql://bob:s%40cret@db.example:6543/salvus")
        self.assertEqual(
            (parsed.scheme, parsed.user, parsed.password, parsed.host, parsed.port, parsed.database),
            ("postgresql", "bob", "s@cret", "db.example", 6543, "salvus"),
        )
        self.assertEqual(parsed.redacted(), "postgresql://bob@db.example:6543/salvus")
        self.assertEqual(
            parsed.dsnKeywords(),
            {"dbname": "salvus", "host": "db.example", "port": 6543, "user": "bob", "password": "s@cret"},
        )
        self.assertEqual(parseStoreURL("postgres://h/db").port, 5432)

    def test_postgresql_options(self):
        """Pool settings ride on the URL and are checked with the rest of the config."""
        parsed = parseStoreURL(
            "postgresql://h/db?pool_size=8&queue_limit=500&close_timeout=2.5&sslmode=require"
        )
        self.assertEqual(parsed.storeOptions(), {"pool_size": 8, "queue_limit": 500, "close_timeout": 2.5})
        self.assertEqual(parsed.dsnKeywords()["sslmode"], "require")

    def test_bad_urls_name_the_fault(self):
        """Each malformed URL gets one line saying what is wrong."""
        self.assertBad("", "non-empty")
        self.assertBad(None, "non-empty")
        self.assertBad("mysql://h/db", "unknown store URL", "sqlite:PATH", "postgresql://")
        self.assertBad("var/salvus.db", "unknown store URL")
        self.assertBad("sqlite:", "names no database file")
        self.assertBad("sqlite://", "names no database file")
        self.assertBad("postgresql://h:5432/", "names no database")
        self.assertBad("postgresql://h:5432", "names no database")
        self.assertBad("postgresql://h:notaport/db", "bad port")
        self.assertBad("postgresql://h:99999/db", "bad port")
        self.assertBad("postgresql://h/db/extra", "bad database name")

    def test_bad_options_name_the_fault(self):
        """Unknown or out-of-range options are refused at start-up, naming the option."""
        self.assertBad("postgresql://h/db?pool=3", "unknown option 'pool'", "pool_size")
        self.assertBad("postgresql://h/db?pool_size=0", "pool_size", "at least 1")
        self.assertBad("postgresql://h/db?pool_size=many", "pool_size")
        self.assertBad("postgresql://h/db?queue_limit=-5", "queue_limit")
        self.assertBad("postgresql://h/db?close_timeout=soon", "close_timeout")
        self.assertBad("postgresql://h/db?close_timeout=nan", "close_timeout")
        self.assertBad("postgresql://h/db?sslmode=maybe", "sslmode", "require")
        self.assertBad("postgresql://h/db?&&=", "query")

    def test_password_never_in_errors(self):
        """Error lines end up in logs and terminals: the password is masked."""
        text = self.assertBad("postgresql://u:hunter2@h:5432/db?nope=1", "unknown option")
        self.assertNotIn("hunter2", text)
        text = self.assertBad("postgresql://u:hunter2@h:bad/db", "bad port")
        self.assertNotIn("hunter2", text)


class MakeStoreTests(SynchronousTestCase):
    def test_sqlite_relative_to_base_dir(self):
        """Relative SQLite paths are under the host's directory, absolute ones are kept."""
        store = makeStore("sqlite:var/x.db", Clock(), base_dir="/srv/host")
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, "/srv/host/var/x.db")
        self.assertEqual(makeStore("sqlite:/tmp/y.db", Clock(), base_dir="/srv").path, "/tmp/y.db")

    def test_postgresql_options_reach_the_store(self):
        """pool_size and queue_limit in the URL configure the store it makes."""
        store = makeStore("postgresql://u:pw@h:5433/db?pool_size=2&queue_limit=7", Clock())
        self.assertEqual((store.pool_size, store.queue_limit), (2, 7))
        self.assertEqual(store.url, "postgresql://u@h:5433/db")
        self.assertEqual(store.dialect, "postgresql")

    def test_bad_url_raises_config_error(self):
        """A host with a bad store URL fails like any other bad config."""
        self.assertRaises(ConfigError, makeStore, "oracle://x/y", Clock())

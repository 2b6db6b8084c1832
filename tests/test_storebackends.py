"""A store backend is added inside C{salvusctl/store/} only.

Services write their few differing statements against the store's capabilities
(C{store.sql}, a L{salvusctl.store.dialects.SQLDialect}), never against a backend's name.  This
reads every module outside the store and counts the places that test a backend's name or read
C{.dialect}: each one is a file a new backend would have to touch.
"""

from __future__ import annotations

import ast
from pathlib import Path
from unittest import TestCase

from zope.interface.verify import verifyObject

from salvusctl.interfaces import IStore
from salvusctl.store.dialects import DIALECTS, POSTGRESQL, SQLITE, SQLDialect, dialectNamed
from salvusctl.store.testing import MemoryStore

PACKAGE = Path(__file__).resolve().parent.parent / "salvusctl"
BACKEND_NAMES = {"sqlite", "postgresql", "postgres"}

# Backups dump *target* databases (a PostgreSQL or MySQL the user names, with pg_dump or
# mysqldump), whatever the store is: their kinds are not store backends.
NOT_STORE_BACKENDS = {
    "backup/declare.py",
    "backup/dbtools.py",
    "backup/job.py",
    "backup/layout.py",
    "backup/restore.py",
}


def backendChecks(source: str, name: str = "<source>") -> list[int]:
    """Lines of C{source} naming a store backend in code (docstrings and prose do not count)."""
    lines = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Constant) and node.value in BACKEND_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "dialect":
            lines.append(node.lineno)
    return lines


class BackendChecksTests(TestCase):
    def test_noBackendNameOutsideTheStore(self):
        """No module outside store/ tests a backend's name: a new backend changes no service."""
        found = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = path.relative_to(PACKAGE).as_posix()
            if relative.startswith("store/") or relative in NOT_STORE_BACKENDS:
                continue
            lines = backendChecks(path.read_text(), str(path))
            if lines:
                found[relative] = lines
        self.assertEqual(found, {}, "ask store.sql (SQLDialect) for a capability instead")

    def test_allowListIsCurrent(self):
        """Every allow-listed module still exists and still names a backup target's kind."""
        for relative in sorted(NOT_STORE_BACKENDS):
            self.assertTrue(backendChecks((PACKAGE / relative).read_text()), relative)

    def test_countsAnythingThatNamesABackend(self):
        """The reader sees a comparison, a dict key and a C{.dialect} read; not a docstring."""
        source = '"""On postgresql."""\nif s.dialect == "sqlite":\n    x = {"postgresql": 1}\n'
        self.assertEqual(sorted(backendChecks(source)), [2, 2, 3])


class DialectTests(TestCase):
    def test_everyStoreSaysItsDialect(self):
        """A store's C{sql} is a descriptor whose name is its C{dialect}."""
        store = MemoryStore()
        verifyObject(IStore, store)
        self.assertIs(store.sql, SQLITE)
        self.assertEqual(store.dialect, store.sql.name)

    def test_namedDialects(self):
        """A name or a descriptor gives the descriptor; an unknown name says which are known."""
        self.assertIs(dialectNamed("postgresql"), POSTGRESQL)
        self.assertIs(dialectNamed(SQLITE), SQLITE)
        self.assertEqual(set(DIALECTS), {"sqlite", "postgresql"})
        with self.assertRaises(ValueError) as caught:
            dialectNamed("oracle")
        self.assertIn("'postgresql', 'sqlite'", str(caught.exception))

    def test_onlySharedStoresHaveTheirOwnClock(self):
        """A store several hosts share has a clock of its own, which they all judge beats by."""
        for dialect in DIALECTS.values():
            self.assertIsInstance(dialect, SQLDialect)
            self.assertEqual(dialect.shared, dialect.dbClock is not None, dialect.name)

"""The composition core's module paths: the new ones, the old ones kept for one release, the table."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.host import components
from tests.helpers import childEnv

OLD_PATHS = {
    "salvusctl.config": ("salvusctl.host.loading", "loadHost"),
    "salvusctl.configreader": ("salvusctl.host.reader", "ConfigReader"),
    "salvusctl.declared": ("salvusctl.host.model", "DeclaredHost"),
    "salvusctl.defaulthost": ("salvusctl.host.demo", "defaultHost"),
    "salvusctl.reload": ("salvusctl.host.reload", "HostReloader"),
    "salvusctl.admin.declaration": ("salvusctl.admin.declare", "Admin"),
    "salvusctl.backup.declaration": ("salvusctl.backup.declare", "Backup"),
}


class OldPathTests(SynchronousTestCase):
    """A .tac file or a script written against the old top-level modules still runs, and is told
    where the name lives now."""

    def test_oldPathsReExportWithWarning(self):
        """Each old module warns with its new path and hands out the very same objects."""
        for old, (new, name) in OLD_PATHS.items():
            sys.modules.pop(old, None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
            self.assertTrue(any(new in m for m in messages), (old, messages))
            self.assertIs(getattr(module, name), getattr(importlib.import_module(new), name))

    def test_oldModelModuleStillRuns(self):
        """C{python -m salvusctl.declared} (what an older host spawns to read a config) still
        answers a usage line, not an import error."""
        result = subprocess.run([sys.executable, "-m", "salvusctl.declared"], capture_output=True,
                                env=childEnv(), timeout=60)
        self.assertEqual(result.returncode, 64, result.stderr)
        self.assertIn(b"usage", result.stderr)

    def test_hostNamesFromThePackage(self):
        """C{from salvusctl.host import Host, HostContext, HostService} keeps working."""
        from salvusctl.host import BUILD_ORDER, Host, HostContext, HostService, building, declaring

        self.assertIs(Host, declaring.Host)
        self.assertIs(HostContext, building.HostContext)
        self.assertIs(HostService, building.HostService)
        self.assertEqual([n for n, _ in BUILD_ORDER], components.names())


class ComponentTableTests(SynchronousTestCase):
    """The table is the one place that names the components: everything it names exists."""

    def test_everyTargetResolves(self):
        """Each row's declarations, builder, reloader and model entry import and carry the name."""
        for row in components.COMPONENTS:
            self.assertTrue(callable(components.resolve(row.build)), row.name)
            for target in row.declares:
                module = components.resolve(target)
                names = {getattr(v, "component", None) for v in vars(module).values() if isinstance(v, type)
                         and v.__module__ == module.__name__}
                self.assertIn(row.name, names, target)
            if row.reload is not None:
                module = components.resolve(row.reload)
                self.assertTrue(callable(module.entries) and callable(module.applyEntries), row.reload)
            if row.describe is not None:
                self.assertTrue(callable(components.resolve(row.describe)), row.describe)

    def test_namesAreUnique(self):
        names = components.names()
        self.assertEqual(len(names), len(set(names)))

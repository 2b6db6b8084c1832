"""Test-session set-up shared by every test directory."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial import unittest

_BASE = tempfile.mkdtemp(prefix="salvus-tests-")


def _mktemp(self) -> str:
    """Like trial's C{mktemp}, but under the system temp directory, never in the checkout.

    Under pytest, trial's own C{mktemp} writes relative to the working directory.
    """
    parent = tempfile.mkdtemp(prefix=self.id().rsplit(".", 1)[-1][:40] + "-", dir=_BASE)
    return os.path.join(parent, "temp")


unittest.SynchronousTestCase.mktemp = _mktemp


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_BASE, ignore_errors=True)


def pytest_sessionstart(session):
    """Build the supervisor's spawn helper once, before any test: otherwise the first test that
    starts a supervisor leaves the compiler's process (and its pipes) in the reactor."""
    from salvusctl.supervisor import oscalls

    oscalls.spawnHelper()

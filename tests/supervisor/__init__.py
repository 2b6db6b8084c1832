"""Tests of the Salvus supervisor."""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["scratch"]


def scratch(case) -> str:
    """A fresh path (not yet created) under the system temp directory, removed after the test.

    Used instead of C{TestCase.mktemp}, which under pytest writes into the working tree.
    """
    base = tempfile.mkdtemp(prefix="salvus-supervisor-test-")
    case.addCleanup(shutil.rmtree, base, True)
    return os.path.join(base, "t")

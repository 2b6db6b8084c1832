"""Deprecated: moved to L{salvusctl.backup.declare}; this path re-exports it for one release."""

import warnings

from salvusctl.backup.declare import *  # noqa: F401,F403
from salvusctl.backup.declare import __all__  # noqa: F401

warnings.warn("salvusctl.backup.declaration is deprecated; import salvusctl.backup.declare instead",
              DeprecationWarning, stacklevel=2)

"""Deprecated: moved to L{salvusctl.admin.declare}; this path re-exports it for one release."""

import warnings

from salvusctl.admin.declare import *  # noqa: F401,F403
from salvusctl.admin.declare import __all__  # noqa: F401

warnings.warn("salvusctl.admin.declaration is deprecated; import salvusctl.admin.declare instead",
              DeprecationWarning, stacklevel=2)

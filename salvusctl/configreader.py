"""Deprecated: moved to L{salvusctl.host.reader}; this path re-exports it for one release."""

import warnings

from salvusctl.host.reader import *  # noqa: F401,F403
from salvusctl.host.reader import __all__  # noqa: F401

warnings.warn("salvusctl.configreader is deprecated; import salvusctl.host.reader instead",
              DeprecationWarning, stacklevel=2)

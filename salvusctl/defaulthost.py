"""Deprecated: moved to L{salvusctl.host.demo}; this path re-exports it for one release."""

import warnings

from salvusctl.host.demo import *  # noqa: F401,F403
from salvusctl.host.demo import __all__  # noqa: F401

warnings.warn("salvusctl.defaulthost is deprecated; import salvusctl.host.demo instead",
              DeprecationWarning, stacklevel=2)

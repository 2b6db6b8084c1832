"""Deprecated: moved to L{salvusctl.host.loading}; this path re-exports it for one release."""

import warnings

from salvusctl.host.loading import *  # noqa: F401,F403
from salvusctl.host.loading import __all__  # noqa: F401

warnings.warn("salvusctl.config is deprecated; import salvusctl.host.loading instead",
              DeprecationWarning, stacklevel=2)

"""Deprecated: moved to L{salvusctl.host.reload}; this path re-exports it for one release."""

import warnings

from salvusctl.host.reload import *  # noqa: F401,F403
from salvusctl.host.reload import __all__  # noqa: F401
from salvusctl.supervisor.reload import SETTINGS_KEY, deployDiff, deploysOf, isDeploy  # noqa: F401

warnings.warn("salvusctl.reload is deprecated; import salvusctl.host.reload instead",
              DeprecationWarning, stacklevel=2)

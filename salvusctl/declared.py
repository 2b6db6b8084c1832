"""Deprecated: moved to L{salvusctl.host.model}; this path re-exports it for one release."""

import warnings

from salvusctl.host.model import *  # noqa: F401,F403
from salvusctl.host.model import __all__  # noqa: F401

warnings.warn("salvusctl.declared is deprecated; import salvusctl.host.model instead",
              DeprecationWarning, stacklevel=2)

if __name__ == "__main__":
    import sys

    from salvusctl.host.loading import main

    sys.exit(main())

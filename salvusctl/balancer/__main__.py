"""``python -m salvusctl.balancer``: the standalone balancer process (see L{salvusctl.balancer.process})."""

import sys

from salvusctl.balancer.standalone import main

sys.exit(main())

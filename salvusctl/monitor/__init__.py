"""Salvus monitor: psutil samples of every supervised instance and the host, into the store.

The declaration a C{.tac} uses is re-exported here; the service, queries and sampler live in
their own modules (C{service}, C{queries}, C{sampler}, C{logs}, C{retention}, C{memcache},
C{loadsource}).
"""

from salvusctl.monitor.declare import Monitor
from salvusctl.monitor.loadsource import MonitorLoadSource

__all__ = ["Monitor", "MonitorLoadSource"]

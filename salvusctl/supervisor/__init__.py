"""Salvus supervisor: deploys run as supervised instances (see docs/supervisor.md).

The public face: L{Deploy} (declare), L{SupervisorService} (run), L{ProcessState} (states).
"""

from salvusctl.supervisor.deploy import Backoff, Deploy, Flapping, Probe
from salvusctl.supervisor.states import ProcessState

__all__ = ["Deploy", "Backoff", "Flapping", "Probe", "ProcessState"]

"""Salvus supervisor: deploys run as supervised instances (see docs/supervisor.md).

The public face: L{Deploy}, L{EventListener} and L{SupervisorSettings} (declare),
L{SupervisorService} (run, in L{salvusctl.supervisor.service}), L{ProcessState} (states).
"""

from salvusctl.supervisor.declare import SupervisorSettings
from salvusctl.supervisor.deploy import Backoff, Deploy, Flapping, Probe, Ready
from salvusctl.supervisor.eventlistener import EventListener
from salvusctl.supervisor.states import ProcessState

__all__ = ["Deploy", "EventListener", "Backoff", "Flapping", "Probe", "Ready", "ProcessState",
           "SupervisorSettings"]

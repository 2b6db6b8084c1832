"""Public fakes of Salvus services, for the admin's tests and for users' own tests.

Each fake lives beside the service it imitates (C{salvusctl/<service>/testing.py}) and is
gathered here.  Each provides the same zope interface as the real service, passes the same
contract suite (C{tests/<service>/test_contract.py} runs one suite against both), keeps its state
in plain attributes that a test can read, and takes a clock so that times are deterministic.
"""

from __future__ import annotations

from salvusctl.alerts.testing import FakeAlerts
from salvusctl.backup.testing import FakeBackup
from salvusctl.balancer.testing import FakeBalancer
from salvusctl.cluster.testing import FakeCluster
from salvusctl.monitor.testing import FakeMonitor
from salvusctl.supervisor.testing import STATES, FakeSupervisor, SupervisorVerbsMixin

__all__ = ["FakeSupervisor", "SupervisorVerbsMixin", "FakeBalancer", "FakeMonitor", "FakeAlerts",
           "FakeCluster", "FakeBackup", "STATES"]

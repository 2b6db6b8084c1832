"""A fake supervisor, checked against L{ISupervisor} so it cannot drift from the real one."""

from __future__ import annotations

from twisted.internet.defer import succeed
from zope.interface import implementer

from salvusctl.interfaces import ISupervisor
from salvusctl.testing import SupervisorVerbsMixin

__all__ = ["FakeSupervisor"]


@implementer(ISupervisor)
class FakeSupervisor(SupervisorVerbsMixin):
    """Deploys with one instance each; records every stop/start call in order."""

    def __init__(self, running: list[str], stopped: list[str] = (), ports: dict[str, int] | None = None):
        self.ports = dict(ports or {})
        self.states = {name: "RUNNING" for name in running}
        self.states.update({name: "STOPPED" for name in stopped})
        self.calls: list[tuple[str, str]] = []

    def _info(self, deploy: str) -> dict:
        return {"name": f"{deploy}:0", "group": deploy, "state": self.states[deploy],
                "statecode": 20 if self.states[deploy] == "RUNNING" else 0, "pid": 0, "start": 0,
                "stop": 0, "now": 0, "exitstatus": 0, "spawnerr": "", "description": "",
                "port": self.ports.get(deploy),
                "logfile": "", "stdout_logfile": "", "stderr_logfile": ""}

    def instanceInfos(self):
        return [self._info(d) for d in self.states]

    def instanceInfo(self, name):
        deploy = name.partition(":")[0]
        if deploy not in self.states:
            raise KeyError(name)
        return self._info(deploy)

    def startInstance(self, name):
        return self.startDeploy(name.partition(":")[0])

    def stopInstance(self, name):
        return self.stopDeploy(name.partition(":")[0])

    def restartInstance(self, name):
        self.stopInstance(name)
        return self.startInstance(name)

    def startDeploy(self, name):
        self.calls.append(("start", name))
        self.states[name] = "RUNNING"
        return succeed(None)

    def stopDeploy(self, name):
        self.calls.append(("stop", name))
        self.states[name] = "STOPPED"
        return succeed(None)

    def startAll(self):
        return succeed(None)

    def stopAll(self):
        return succeed(None)

    def signalInstance(self, name, signal):
        pass

    def tailLog(self, name, lines=100, stream="stdout"):
        return []

    def addObserver(self, observer):
        pass

    def removeObserver(self, observer):
        pass

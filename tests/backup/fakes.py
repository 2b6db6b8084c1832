"""The backup's supervisor: the public fake (it passes the real supervisor's contract suite),
recording the stops and starts a restore asks for."""

from __future__ import annotations

from salvusctl.supervisor.testing import FakeSupervisor as PublicFakeSupervisor

__all__ = ["FakeSupervisor"]


class FakeSupervisor(PublicFakeSupervisor):
    """Deploys with one instance each; C{calls} lists every deploy stop and start, in order.

    @param ports: deploy -> its instance's port (a restore keeps the deploy serving a database).
    """

    def __init__(self, running: list[str], stopped: list[str] = (), ports: dict[str, int] | None = None):
        super().__init__({name: 1 for name in [*running, *stopped]}, running=False, ports=ports)
        for name in running:
            self._start(f"{name}:0")
        self.calls: list[tuple[str, str]] = []

    def startDeploy(self, name):
        self.calls.append(("start", name))
        return super().startDeploy(name)

    def stopDeploy(self, name):
        self.calls.append(("stop", name))
        return super().stopDeploy(name)

"""A Salvus supervisor with its admin on loopback, for bench/logs: C{python salvus_host.py SPEC.json}.

SPEC: {"run_dir", "log_dir", "port", "users", "deploys": [{Deploy keyword arguments}]}.  Prints
C{UP <pid>} once the admin listens; stops everything on SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from twisted.internet import reactor  # noqa: E402

from salvusctl.admin.build import AdminService  # noqa: E402
from salvusctl.admin.declare import Admin  # noqa: E402
from salvusctl.admin.state import AdminState  # noqa: E402
from salvusctl.supervisor.deploy import Deploy  # noqa: E402
from salvusctl.supervisor.service import SupervisorService  # noqa: E402


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    sup = SupervisorService(reactor, [Deploy(**d) for d in spec["deploys"]], runDir=spec["run_dir"],
                            logDir=spec["log_dir"])
    state = AdminState(services={"supervisor": sup}, clock=reactor, host_name="bench")
    declaration = Admin(f"tcp:{spec['port']}:interface=127.0.0.1", users=spec["users"])
    admin = AdminService(reactor, [declaration], state, spec["run_dir"])

    def up() -> None:
        sup.startService()
        admin.startService()
        admin.ready.addCallback(lambda _: print("UP", os.getpid(), flush=True))

    def down():
        admin.stopService()
        return sup.stopService()

    reactor.callWhenRunning(up)
    reactor.addSystemEventTrigger("before", "shutdown", down)
    reactor.run()


if __name__ == "__main__":
    main()

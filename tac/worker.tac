# A worker host: supervised deploys, monitored into the store, the admin on a unix socket only
# (`salvusctl --url unix:var/admin.sock ...` on the host itself).  A front-end host (frontend.tac)
# balances its workers at this host's address, ports 8001 and 8002.
#
#   SALVUS_STORE=postgresql://salvus@db.lan:5432/salvus twistd -n salvus --config tac/worker.tac
import os
import sys

from salvusctl.admin.declaration import Admin
from salvusctl.alerts.build import AlertRule
from salvusctl.host import Host
from salvusctl.monitor.build import Monitor
from salvusctl.supervisor.deploy import Deploy, Probe

var = os.environ.get("SALVUS_VAR", "var")

host = Host(name=os.environ.get("SALVUS_HOST_NAME"),
            store=os.environ.get("SALVUS_STORE", "sqlite:" + os.path.join(var, "salvus.db")), var=var)
host.add(Deploy(
    "worker",
    command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
    numprocs=2,
    port=int(os.environ.get("SALVUS_WORKER_PORT", "8001")),  # worker:0 on 8001, worker:1 on 8002
    probe=Probe(kind="tcp", interval=2, timeout=1),
))
host.add(Monitor(interval=5))
host.add(AlertRule("fatal", deploy="worker", severity="critical"))
host.add(AlertRule("rss", 200, seconds=30, deploy="worker"))
host.add(Admin("unix:" + os.path.join(var, "admin.sock"), bootstrap_user="admin"))
application = host.application()

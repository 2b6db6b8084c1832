# A worker host: supervised deploys, monitored into the store, the admin on a unix socket only
# (`salvusctl --url unix:var/admin.sock ...` on the host itself).  It joins the cluster of hosts
# sharing its PostgreSQL store and publishes its ready `worker` instances there, at SALVUS_ADDRESS,
# for the front-ends' balancers (frontend.tac); operators reach it with `salvusctl cluster send`.
#
#   SALVUS_STORE=postgresql://salvus@db.lan:5432/salvus SALVUS_ADDRESS=10.0.0.11 \
#       twistd -n salvus --config tac/worker.tac
import os
import sys

from salvusctl.admin.declare import Admin
from salvusctl.alerts.declare import AlertRule
from salvusctl.cluster import Cluster
from salvusctl.host import Host
from salvusctl.monitor.declare import Monitor
from salvusctl.supervisor.declare import Deploy, Probe, Ready

var = os.environ.get("SALVUS_VAR", "var")
address = os.environ.get("SALVUS_ADDRESS", "127.0.0.1")

host = Host(name=os.environ.get("SALVUS_HOST_NAME"),
            store=os.environ.get("SALVUS_STORE", "sqlite:" + os.path.join(var, "salvus.db")), var=var)
host.add(Deploy(
    "worker",
    command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
    numprocs=2,
    port=int(os.environ.get("SALVUS_WORKER_PORT", "8001")),  # worker:0 on 8001, worker:1 on 8002
    env={"SALVUS_WORKER_BIND": address},  # reachable by the front-ends, not only on loopback
    probe=Probe(kind="tcp", interval=2, timeout=1, host=address),
    ready=Ready("probe", interval=0.1),  # RUNNING (and published) once it listens
))
host.add(Monitor(interval=5))
host.add(AlertRule("fatal", deploy="worker", severity="critical"))
host.add(AlertRule("rss", 200, seconds=30, deploy="worker"))
host.add(Cluster(address=address, heartbeat=float(os.environ.get("SALVUS_HEARTBEAT", "5"))))
host.add(Admin(os.environ.get("SALVUS_ADMIN", "unix:" + os.path.join(var, "admin.sock")),
               bootstrap_user="admin", users=os.environ.get("SALVUS_USERS"),
               allow_plain_http=bool(os.environ.get("SALVUS_ADMIN_PLAIN"))))
application = host.application()

# A front-end host: a balancer only, in front of the `worker` deploys that the cluster's worker hosts
# run (see worker.tac), with the admin over HTTPS (a self-signed certificate and an `admin` password
# printed at first start).  Every host of the cluster points at one PostgreSQL store; the `workers`
# group follows the ready instances each worker host publishes there (docs/cluster.md).
#
#   SALVUS_STORE=postgresql://salvus@db.lan:5432/salvus SALVUS_ADDRESS=10.0.0.10 \
#       twistd -n salvus --config tac/frontend.tac
#
# SALVUS_BACKENDS="10.0.0.11:8001,10.0.0.12:8001" adds fixed backends to the group as well (on the
# default SQLite store the host is a cluster of one, and those are its only backends).
import os

from salvusctl.admin.declare import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.cluster import Cluster
from salvusctl.host import Host

var = os.environ.get("SALVUS_VAR", "var")
backends = os.environ.get("SALVUS_BACKENDS", "")
address = os.environ.get("SALVUS_ADDRESS", "127.0.0.1")

host = Host(name=os.environ.get("SALVUS_HOST_NAME"),
            store=os.environ.get("SALVUS_STORE", "sqlite:" + os.path.join(var, "salvus.db")), var=var)
host.add(Cluster(address=address, heartbeat=float(os.environ.get("SALVUS_HEARTBEAT", "5"))))
host.add(Balanced(
    "web",
    listen=["tcp:" + os.environ.get("SALVUS_WEB_PORT", "8080")],
    groups=[Group("workers", [Server(a.strip()) for a in backends.split(",") if a.strip()],
                  cluster_deploy="worker",
                  scheduler="leastconns", health=HealthCheck(interval=2, timeout=1, rise=2, fall=3))],
    maxconn=5000, queue=500, queue_timeout=5, retries=3,
))
host.add(Admin(os.environ.get("SALVUS_ADMIN", "ssl:" + os.environ.get("SALVUS_ADMIN_PORT", "8443")),
               bootstrap_user="admin", users=os.environ.get("SALVUS_USERS"),
               allow_plain_http=bool(os.environ.get("SALVUS_ADMIN_PLAIN"))))
application = host.application()

# A front-end host: a balancer only, in front of the workers that other hosts run (see worker.tac),
# with the admin over HTTPS (a self-signed certificate and an `admin` password printed at first start).
#
#   SALVUS_BACKENDS="10.0.0.11:8001,10.0.0.11:8002,10.0.0.12:8001" twistd -n salvus --config tac/frontend.tac
import os

from salvusctl.admin.declaration import Admin
from salvusctl.balancer.declare import Balanced, Group, HealthCheck, Server
from salvusctl.host import Host

var = os.environ.get("SALVUS_VAR", "var")
backends = os.environ.get("SALVUS_BACKENDS", "127.0.0.1:8001,127.0.0.1:8002")

host = Host(name=os.environ.get("SALVUS_HOST_NAME"),
            store=os.environ.get("SALVUS_STORE", "sqlite:" + os.path.join(var, "salvus.db")), var=var)
host.add(Balanced(
    "web",
    listen=["tcp:" + os.environ.get("SALVUS_WEB_PORT", "8080")],
    groups=[Group("workers", [Server(a.strip()) for a in backends.split(",") if a.strip()],
                  scheduler="leastconns", health=HealthCheck(interval=2, timeout=1, rise=2, fall=3))],
    maxconn=5000, queue=500, queue_timeout=5, retries=3,
))
host.add(Admin("ssl:" + os.environ.get("SALVUS_ADMIN_PORT", "8443"), bootstrap_user="admin"))
application = host.application()

# A services host: PostgreSQL, Redis, memcached and an HAProxy in front of Redis, each RUNNING only
# once it is really up (its own sd_notify READY=1, or its port answering), dependents started after
# what they need, HAProxy's config rendered from a template with the ports Salvus allocated, a
# nightly pg_dump, monitored into SQLite, the admin on a unix socket.
#
#   twistd -n salvus --config tac/services.tac      # ports: SALVUS_PG_PORT … below
#   salvusctl --url unix:var/admin.sock status
import glob
import os
import shutil

from salvusctl.admin.declare import Admin
from salvusctl.backup.declare import Backup
from salvusctl.host import Host
from salvusctl.monitor.declare import Monitor
from salvusctl.supervisor.declare import Deploy, Probe, Ready

var = os.path.abspath(os.environ.get("SALVUS_VAR", "var"))
pg_port = int(os.environ.get("SALVUS_PG_PORT", "5433"))
redis_port = int(os.environ.get("SALVUS_REDIS_PORT", "6380"))
memcached_port = int(os.environ.get("SALVUS_MEMCACHED_PORT", "11212"))
haproxy_port = int(os.environ.get("SALVUS_HAPROXY_PORT", "6390"))
pg_bin = (sorted(glob.glob("/usr/lib/postgresql/*/bin")) or [""])[-1]
# Not under var/: that directory is private to Salvus (0700), and the postgres user must reach its
# data directory.
pg_data = os.path.abspath(os.environ.get("SALVUS_PG_DATA", os.path.join(os.path.dirname(var), "pgdata")))
as_root = os.geteuid() == 0

host = Host(store="sqlite:" + os.path.join(var, "salvus.db"), var=var)

# PostgreSQL refuses to run as root: as root, the data directory is made the postgres user's and
# the server runs as that user (setpriv execs, so the server keeps the instance's pid).  The first
# start runs initdb.  READY=1 comes from the postmaster once it accepts connections.
run_as = "setpriv --reuid=postgres --regid=postgres --init-groups -- " if as_root else ""
host.add(Deploy(
    "pg",
    command=["/bin/sh", "-c",
             (f"mkdir -p {pg_data} && " + (f"chown postgres: {pg_data} && " if as_root else "")
              + f"chmod 700 {pg_data} && "
              f"{{ [ -s {pg_data}/PG_VERSION ] || {run_as}{pg_bin}/initdb -D {pg_data} -A trust "
              f"-U postgres --no-sync >/dev/null; }} && "
              f"exec {run_as}{pg_bin}/postgres -D {pg_data} -p {{port}} -k {pg_data} "
              f"-c listen_addresses=127.0.0.1")],
    port=pg_port,
    ready=Ready("notify", timeout=120),  # crash recovery may take a while
    stopsignal="INT",  # PostgreSQL's fast shutdown
    stopwaitsecs=60,
    priority=10,
))

host.add(Deploy(
    "redis",
    command=[shutil.which("redis-server") or "redis-server", "--port", "{port}", "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--supervised", "systemd", "--dir", "{run_dir}"],
    port=redis_port,
    ready="notify",
    priority=10,
))

# memcached speaks no readiness protocol: RUNNING once its port answers.
host.add(Deploy(
    "memcached",
    command=[shutil.which("memcached") or "memcached", "-l", "127.0.0.1", "-p", "{port}", "-U", "0"]
    + (["-u", "nobody"] if as_root else []),
    port=memcached_port,
    probe=Probe(kind="tcp", interval=2),
    ready=Ready("probe", interval=0.05),
))

# HAProxy in master-worker mode (-Ws) reports READY=1 itself; its config is a template rendered
# into the instance's run directory before each start ({port} is its own port, Redis's is Python's).
HAPROXY_CFG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend redis_front
    bind 127.0.0.1:{port}
    default_backend redis_back
backend redis_back
    server redis 127.0.0.1:REDIS_PORT check inter 2s
""".replace("REDIS_PORT", str(redis_port))
host.add(Deploy(
    "haproxy",
    command=[shutil.which("haproxy") or "haproxy", "-Ws", "-db", "-f", "{run_dir}/haproxy.cfg"],
    port=haproxy_port,
    templates={"haproxy.cfg": HAPROXY_CFG},
    ready="notify",
    depends_on=["redis"],  # started once Redis is ready, stopped before it
    stopsignal="USR1",  # soft stop: finish the connections in flight
))

host.add(Monitor(interval=5))
host.add(Backup("pg", postgres=[f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"], deploys=["pg"],
                destination=os.path.join(var, "backups"), daily="03:00"))
host.add(Admin("unix:" + os.path.join(var, "admin.sock"), bootstrap_user="admin"))
application = host.application()

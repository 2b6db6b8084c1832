"""The built-in demo host that C{twistd -n salvus} runs with no --config.

One host, everything on it: two supervised demo workers, a balancer in front of them, the monitor
sampling into SQLite, two alert rules, and the admin over HTTPS (a self-signed certificate and a
generated password for C{admin}, made at first start: the fingerprint printed, the password in
C{var/admin/admin.password}) and on a unix socket for the CLI.
"""

from __future__ import annotations

import os
import sys

from salvusctl.errors import ConfigError
from salvusctl.host.declaring import Host

__all__ = ["defaultHost", "DEFAULT_WEB_PORT", "DEFAULT_ADMIN_PORT", "DEFAULT_ADMIN_HTTP_PORT"]

DEFAULT_WEB_PORT = 8080
DEFAULT_ADMIN_PORT = 8443
DEFAULT_ADMIN_HTTP_PORT = 9001  # supervisord's inet port: supervisorctl speaks no HTTPS


def _port(given: int | None, env: str, default: int) -> int:
    """The port given, else the environment's C{env}, else C{default}; a bad value is a ConfigError."""
    if given is None:
        text = os.environ.get(env)
        if not text:
            return default
        try:
            given = int(text)
        except ValueError:
            raise ConfigError(f"{env}={text!r} is not a port number")
    if isinstance(given, bool) or not isinstance(given, int) or not 0 < given < 65536:
        raise ConfigError(f"{env.lower().replace('salvus_', '')} must be a port 1..65535, not {given!r}")
    return given


def _workerEnv() -> dict[str, str]:
    """The worker is C{python -m salvusctl.demo.worker}: let it import this very salvusctl."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": root + (os.pathsep + path if path else "")}


def defaultHost(
    var: str = "var",
    web_port: int | None = None,
    admin_port: int | None = None,
    admin_http_port: int | None = None,
) -> Host:
    """The demo host, its state (SQLite store, logs, certificate, users) under C{var/}.

    @param web_port: the balanced service's port on 127.0.0.1 (default: env C{SALVUS_WEB_PORT},
        else 8080).
    @param admin_port: the admin's HTTPS port on 127.0.0.1 (default: env C{SALVUS_ADMIN_PORT},
        else 8443).
    @param admin_http_port: plain HTTP on 127.0.0.1 only, for C{supervisorctl} (default: env
        C{SALVUS_ADMIN_HTTP_PORT}, else 9001).
    """
    from salvusctl.admin.declare import Admin
    from salvusctl.alerts.declare import AlertRule
    from salvusctl.backup.declare import Backup
    from salvusctl.balancer.declare import Balanced, Group, HealthCheck
    from salvusctl.monitor.declare import Monitor
    from salvusctl.supervisor.declare import Deploy, Probe, Ready

    web_port = _port(web_port, "SALVUS_WEB_PORT", DEFAULT_WEB_PORT)
    admin_port = _port(admin_port, "SALVUS_ADMIN_PORT", DEFAULT_ADMIN_PORT)
    admin_http_port = _port(admin_http_port, "SALVUS_ADMIN_HTTP_PORT", DEFAULT_ADMIN_HTTP_PORT)
    var = os.path.abspath(var)
    host = Host(name=None, store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
    host.add(Deploy(
        "worker",
        command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
        env=_workerEnv(),
        numprocs=2,
        port="auto",  # a free port per instance, kept across its restarts
        probe=Probe(kind="tcp", interval=2.0, timeout=1.0),
        ready=Ready("probe", interval=0.1),  # RUNNING once it listens, not after a guessed delay
    ))
    host.add(Balanced(
        "web",
        listen=[f"tcp:{web_port}:interface=127.0.0.1"],
        groups=[Group("workers", deploy="worker", scheduler="leastconns",
                      health=HealthCheck(interval=2.0, timeout=1.0))],
    ))
    host.add(Monitor(interval=5))
    host.add(AlertRule("fatal", deploy="worker", severity="critical"))
    host.add(AlertRule("rss", 200, seconds=30, deploy="worker"))
    # Nightly snapshots of the demo's data directory (salvusctl backup run / restore).
    data = os.path.join(var, "data")
    os.makedirs(data, exist_ok=True)
    host.add(Backup("demo", destination=os.path.join(var, "backups"), paths={"data": data},
                    daily="03:00"))
    host.add(Admin(f"ssl:{admin_port}:interface=127.0.0.1", "unix:" + os.path.join(var, "admin.sock"),
                   f"tcp:{admin_http_port}:interface=127.0.0.1", bootstrap_user="admin"))
    return host

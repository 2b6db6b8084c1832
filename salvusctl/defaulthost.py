"""The built-in demo host that C{twistd -n salvus} runs with no --config."""

from __future__ import annotations

import os

from salvusctl.host import Host

__all__ = ["defaultHost"]


def defaultHost(var: str = "var") -> Host:
    """One host, embedded SQLite store under C{var/}.

    As the services land it grows into the full demo: a balancer in front of supervised workers,
    monitored into SQLite, with the admin over HTTPS.
    """
    var = os.path.abspath(var)
    host = Host(name=None, store="sqlite:" + os.path.join(var, "salvus.db"), var=var)
    return host

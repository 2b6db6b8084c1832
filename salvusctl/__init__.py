"""Salvus: one C{twistd -n salvus} per host runs its balancer, supervisor, monitor, alerts and admin."""

__version__ = "0.1.0"

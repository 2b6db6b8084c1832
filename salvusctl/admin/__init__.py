"""Salvus admin: XML-RPC that C{supervisorctl} understands, pages, metrics, over HTTPS.

A host's C{.tac} adds C{Admin("ssl:8443", "unix:var/admin.sock")}; see docs/admin.md.
"""

from salvusctl.admin.declare import Admin

__all__ = ["Admin"]

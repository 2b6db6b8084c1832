"""Salvus backup: database dumps, incremental file snapshots, recorded runs, restore and verify.

The public face for C{.tac} files is L{Backup} and L{Retention}; the service, XML-RPC and CLI live
in their own modules (C{service}, C{rpc}, C{cli}).
"""

from salvusctl.backup.declare import Backup
from salvusctl.backup.retention import Retention

__all__ = ["Backup", "Retention"]

"""The C{backup.*} XML-RPC namespace: the backup service's own L{BackupXMLRPC}, behind the admin's
authentication and roles.

The backup package publishes its verbs as a C{twisted.web.xmlrpc.XMLRPC} resource; the admin's
C{/RPC2} dispatches through L{Namespace}s (role check, the argument check read from each verb's
type hints, one-line faults), so this adapter lists that resource's methods as a namespace:
reading (C{status}, C{list}, C{log}) is for viewers, acting (C{run}, C{verify}, C{restore}) needs
the operator role.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from salvusctl.admin.rpcbase import Namespace
from salvusctl.admin.state import AdminState

__all__ = ["BackupNamespace", "OPERATOR_VERBS"]

OPERATOR_VERBS = frozenset({"run", "verify", "restore"})


class BackupNamespace(Namespace):
    """C{backup.run|status|list|log|verify|restore} from a L{salvusctl.backup.rpc.BackupXMLRPC}."""

    def __init__(self, state: AdminState, service: Any):
        super().__init__(state)
        from salvusctl.backup.rpc import BackupXMLRPC

        self.resource = BackupXMLRPC(service)

    def methods(self) -> dict[str, Callable]:
        out = {}
        for attr in dir(self.resource):
            if not attr.startswith("xmlrpc_"):
                continue
            bound = getattr(self.resource, attr)

            @functools.wraps(bound)
            def method(*args, _bound=bound):
                return _bound(*args)

            name = attr[len("xmlrpc_"):]
            if name in OPERATOR_VERBS:
                method.requiresOperator = True
            out[name] = method
        return out

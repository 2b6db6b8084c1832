"""The C{backup.*} XML-RPC namespace: the backup service's own L{BackupXMLRPC}, behind the admin's
authentication and roles.

The backup package publishes its verbs as a C{twisted.web.xmlrpc.XMLRPC} resource; the admin's
C{/RPC2} dispatches through L{Namespace}s (role check, argument check, one-line faults), so this
adapter lists that resource's methods as a namespace: reading (C{status}, C{list}, C{log}) is for
viewers, acting (C{run}, C{verify}, C{restore}) needs the operator role.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.rpcbase import Namespace, expectInt, expectStr
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
            name = attr[len("xmlrpc_"):]
            bound = getattr(self.resource, attr)

            checks = _argumentChecks(bound)

            @functools.wraps(bound)
            def method(*args, _bound=bound, _checks=checks):
                if len(args) > len(_checks):
                    raise rpcFault(Faults.BAD_ARGUMENTS,
                                   f"takes at most {len(_checks)} arguments, {len(args)} given")
                for value, (what, check) in zip(args, _checks, strict=False):
                    check(value, what)
                return _bound(*args)

            if name in OPERATOR_VERBS:
                method.requiresOperator = True
            out[name] = method
        return out


def _expectBool(value: Any, what: str) -> bool:
    """C{value} if it is a boolean, else BAD_ARGUMENTS naming C{what}."""
    if not isinstance(value, bool):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be a boolean, not {type(value).__name__}")
    return value


_CHECKS: dict[Any, Callable[[Any, str], Any]] = {str: expectStr, int: expectInt, bool: _expectBool}


def _argumentChecks(bound: Callable) -> list[tuple[str, Callable[[Any, str], Any]]]:
    """One (name, check) per parameter of a backup verb, read from its type hints.

    The backup verbs are served from the backup package's own resource; their arguments are
    checked here, once, the way every other namespace checks its own, so that a wrong type is a
    BAD_ARGUMENTS fault naming the argument rather than an error deep inside the backup service.
    """
    hints = typing.get_type_hints(bound)
    checks = []
    for param in inspect.signature(bound).parameters.values():
        check = _CHECKS.get(hints.get(param.name), lambda value, what: value)
        checks.append((param.name, check))
    return checks

"""What every XML-RPC namespace of the admin shares: argument checks, the operator mark, the
conversion of results to marshallable data and of errors to one-line Faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.xmlrpc import Fault

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.state import AdminState

__all__ = ["Namespace", "operator", "plain", "toFault", "expectStr", "expectInt", "expectNumber"]

log = Logger()

_MAX_INT = 2**31 - 1


def operator(fn: Callable) -> Callable:
    """Mark an XML-RPC method as an action: only operators may call it."""
    fn.requiresOperator = True
    return fn


def plain(value: Any) -> Any:
    """Make C{value} marshallable: tuples to lists, keys to str, huge ints to float.

    Subclasses of int, str and float (the supervisor's C{ProcessState}, enums of other services)
    become the plain type: C{xmlrpc.client} refuses to marshal them.
    """
    if isinstance(value, bool) or value is None:
        return bool(value) if value is not None else None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        value = int(value)
        return value if -_MAX_INT - 1 <= value <= _MAX_INT else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def expectStr(value: Any, what: str) -> str:
    """C{value} if it is a string, else BAD_ARGUMENTS naming C{what}."""
    if not isinstance(value, str):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be a string, not {type(value).__name__}")
    return value


def expectInt(value: Any, what: str) -> int:
    """C{value} if it is an integer (not a boolean), else BAD_ARGUMENTS naming C{what}."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be an integer, not {type(value).__name__}")
    return value


def expectNumber(value: Any, what: str) -> float:
    """C{value} as a float if it is a number, else BAD_ARGUMENTS naming C{what}."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{what} must be a number, not {type(value).__name__}")
    return float(value)


class Namespace:
    """A group of XML-RPC methods (C{xmlrpc_NAME}) sharing the admin state."""

    def __init__(self, state: AdminState):
        self.state = state

    def methods(self) -> dict[str, Callable]:
        """The published methods by their name within the namespace."""
        return {
            name[len("xmlrpc_") :]: getattr(self, name) for name in dir(self) if name.startswith("xmlrpc_")
        }


def toFault(failure) -> Fault:
    """Any failure as a one-line Fault (unexpected errors are logged with their traceback)."""
    value = failure.value
    if isinstance(value, Fault):
        return value
    if isinstance(value, KeyError):
        return rpcFault(Faults.BAD_NAME, str(value.args[0]) if value.args else "unknown name")
    if isinstance(value, ValueError):
        return rpcFault(Faults.BAD_ARGUMENTS, str(value))
    log.failure("XML-RPC method failed", failure)
    return rpcFault(Faults.FAILED, f"{type(value).__name__}: {value}")

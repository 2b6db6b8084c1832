"""What every XML-RPC namespace of the admin shares: the operator mark, the conversion of results
to marshallable data and the one convention for errors.

The convention: a verb answers with a L{Fault} from L{salvusctl.admin.faults} (one table,
supervisord's codes plus Salvus's own).  Where a verb calls a service, it goes through
L{serviceCall}, which turns the errors that service's interface documents into Faults: a
C{KeyError} for an unknown name is C{BAD_NAME}, a C{ValueError} for a refused value
C{BAD_ARGUMENTS}, and any further documented error as the verb names it.  Anything else reaching
the dispatcher is a bug: L{toFault} logs it with its traceback and answers a generic C{FAILED},
whatever its type, so a stray C{KeyError} is never mistaken for "no such name".  Argument types
are checked before the verb runs, from its type hints (L{salvusctl.admin.verbs})."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.xmlrpc import Fault

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.state import AdminState

__all__ = ["Namespace", "operator", "plain", "toFault", "serviceCall"]

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


class Namespace:
    """A group of XML-RPC methods (C{xmlrpc_NAME}) sharing the admin state."""

    def __init__(self, state: AdminState):
        self.state = state

    def methods(self) -> dict[str, Callable]:
        """The published methods by their name within the namespace."""
        return {
            name[len("xmlrpc_") :]: getattr(self, name) for name in dir(self) if name.startswith("xmlrpc_")
        }


def toFault(failure, path: str = "") -> Fault:
    """A verb's failure as the Fault to answer.

    A Fault is the verb's answer and passes unchanged.  Anything else is a bug (a service's
    documented errors were turned into Faults by L{serviceCall} where the verb called it): it is
    logged with its traceback and answered with a generic C{FAILED} that names the verb and the
    error's type only, so the caller learns it was not their fault and the operator finds the
    traceback in the host's log.
    """
    value = failure.value
    if isinstance(value, Fault):
        return value
    where = path or "XML-RPC method"
    log.failure("{where} failed unexpectedly", failure, where=where)
    return rpcFault(Faults.FAILED, f"internal error in {where} ({type(value).__name__}; see the host log)")


#: The errors every service interface documents: an unknown name, a refused value.
SERVICE_ERRORS: Mapping[type[BaseException], int] = {
    KeyError: Faults.BAD_NAME,
    ValueError: Faults.BAD_ARGUMENTS,
}


def serviceCall(fn: Callable, *args: Any, errors: Mapping[type[BaseException], int] | None = None
                ) -> defer.Deferred:
    """Call a service method; the errors its interface documents become Faults with their message.

    C{errors} adds (or overrides) documented errors of this service, by class; the first class
    (in order: C{errors}, then L{SERVICE_ERRORS}) the error is an instance of gives the code.
    Only errors raised by this call are converted: a C{KeyError} in the verb's own code stays a
    bug for L{toFault}.
    """
    table = {**(errors or {}), **{k: v for k, v in SERVICE_ERRORS.items() if k not in (errors or {})}}

    def failed(failure):
        if failure.check(Fault):
            return failure
        for cls, code in table.items():
            if failure.check(cls):
                value = failure.value
                if isinstance(value, KeyError) and value.args:
                    text = str(value.args[0])
                else:
                    text = str(value)
                raise rpcFault(code, text)
        return failure

    return defer.maybeDeferred(fn, *args).addErrback(failed)

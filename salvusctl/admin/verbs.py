"""A verb's arguments, declared once: by its type hints.

Every published XML-RPC method (C{xmlrpc_NAME} of a L{salvusctl.admin.rpcbase.Namespace}) writes
its argument and result types as ordinary Python type hints::

    @operator
    def xmlrpc_balancerSetWeight(self, service: str, group: str, host: str, weight: int) -> Reply[bool]:
        \"\"\"Change a host's weight

        @param service the balanced service
        ...
        @return True unless error
        \"\"\"

L{verbSchema} reads them once, when the admin's root is built, and the dispatcher uses the one
schema three ways: to check each call's arguments (a wrong count is C{INCORRECT_PARAMETERS}, a
wrong type C{BAD_ARGUMENTS} naming the argument, before the verb runs), to answer
C{system.methodSignature}, and to write the types into C{system.methodHelp} (the docstring says
what each argument means, the hints say its type, so the two cannot disagree).  A verb whose
parameter or result has no hint, or a hint with no XML-RPC type, is refused when the root is
built: no verb can go unchecked.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from twisted.internet.defer import Deferred

from salvusctl.admin.faults import Faults, rpcFault

__all__ = ["Reply", "VerbSchema", "Param", "verbSchema", "XMLRPC_TYPES"]

T = TypeVar("T")

#: What a verb returns: its value, or a Deferred firing with it.
Reply = Union[T, Deferred[T]]  # noqa: UP007 (a generic alias needs the Union form)

#: Python type -> XML-RPC type name (as C{system.methodSignature} spells it).
XMLRPC_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "int",
    float: "double",
    str: "string",
    list: "array",
    dict: "struct",
    xmlrpclib.Binary: "base64",
}

_WHAT = {
    "boolean": "a boolean",
    "int": "an integer",
    "double": "a number",
    "string": "a string",
    "array": "an array",
    "struct": "a struct",
    "base64": "base64 data",
}


@dataclass(frozen=True)
class Param:
    """One argument of a verb: its name, the XML-RPC types it accepts, its default."""

    name: str
    xmltypes: tuple[str, ...]
    nullable: bool
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def check(self, value: Any) -> Any:
        """C{value} if it has one of the accepted types (an int given for a double becomes a
        float), else C{BAD_ARGUMENTS} naming the argument."""
        if value is None and self.nullable:
            return value
        for xmltype in self.xmltypes:
            if _matches(xmltype, value):
                return float(value) if xmltype == "double" else value
        what = " or ".join(_WHAT[t] for t in self.xmltypes)
        raise rpcFault(Faults.BAD_ARGUMENTS, f"{self.name} must be {what}, not {_typeName(value)}")


def _matches(xmltype: str, value: Any) -> bool:
    if isinstance(value, bool):
        return xmltype == "boolean"
    if xmltype == "double":
        return isinstance(value, (int, float))
    python = next(k for k, v in XMLRPC_TYPES.items() if v == xmltype)
    return isinstance(value, python)


def _typeName(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


@dataclass(frozen=True)
class VerbSchema:
    """The checked shape of one verb: its parameters (the request excepted) and result type."""

    params: tuple[Param, ...]
    returns: str
    takesRequest: bool
    doc: str

    def usage(self) -> str:
        """C{(name, wait=True)}: the arguments as an INCORRECT_PARAMETERS fault shows them."""
        return "(" + ", ".join(
            p.name if p.required else f"{p.name}={p.default!r}" for p in self.params) + ")"

    def check(self, path: str, args: tuple) -> tuple:
        """The checked arguments; INCORRECT_PARAMETERS for a wrong count, BAD_ARGUMENTS for a
        wrong type (naming the argument)."""
        required = sum(1 for p in self.params if p.required)
        if not required <= len(args) <= len(self.params):
            raise rpcFault(Faults.INCORRECT_PARAMETERS,
                           f"{path}{self.usage()}: got {len(args)} argument(s)")
        return tuple(p.check(v) for p, v in zip(self.params, args, strict=False))

    def signature(self) -> list[str]:
        """C{system.methodSignature}'s answer: the result type, then each parameter's."""
        return [self.returns] + [p.xmltypes[0] for p in self.params]

    def help(self) -> str:
        """The docstring with each C{@param}/C{@return} line given its type from the hints."""
        byName = {p.name: p for p in self.params}

        def param(match: re.Match) -> str:
            p = byName.get(match.group(1))
            return f"@param {p.xmltypes[0]} {p.name}" if p is not None else match.group(0)

        text = re.sub(r"@param\s+(\w+)", param, self.doc)
        return re.sub(r"@return\b", f"@return {self.returns}", text)

    def documentedParams(self) -> list[str]:
        """The parameter names the docstring describes (to check it against the hints)."""
        return re.findall(r"@param\s+(\w+)", self.doc)


def verbSchema(method: Callable) -> VerbSchema:
    """The schema of a published method, read from its type hints; TypeError when one is missing.

    C{request} (for methods marked C{takesRequest}) is the caller's HTTP request, not an argument.
    """
    target = inspect.unwrap(method)
    name = getattr(target, "__qualname__", repr(target))
    try:
        hints = typing.get_type_hints(target)
    except Exception as e:
        raise TypeError(f"{name}: its type hints cannot be read: {e}") from e
    takesRequest = bool(getattr(method, "takesRequest", False))
    params = []
    for p in inspect.signature(target).parameters.values():
        if p.name == "self" or (takesRequest and p.name == "request"):
            continue
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"{name}: XML-RPC arguments are positional; {p.name} is not")
        if p.name not in hints:
            raise TypeError(f"{name}: parameter {p.name} has no type hint (the RPC check reads it)")
        xmltypes, nullable = _xmlTypes(hints[p.name], f"{name}: parameter {p.name}")
        params.append(Param(p.name, xmltypes, nullable, p.default))
    if "return" not in hints:
        raise TypeError(f"{name}: no return type hint (system.methodSignature reads it)")
    returns, _ = _xmlTypes(_unwrapReply(hints["return"]), f"{name}: result")
    return VerbSchema(tuple(params), returns[0], takesRequest, inspect.getdoc(method) or "")


def _unwrapReply(hint: Any) -> Any:
    """C{X} for C{Deferred[X]} and C{X | Deferred[X]} (L{Reply})."""
    if typing.get_origin(hint) is Deferred:
        return typing.get_args(hint)[0]
    if typing.get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if (typing.get_origin(a) or a) is not Deferred]
        if len(rest) < len(typing.get_args(hint)):
            return Union[tuple(rest)] if len(rest) > 1 else rest[0]  # noqa: UP007
    return hint


def _xmlTypes(hint: Any, what: str) -> tuple[tuple[str, ...], bool]:
    """(XML-RPC type names, None accepted) for a hint: C{str}, C{int | str}, C{dict | None} …"""
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = typing.get_args(hint)
    else:
        members = (hint,)
    nullable = type(None) in members
    names = []
    for member in members:
        if member is type(None):
            continue
        base = typing.get_origin(member) or member
        if base not in XMLRPC_TYPES:
            raise TypeError(f"{what}: {member!r} has no XML-RPC type (use one of "
                            f"{', '.join(t.__name__ for t in XMLRPC_TYPES)})")
        names.append(XMLRPC_TYPES[base])
    if not names:
        raise TypeError(f"{what}: None alone is no XML-RPC type")
    return tuple(names), nullable

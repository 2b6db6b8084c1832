"""A host's declared config as plain data, so it can be read in one process and compared in another.

Reading a C{.tac} file runs the code in it.  The running host must not do that for a read-only
question ("what differs?"), so L{salvusctl.host.reader} runs C{python -m salvusctl.host.loading FILE}
in a child process, which loads the file with L{salvusctl.host.loading.loadHost}, validates it and
writes the model L{describe} makes of it as JSON.  The host wraps that model in a L{DeclaredHost},
which answers the questions L{salvusctl.host.reload.HostReloader.diff} asks of a L{Host}.

Stdlib only (and the components table, which imports nothing): the model is data.

What the model keeps of each declaration is what the diff reads, exactly:

  - a deploy: its name, group, start fields, and the L{digest} of its C{spec()} (the tuple whose
    inequality makes C{SupervisorService.reload} restart it);
  - a balanced service: its C{asData()}, the data C{BalancerService.diff} compares;
  - every declaration: the L{digest} of its whole value, for components compared by value.

A digest is computed by the same code on both sides, over a canonical encoding that reads data
and calls none of a value's own methods (no C{repr}, no C{__eq__}): plain values as they are,
containers item by item, dataclasses and objects through their fields, callables by qualified
name and a hash of their bytecode.  Values it cannot see into (objects without fields) count by
their type alone.  Applying a config never relies on digests: it loads the file in-process, as an
operator's act, and compares the declarations themselves.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
from collections.abc import Mapping
from typing import Any

from salvusctl.host.components import component as _component
from salvusctl.host.components import resolve as _resolve

__all__ = ["describe", "digest", "specDigest", "declarationDigest", "Declared", "DeclaredHost",
           "describeDeploy", "describeBalanced", "MODEL_VERSION"]

MODEL_VERSION = 1
_MAX_DEPTH = 12


def _typeName(value: Any) -> str:
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _code(code: types.CodeType, depth: int) -> Any:
    consts = [_code(c, depth + 1) if isinstance(c, types.CodeType) else _encode(c, depth + 1, set())
              for c in code.co_consts]
    return {"bytecode": code.co_code.hex(), "consts": consts, "names": list(code.co_names)}


def _encode(value: Any, depth: int, seen: set[int]) -> Any:
    """A JSON-able canonical form of C{value} that reads its data and calls none of its methods."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if depth > _MAX_DEPTH:
        return {"type": _typeName(value)}
    if isinstance(value, enum.Enum):
        return {"enum": f"{_typeName(value)}.{value.name}"}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, type):
        return {"class": _typeName(value)}
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        function = getattr(value, "__func__", value)
        out: dict[str, Any] = {"callable": f"{getattr(function, '__module__', '')}."
                                           f"{getattr(function, '__qualname__', '')}"}
        code = getattr(function, "__code__", None)
        if code is not None:
            out["code"] = _code(code, depth)
        return out
    if id(value) in seen:
        return {"cycle": _typeName(value)}
    seen = seen | {id(value)}
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return {"type": _typeName(value)}
        pairs = sorted((_key(k, depth, seen), _encode(v, depth + 1, seen)) for k, v in items)
        return {"map": [list(p) for p in pairs]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, depth + 1, seen) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(json.dumps(_encode(v, depth + 1, seen), sort_keys=True) for v in value)}
    if dataclasses.is_dataclass(value):
        fields = {f.name: _encode(getattr(value, f.name, None), depth + 1, seen)
                  for f in dataclasses.fields(value)}
        return {"type": _typeName(value), "fields": fields}
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict):
        return {"type": _typeName(value),
                "fields": {str(k): _encode(v, depth + 1, seen) for k, v in sorted(attrs.items())}}
    return {"type": _typeName(value)}


def _key(key: Any, depth: int, seen: set[int]) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(_encode(key, depth + 1, seen), sort_keys=True)


def digest(value: Any) -> str:
    """A stable hash of C{value}'s canonical encoding: equal in any process for equal configs."""
    text = json.dumps(_encode(value, 0, set()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def specDigest(deploy: Any) -> str:
    """The digest of a deploy's C{spec()}; a L{Declared} deploy carries the one its reader made."""
    if isinstance(deploy, Declared):
        return deploy.spec_digest
    return digest(deploy.spec())


def declarationDigest(declaration: Any) -> str:
    """The digest of a whole declaration (for components compared by value)."""
    if isinstance(declaration, Declared):
        return declaration.digest
    return digest(declaration)


def _label(declaration: Any, component: str) -> str:
    return str(getattr(declaration, "name", None) or component)


def describeDeploy(declaration: Any) -> dict[str, Any]:
    """The supervisor's model fields of a deploy: its spec digest and what C{supervisorctl avail}
    and the process-group verbs read (a C{SupervisorSettings} has no C{spec()}: none)."""
    if not callable(getattr(declaration, "spec", None)):
        return {}
    return {
        "spec": specDigest(declaration),
        "config": {
            "group": str(getattr(declaration, "groupName", declaration.name)),
            "numprocs": int(getattr(declaration, "numprocs", 1)),
            "autostart": bool(getattr(declaration, "autostart", True)),
            "priority": int(getattr(declaration, "priority", 999)),
            "command": " ".join(str(a) for a in getattr(declaration, "command", ())),
            "directory": str(getattr(declaration, "cwd", None) or ""),
            "process_name": getattr(declaration, "process_name", None),
        },
    }


def describeBalanced(declaration: Any) -> dict[str, Any]:
    """The balancer's model field of a balanced service: the C{asData()} its diff compares."""
    if not callable(getattr(declaration, "asData", None)):
        return {}
    return {"data": declaration.asData()}


def _entry(declaration: Any) -> dict[str, Any]:
    component = str(declaration.component)
    entry: dict[str, Any] = {"component": component, "label": _label(declaration, component),
                             "digest": declarationDigest(declaration)}
    if getattr(declaration, "name", None) is not None:
        entry["name"] = str(declaration.name)
    row = _component(component)
    if row is not None and row.describe is not None:
        entry.update(_resolve(row.describe)(declaration))
    return entry


def describe(host: Any, sources: list[str] | None = None) -> dict[str, Any]:
    """The model of a validated L{Host}: JSON-able, what L{DeclaredHost} reads back.

    @param sources: the files the config was read from (the C{.tac} and what it imported), so the
        reader can tell when a cached model is stale.
    """
    return {
        "version": MODEL_VERSION,
        "name": host.name,
        "store_url": host.store_url,
        "var_dir": host.var_dir,
        "declarations": [_entry(d) for d in host.declarations()],
        "sources": list(sources or []),
    }


class Declared:
    """A declaration as the model keeps it: what the diff reads, with the fields a L{Host}'s
    declaration offers to it (C{component}, C{name}, C{spec_digest}, C{asData()} …)."""

    def __init__(self, entry: dict[str, Any]):
        self.component: str = entry["component"]
        self.label: str = entry["label"]
        self.digest: str = entry["digest"]
        self.name: str | None = entry.get("name")
        self.spec_digest: str = entry.get("spec", "")
        config = entry.get("config") or {}
        self.groupName: str = config.get("group") or self.name or ""
        self.numprocs: int = config.get("numprocs", 1)
        self.autostart: bool = config.get("autostart", True)
        self.priority: int = config.get("priority", 999)
        self.command: str = config.get("command", "")
        self.directory: str = config.get("directory", "")
        self._config = config
        self._data = entry.get("data")

    def asData(self) -> dict:
        if self._data is None:
            raise TypeError(f"{self.component} declaration {self.label!r} has no balancer data")
        return self._data

    def instanceNames(self) -> list[str]:
        from salvusctl.supervisor.names import processNames

        template = (self._config or {}).get("process_name")
        return processNames(self.name or "", self.numprocs, template, self.groupName)

    def __repr__(self) -> str:
        return f"<Declared {self.component} {self.label!r} {self.digest[:12]}>"


class DeclaredHost:
    """The model of a host read in another process, answering as a L{Host} does for the diff."""

    def __init__(self, model: dict[str, Any]):
        if not isinstance(model, dict) or model.get("version") != MODEL_VERSION:
            raise ValueError("not a declared-host model of this version")
        self.name: str = model["name"]
        self.store_url: str = model["store_url"]
        self.var_dir: str = model["var_dir"]
        self.sources: list[str] = list(model.get("sources") or [])
        self._declarations = [Declared(e) for e in model["declarations"]]

    def declarations(self, component: str | None = None) -> list[Declared]:
        return [d for d in self._declarations if component in (None, d.component)]

    def validate(self) -> None:
        """Validated already, in the process that read it."""

"""The composition API that a host's C{.tac} file calls: C{from salvusctl.host import Host}.

The package keeps the composition core apart by job:

  - L{declaring}: L{Host} (add, validate, where each declaration was made);
  - L{components}: the one table naming every component, its builder, reloader and model entry;
  - L{building}: L{build}, L{HostContext}, L{HostService};
  - L{loading}: L{loadHost}, a C{.tac} file into a L{Host} with one-line errors;
  - L{model}: a declared host as plain data and its digests (stdlib only);
  - L{reader}: reading a config in a child process;
  - L{reload}: re-reading a running host's config and applying the difference;
  - L{demo}: the built-in demo host.

Importing the package loads only L{declaring} (a declaration module may import it without
loading Twisted's application machinery or any service); the building names load on first use.
"""

from __future__ import annotations

from typing import Any

from salvusctl.host.declaring import Host, declaringOnly, iterEndpoints

__all__ = ["Host", "HostContext", "HostService", "StoreService", "BUILD_ORDER", "build", "declaringOnly",
           "iterEndpoints"]


def application(host: Host, reactor=None):
    """For C{twistd -ny host.tac}: an Application holding C{host} (see L{Host.application})."""
    return host.application(reactor)


_BUILDING = ("BUILD_ORDER", "HostContext", "HostService", "StoreService", "build")


def __getattr__(name: str) -> Any:
    if name in _BUILDING:
        from salvusctl.host import building

        return getattr(building, name)
    raise AttributeError(f"module 'salvusctl.host' has no attribute {name!r}")

"""Reloading a running host's configuration: re-read it, compare it with what runs, apply the rest.

A L{HostReloader} re-reads the host's config through C{host.source} (the C{.tac} file again, or the
default host again) into a new L{Host}, validates all of it before anything changes (a bad file is
one L{ConfigError} line naming the file and line, and nothing is touched), and compares it with
the running host component by component, each through the C{reload} module its row of
L{salvusctl.host.components.COMPONENTS} names.  There are no special cases here: every
component owns its reload module with

  - C{entries(context, running, declared) -> {entry name: entry}}: what differs between the
    declarations the component runs with and the file's, as named entries (usually one, named
    after the component; the supervisor adds C{supervisor-settings}), each
    C{{added, changed, removed}} with names, and C{restart: True} plus a C{reason} for what it
    cannot apply live;
  - C{applyEntries(context, declared, live)}: apply those of its entries that need no restart (a
    Deferred or a plain value).

A component without a reload module, and the host's store URL, name and state directory, are
reported with C{restart: True} ("restart the host to apply") and left alone.

L{HostReloader.reconcile} applies the live entries component by component, in start order.  An
entry marked C{restart} is never half applied; a component whose apply fails is logged with its
traceback and its entries say C{failed}, and the other components are still applied.

A host read from a file is read again out of process for a diff (L{HostReloader.reread}: a
L{salvusctl.host.model.DeclaredHost} from L{salvusctl.host.reader}); the file runs in this process
only when an operator applies it (L{HostReloader.loadForApply}), after a child has read it.  Such a
model carries digests, not the declarations themselves: a component whose row says C{model=True}
(the supervisor, the balancer) reads it itself; for the others this module names the declarations
that differ (by name) and leaves to the apply, which has the real declarations, the decision of
what is applied live and what needs a restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from salvusctl.errors import ConfigError, OperationFailed
from salvusctl.host.components import COMPONENTS, component, resolve, wire
from salvusctl.host.lean import RESTART_REASON as TLS_REASON
from salvusctl.host.lean import tlsBlocked
from salvusctl.host.model import Declared, declarationDigest

__all__ = ["HostReloader", "declarationsDiffer", "MODEL_NOTE", "HOST_REASON"]

log = Logger()

HOST_REASON = (
    "the store URL, host name and state directory are fixed at start: the store is open and every "
    "service writes through it"
)

MODEL_NOTE = (
    "read out of process: which of these changes apply live, and which need a restart, is decided "
    "when they are applied (salvusctl reconcile, SIGHUP)"
)

_ORDER = {c.name: i for i, c in enumerate(COMPONENTS)}


def _fromModel(declarations: list[Any]) -> bool:
    """Whether these declarations came from a config read out of process (digests only)."""
    return any(isinstance(d, Declared) for d in declarations)


def _empty() -> dict[str, Any]:
    return {"added": [], "changed": [], "removed": []}


def _same(a: Any, b: Any) -> bool:
    """Two declarations of a component that cannot be applied live are the same config."""
    if isinstance(a, Declared) or isinstance(b, Declared):
        return declarationDigest(a) == declarationDigest(b)
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return a == b
    try:
        return vars(a) == vars(b)
    except TypeError:
        return a == b


def declarationsDiffer(old: list[Any], new: list[Any]) -> bool:
    """Whether two declaration lists of one component describe different configs."""
    return len(old) != len(new) or not all(_same(a, b) for a, b in zip(old, new, strict=True))


def _label(declaration: Any, component: str) -> str:
    return str(getattr(declaration, "name", None) or component)


def _namedEntry(name: str, old: list[Any], new: list[Any]) -> dict[str, Any]:
    """C{{added, changed, removed}} by declaration name (the component's own when unnamed)."""
    olds = {_label(d, name): d for d in old}
    news = {_label(d, name): d for d in new}
    entry = _empty()
    entry["added"] = sorted(n for n in news if n not in olds)
    entry["removed"] = sorted(n for n in olds if n not in news)
    entry["changed"] = sorted(n for n in news if n in olds and not _same(olds[n], news[n]))
    if not any(entry[k] for k in ("added", "changed", "removed")):
        entry["changed"] = [name]  # same names, different order or count
    return entry


class HostReloader:
    """Re-reads a running host's config and applies the difference.

    @param host: the running L{Host} (its C{source} re-reads the config; its declarations are what
        the components were built from).
    @param context: its L{HostContext} (the built services by component name).
    """

    def __init__(self, host: Any, context: Any):
        self.host = host
        self.context = context
        self._busy = False
        # component -> the declarations a reload applied (the host's own until one does)
        self._running: dict[str, list[Any]] = {}
        self.reader = _outOfProcessReader(host, context)

    def running(self, component: str) -> list[Any]:
        """The declarations the running C{component} was built with or last reloaded to."""
        if component in self._running:
            return self._running[component]
        return self.host.declarations(component)

    def load(self) -> Any:
        """Read the config again into a new, validated L{Host}; L{ConfigError} when it is bad.

        A host composed in code (no C{source}) has nothing to re-read: its own declarations are the
        config, so the diff shows only what operators changed at run time (a host set down, a
        weight) and reconcile puts that back.
        """
        if self.host.source is None:
            return self.host
        new = self.host.source()
        new.validate()
        return new

    def diff(self, new: Any = None) -> dict[str, dict[str, Any]]:
        """The named entries C{{added, changed, removed}} (names) of the components that differ;
        entries that need a host restart carry C{restart: True}.  Reads the config (L{load})
        unless C{new} is given."""
        if new is None:
            new = self.load()
        return self._entries(new)[0]

    def _entries(self, new: Any) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """The diff, and which entry names each component gave."""
        out: dict[str, dict[str, Any]] = {}
        owners: dict[str, list[str]] = {}
        names = {d.component for d in self.host.declarations() + new.declarations()}
        for name in sorted(names, key=lambda n: (_ORDER.get(n, len(_ORDER)), n)):
            row = component(name)
            old, declared = self.running(name), new.declarations(name)
            if row is not None and row.tls and declared and tlsBlocked():
                # Checked before the component's reload module is imported: it may load TLS.
                entries = ({name: dict(_namedEntry(name, old, declared), restart=True,
                                       reason=TLS_REASON)}
                           if declarationsDiffer(old, declared) else {})
            elif row is None or row.reload is None:
                entries = ({name: dict(_namedEntry(name, old, declared), restart=True)}
                           if declarationsDiffer(old, declared) else {})
            elif _fromModel(declared) and not row.model:
                # Read out of process: digests, not declarations.  Name what differs; what of it
                # applies live is the component's reload module's call, made when applied.
                entries = ({name: dict(_namedEntry(name, old, declared), note=MODEL_NOTE)}
                           if declarationsDiffer(old, declared) else {})
            else:
                entries = resolve(row.reload).entries(self.context, old, declared)
            out.update(entries)
            owners[name] = list(entries)
        if (new.store_url, new.name, new.var_dir) != (self.host.store_url, self.host.name, self.host.var_dir):
            out["host"] = dict(_empty(), changed=["store/name/var"], restart=True, reason=HOST_REASON)
        return out, owners

    def reconcile(self) -> defer.Deferred:
        """Re-read the config and apply what can be applied live; fires with the L{diff} that was
        found (restart-needed entries included, untouched).  A bad config fails with
        L{ConfigError} before anything changes; a second reconcile while one runs is refused."""
        return self._exclusive(lambda: self.loadForApply().addCallback(self._apply))

    # -- reading out of process ------------------------------------------------------------------

    def read(self, fresh: bool = False) -> defer.Deferred:
        """Fires with the config to compare with: a L{DeclaredHost} read by a child process when
        the host came from a file (cached while the files are unchanged, unless C{fresh}), else
        the L{load}ed host (the default host or one composed in code: no user file runs)."""
        if self.reader is None:
            return defer.maybeDeferred(self.load)
        return self.reader.read(fresh)

    def reread(self) -> defer.Deferred:
        """Fires with the L{diff} between the config read again (out of process) and what runs."""
        return self.read().addCallback(self.diff)

    def staged(self) -> Any:
        """The config as last read out of process (what C{supervisorctl avail} lists), or None."""
        return None if self.reader is None else self.reader.last

    def loadForApply(self) -> defer.Deferred:
        """Fires with the new validated L{Host} to apply.  A file is first read by a child, so a
        config that fails or hangs is refused before any of it runs here; only then is it
        loaded in this process, to get the declarations themselves (commands, callables …)."""
        if self.reader is None:
            return defer.maybeDeferred(self.load)
        return self.reader.read(fresh=True).addCallback(lambda _: self.load())

    def applyTo(self, component: str, step: Any, load: bool = True) -> defer.Deferred:
        """Run C{step(new_host_or_None, service)} on one component's running service, as one
        reload: under L{reconcile}'s lock, after its read (C{load}: the config is read as for
        L{reconcile}; without it nothing is read and C{step} gets None).

        A partial reload of one component (C{supervisorctl add / remove}, one process group at a
        time: L{salvusctl.supervisor.reload.applyDeploys}) comes here, so there is one way a
        config reaches what runs and no component is named in this module.
        """
        service = self.context.services.get(component)
        if service is None:
            return defer.fail(ConfigError(f"this host runs no {component}"))

        def run():
            first = self.loadForApply() if load else defer.succeed(None)
            return first.addCallback(step, service)

        return self._exclusive(run)

    def _exclusive(self, step: Any) -> defer.Deferred:
        """Run C{step()} (a Deferred) unless another reload runs: one reload at a time."""
        if self._busy:
            return defer.fail(ConfigError("a reload is already in progress"))
        self._busy = True
        d = defer.maybeDeferred(step)

        def done(result):
            self._busy = False
            return result

        return d.addBoth(done)

    @defer.inlineCallbacks
    def _apply(self, new: Any):
        changes, owners = self._entries(new)
        for name, keys in owners.items():
            row = component(name)
            live = {k: changes[k] for k in keys if not changes[k].get("restart")}
            if row is None or row.reload is None or not live:
                continue
            log.info("reload: {component} {changes}", component=name, changes=live)
            try:
                module = resolve(row.reload)
                yield defer.maybeDeferred(module.applyEntries, self.context, new.declarations(name), live)
            except OperationFailed as e:
                # A reason the operator can act on (a program that went FATAL): one line.
                log.error("reload: applying the {component} changes failed: {reason}",
                          component=name, reason=str(e))
                for entry in live.values():
                    entry["failed"] = f"{type(e).__name__}: {e}"
            except Exception as e:
                log.failure("reload: applying the {component} changes failed", component=name)
                for entry in live.values():
                    entry["failed"] = f"{type(e).__name__}: {e}"
            else:
                if len(live) == len(keys):
                    self._running[name] = new.declarations(name)
        if any(not e.get("restart") for e in changes.values()):
            try:
                wire(self.context)
            except Exception:
                log.failure("reload: wiring the components after the reload failed")
        for name, entry in sorted(changes.items()):
            if entry.get("restart"):
                log.warn("reload: {component} changed; restart the host to apply it ({reason})",
                         component=name, reason=entry.get("reason", "not applied live"))
        return changes


def _outOfProcessReader(host: Any, context: Any) -> Any:
    """A L{ConfigReader} for a host read from a file, on the host's reactor; else None."""
    origin = getattr(host, "origin", None)
    reactor = getattr(context, "reactor", None)
    if not origin or not origin.get("config") or reactor is None or not hasattr(reactor, "spawnProcess"):
        return None
    from salvusctl.host.reader import ConfigReader

    return ConfigReader(reactor, origin["config"], store=origin.get("store"))

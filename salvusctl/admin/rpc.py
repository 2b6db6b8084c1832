"""XML-RPC at C{/RPC2}: dispatch, C{system.*}, and the namespaces (C{supervisor.*}, C{salvus.*},
C{salvus.cluster.*}, C{backup.*}).

Every call goes through L{RPCRoot.lookupProcedure}: the method is found, the caller's role is
checked (viewers read, operators act), the arguments are checked against the verb's type hints
(L{salvusctl.admin.verbs}: one schema per verb, read once, which also answers
C{system.methodSignature} and C{methodHelp}), and any error becomes a Fault with a one-line
message — never a traceback or a dropped connection.  A Fault raised by a verb is its answer; any
other exception is a bug: logged with its traceback, answered with a generic C{FAILED}
(L{salvusctl.admin.rpcbase.toFault}).
"""

from __future__ import annotations

import reprlib
import xmlrpc.client as xmlrpclib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.xmlrpc import XMLRPC, Fault

from salvusctl.admin.auth import currentUser
from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.rpcbase import Namespace, plain, toFault
from salvusctl.admin.state import AdminState
from salvusctl.admin.supervisorrpc import SupervisorNamespace
from salvusctl.admin.verbs import Reply, VerbSchema, verbSchema

__all__ = ["RPCRoot", "SystemNamespace", "MAX_MULTICALL", "auditArgs"]

log = Logger()

_XML_TYPES = (b"text/xml", b"application/xml")
MAX_MULTICALL = 1000


class SystemNamespace(Namespace):
    """supervisord's C{system.*}: introspection and multicall."""

    def __init__(self, state: AdminState, root: RPCRoot):
        super().__init__(state)
        self.root = root

    def xmlrpc_listMethods(self) -> Reply[list]:
        """Return an array listing the available method names

        @return An array of method names available (strings).
        """
        return sorted(self.root.allMethods())

    def _schema(self, name: str) -> VerbSchema:
        verb = self.root.verbs().get(name)
        if verb is None:
            raise rpcFault(Faults.SIGNATURE_UNSUPPORTED, name)
        return verb.schema

    def xmlrpc_methodHelp(self, name: str) -> Reply[str]:
        """Return a string showing the method's documentation

        @param name The name of the method.
        @return The documentation for the method name.
        """
        return self._schema(name).help()

    def xmlrpc_methodSignature(self, name: str) -> Reply[list]:
        """Return an array describing the method signature

        @param name The name of the method.
        @return An array describing types of the method's return value and params
        """
        return self._schema(name).signature()

    @defer.inlineCallbacks
    def xmlrpc_multicall(self, request, calls: list) -> Reply[list]:
        """Process an array of calls, and return an array of results

        @param calls An array of structs with keys methodName and params
        @return An array of results, one per call: its bare value or a fault struct

        supervisord's own docstring promises single-item arrays, but supervisord answers bare
        values, and supervisorctl and the other clients were written against what it answers.
        """
        if len(calls) > MAX_MULTICALL:
            raise rpcFault(
                Faults.BAD_ARGUMENTS, f"at most {MAX_MULTICALL} calls per multicall, not {len(calls)}"
            )
        results = []
        for call in calls:
            try:
                if not isinstance(call, dict) or not isinstance(call.get("methodName"), str):
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, "each call needs a string methodName")
                name = call["methodName"]
                params = call.get("params", [])
                if not isinstance(params, list):
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, f"{name}: params must be an array")
                if name == "system.multicall":
                    raise rpcFault(Faults.INCORRECT_PARAMETERS, "recursive system.multicall forbidden")
                value = yield self.root.lookupProcedure(name)(request, *params)
                results.append(value)
            except Fault as f:
                results.append({"faultCode": f.faultCode, "faultString": f.faultString})
        return results

    xmlrpc_multicall.takesRequest = True


class RPCRoot(XMLRPC):
    """The C{/RPC2} resource: dispatch, role checks, argument checks and fault conversion."""

    NOT_FOUND = Faults.UNKNOWN_METHOD
    FAILURE = Faults.FAILED

    def __init__(self, state: AdminState):
        super().__init__(allowNone=True)
        self.state = state
        self._verbs: dict[str, _Verb] | None = None
        from salvusctl.admin.salvusrpc import SalvusNamespace

        self.namespaces: dict[str, Namespace] = {
            "supervisor": SupervisorNamespace(state),
            "system": SystemNamespace(state, self),
            "salvus": SalvusNamespace(state),
        }
        from salvusctl.admin.clusterrpc import ClusterNamespace

        # Published on every host: one without Cluster(...) answers NO_SERVICE, not UNKNOWN_METHOD.
        self.namespaces["salvus.cluster"] = ClusterNamespace(state)
        backup = state.optional("backup")
        if backup is not None:
            from salvusctl.admin.backuprpc import BackupNamespace

            self.namespaces["backup"] = BackupNamespace(state, backup)

    def verbs(self) -> dict[str, _Verb]:
        """Every published method by its dotted name, with its schema (read once).

        A method whose type hints are missing or have no XML-RPC type raises TypeError here,
        when the admin is built, rather than going unchecked.
        """
        if self._verbs is None:
            out = {}
            for prefix, namespace in self.namespaces.items():
                for name, method in namespace.methods().items():
                    path = f"{prefix}.{name}"
                    out[path] = _Verb(path, method, verbSchema(method))
            self._verbs = out
        return self._verbs

    def allMethods(self) -> dict[str, Callable]:
        """Every published method by its dotted name."""
        return {path: verb.method for path, verb in self.verbs().items()}

    def listProcedures(self) -> list[str]:
        return sorted(self.allMethods())

    def lookupProcedure(self, procedurePath: Any) -> Callable:
        """A guarded callable C{(request, *args)} for a dotted method name."""
        if not isinstance(procedurePath, str):
            raise rpcFault(Faults.UNKNOWN_METHOD, "no method name")
        verb = self.verbs().get(procedurePath)
        if verb is None:
            raise rpcFault(Faults.UNKNOWN_METHOD, procedurePath)
        return verb

    def render(self, request):
        if request.method != b"POST":
            # answered here rather than by twisted.web's default error page
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"XML-RPC: POST text/xml to this URL\n"
        return super().render(request)

    def render_POST(self, request):
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type not in _XML_TYPES:
            request.setResponseCode(415)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"XML-RPC requests must be sent as text/xml\n"
        request.content.seek(0, 0)
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        try:
            args, path = xmlrpclib.loads(request.content.read(), use_datetime=self.useDateTime)
        except Exception as e:
            self._cbRender(rpcFault(Faults.BAD_REQUEST, f"malformed XML-RPC request: {e}"), request)
            return server.NOT_DONE_YET
        try:
            function = self.lookupProcedure(path)
        except Fault as f:
            self._cbRender(f, request)
            return server.NOT_DONE_YET
        failed: list = []
        request.notifyFinish().addErrback(failed.append)
        d = defer.maybeDeferred(function, request, *args)
        d.addErrback(self._ebRender)
        d.addCallback(self._cbRender, request, failed)
        return server.NOT_DONE_YET

    def _ebRender(self, failure):
        return toFault(failure)


class _Verb:
    """One published method and its schema; calling it is one guarded call: role check, argument
    check, result and error conversion."""

    def __init__(self, path: str, method: Callable, schema: VerbSchema):
        self.path = path
        self.method = method
        self.schema = schema

    def __call__(self, request: Any, *args: Any) -> defer.Deferred:
        user = currentUser(request)
        if user is None:
            return defer.fail(rpcFault(Faults.PERMISSION_DENIED, "not authenticated"))
        if getattr(self.method, "requiresOperator", False) and not user.canOperate:
            return defer.fail(
                rpcFault(
                    Faults.PERMISSION_DENIED,
                    f"{self.path} needs the operator role; {user.name} is a {user.role}",
                )
            )
        if getattr(self.method, "requiresOperator", False):  # attempts are audited, refused ones too
            log.info("{user} called {method}{args}", user=user.name, method=self.path, args=auditArgs(args))
        try:
            args = self.schema.check(self.path, args)
        except Fault as f:
            return defer.fail(f)
        call_args = (request, *args) if self.schema.takesRequest else args
        d = defer.maybeDeferred(self.method, *call_args)
        d.addCallbacks(plain, lambda f: defer.fail(toFault(f, self.path)))
        return d


_AUDIT = reprlib.Repr()
_AUDIT.maxlevel, _AUDIT.maxstring, _AUDIT.maxother = 4, 120, 120
_AUDIT.maxlist = _AUDIT.maxdict = _AUDIT.maxtuple = 20
_AUDIT_CHARS = 1000


def auditArgs(args: tuple) -> str:
    """The arguments of an audited call as one bounded line.

    A plain C{repr} of deeply nested or huge arguments raises (RecursionError) or makes a
    megabyte line, and the logger then drops the event: the call would leave no audit line.
    Here nesting, containers and strings are cut, and the whole line too.
    """
    try:
        text = _AUDIT.repr(tuple(args))
    except Exception as e:  # an argument whose repr fails still leaves the line
        text = f"(<arguments not shown: {type(e).__name__}>)"
    if len(text) > _AUDIT_CHARS:
        text = text[: _AUDIT_CHARS - 3] + "..."
    return text

"""One argument check per verb, read from its type hints; one fault convention.

What operators and scripts rely on: a wrong argument is refused before the verb runs, with a
message naming the argument; a bug in a verb is never disguised as "no such name"; the
introspection answers (C{system.methodSignature}, C{methodHelp}) are the checks themselves.
"""

from __future__ import annotations

import inspect
import typing
import xmlrpc.client as xmlrpclib

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.faults import Faults
from salvusctl.admin.rpc import RPCRoot
from salvusctl.admin.rpcbase import serviceCall
from salvusctl.admin.state import AdminOptions, AdminState
from salvusctl.admin.verbs import Reply, verbSchema
from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor
from tests.admin.helpers import HarnessTestCase

_XML = {bool: "boolean", int: "int", float: "double", str: "string", list: "array", dict: "struct",
        xmlrpclib.Binary: "base64"}


def _everyVerb() -> dict:
    """Every verb a host with every service publishes (backup included)."""
    clock = Clock()
    sup = FakeSupervisor(clock=clock)
    services = {"supervisor": sup, "balancer": FakeBalancer(), "monitor": FakeMonitor(sup),
                "alerts": FakeAlerts(), "backup": object()}
    state = AdminState(services=services, clock=clock, host_name="h", options=AdminOptions())
    return RPCRoot(state).verbs()


def _firstType(hint) -> str:
    """The XML-RPC type a hint names, read independently of the schema code."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Deferred:
        return _firstType(args[0])
    if args and typing.get_origin(hint) not in (list, dict):
        plain = [a for a in args if a is not type(None) and (typing.get_origin(a) or a) is not Deferred]
        return _firstType(plain[0])
    return _XML[typing.get_origin(hint) or hint]


class WrongArgumentTests(HarnessTestCase):
    def test_wrongTypeIsBadArgumentsNamingTheArgument(self):
        """A string where an integer belongs is BAD_ARGUMENTS saying which argument and why, and
        the balancer is not touched."""
        before = self.h.balancer.snapshot()
        fault = self.assertFault(
            self.call("salvus.balancerSetWeight", "www", "web", "127.0.0.1:8000", "heavy"),
            Faults.BAD_ARGUMENTS,
        )
        self.assertEqual(fault.faultString, "BAD_ARGUMENTS: weight must be an integer, not str")
        self.assertEqual(self.h.balancer.snapshot(), before)

    def test_everyNamespaceChecksTheSameWay(self):
        """supervisor.*, salvus.*, salvus.cluster.* and system.* refuse wrong types alike."""
        for method, params, text in [
            ("supervisor.startProcess", ("web:0", "yes"), "wait must be a boolean, not str"),
            ("supervisor.readProcessStdoutLog", ("web:0", 1.5, 10), "offset must be an integer, not float"),
            ("salvus.monitorHistory", ("web:0", "yesterday"), "since must be a number, not str"),
            ("salvus.cluster.ping", (7,), "host must be a string, not int"),
            ("salvus.balancerAddService", ("api", "tcp:80"), "listen must be an array, not str"),
            ("system.methodHelp", (None,), "name must be a string, not nil"),
        ]:
            fault = self.assertFault(self.call(method, *params), Faults.BAD_ARGUMENTS)
            self.assertIn(text, fault.faultString, method)

    def test_integerIsANumberButABooleanIsNot(self):
        """An int given for a double is accepted (as a float); True is not an integer."""
        self.assertIsInstance(self.call("salvus.monitorHistory", "web:0", -60), list)
        fault = self.assertFault(self.call("salvus.restartAll", True), Faults.BAD_ARGUMENTS)
        self.assertIn("batch must be an integer, not bool", fault.faultString)


class BugTests(HarnessTestCase):
    def test_keyErrorInsideAVerbIsLoggedAndGeneric(self):
        """A KeyError from the verb's own code is a bug: FAILED, logged with its traceback, never
        BAD_NAME (which would tell the operator the process does not exist)."""
        self.h.supervisor.instanceInfos = lambda: [{"statecode": 20}]  # no "name": the verb breaks
        fault = self.call("supervisor.getProcessInfo", "web:0")
        self.assertFault(fault, Faults.FAILED)
        self.assertEqual(
            fault.faultString,
            "FAILED: internal error in supervisor.getProcessInfo (KeyError; see the host log)")
        logged = self.flushLoggedErrors(KeyError)
        self.assertEqual(len(logged), 1)
        self.assertIn("xmlrpc_getProcessInfo", logged[0].getTraceback())

    def test_documentedKeyErrorOfAServiceIsBadName(self):
        """The services' interfaces raise KeyError for an unknown name: that, where the verb calls
        the service, is BAD_NAME with the service's message."""
        fault = self.call("salvus.balancerSetWeight", "www", "web", "ghost", 3)
        self.assertFault(fault, Faults.BAD_NAME)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_serviceCallConvertsOnlyItsOwnCall(self):
        """serviceCall converts the service's documented errors and passes everything else on."""

        def unknown():
            raise KeyError("no host 'x'")

        def other():
            raise RuntimeError("disk on fire")

        class Busy(Exception):
            pass

        def busy():
            raise Busy("running")

        f = self.failureResultOf(serviceCall(unknown)).value
        self.assertEqual((f.faultCode, f.faultString), (Faults.BAD_NAME, "BAD_NAME: no host 'x'"))
        self.failureResultOf(serviceCall(other), RuntimeError)
        f = self.failureResultOf(serviceCall(busy, errors={Busy: Faults.REFUSED})).value
        self.assertEqual(f.faultCode, Faults.REFUSED)


class IntrospectionTests(HarnessTestCase):
    def test_methodSignatureMatchesTheHints(self):
        """For every verb, system.methodSignature is [result, *parameters] as its hints say."""
        verbs = _everyVerb()
        self.assertIn("backup.restore", verbs)
        self.assertGreater(len(verbs), 70)
        for path, verb in verbs.items():
            target = inspect.unwrap(verb.method)
            hints = typing.get_type_hints(target)
            names = [p for p in inspect.signature(target).parameters if p not in ("self", "request")]
            expected = [_firstType(hints["return"])] + [_firstType(hints[n]) for n in names]
            self.assertEqual(verb.schema.signature(), expected, path)
        self.assertEqual(self.call("system.methodSignature", "supervisor.startProcess"),
                         ["boolean", "string", "boolean"])
        self.assertEqual(self.call("system.methodSignature", "salvus.balancerAddHost"),
                         ["boolean", "string", "string", "string", "int", "int", "string"])

    def test_helpDocumentsEachParameterWithItsType(self):
        """Each verb's docstring describes exactly its parameters; methodHelp adds their types."""
        for path, verb in _everyVerb().items():
            self.assertEqual(verb.schema.documentedParams(), [p.name for p in verb.schema.params], path)
        text = self.call("system.methodHelp", "salvus.balancerSetWeight")
        self.assertIn("@param int weight the new weight", text)
        self.assertIn("@param string service the balanced service", text)
        self.assertIn("@return boolean", text)


class SchemaTests(SynchronousTestCase):
    def test_unhintedVerbIsRefusedWhenBuilt(self):
        """A verb without hints cannot be published unchecked: the root refuses it when built."""

        def xmlrpc_loose(self, name) -> Reply[bool]:
            return True

        def xmlrpc_noResult(self, name: str):
            return True

        def xmlrpc_strange(self, name: set) -> Reply[bool]:
            return True

        with self.assertRaises(TypeError) as e:
            verbSchema(xmlrpc_loose)
        self.assertIn("parameter name has no type hint", str(e.exception))
        self.assertRaises(TypeError, verbSchema, xmlrpc_noResult)
        self.assertRaises(TypeError, verbSchema, xmlrpc_strange)

    def test_checkCountsAndConverts(self):
        def xmlrpc_f(self, name: str, since: float, body: dict | None = None) -> Reply[list]:
            return []

        schema = verbSchema(xmlrpc_f)
        self.assertEqual(schema.check("f", ("a", 3)), ("a", 3.0))
        self.assertEqual(schema.check("f", ("a", 3, None)), ("a", 3.0, None))
        with self.assertRaises(xmlrpclib.Fault) as e:
            schema.check("f", ("a",))
        self.assertEqual(e.exception.faultCode, Faults.INCORRECT_PARAMETERS)
        self.assertIn("f(name, since, body=None): got 1 argument(s)", e.exception.faultString)

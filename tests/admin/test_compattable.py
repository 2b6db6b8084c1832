"""docs/supervisord-compat.md against the installed supervisord and Salvus's own verbs.

The table is what an operator reads to know whether a tool built on supervisord will work: a
method or event supervisord gained that the table does not list, or a row saying C{same} for a
verb Salvus does not answer, would be a promise nobody checked.  Here supervisord's own
C{system.listMethods} (its C{SystemNamespaceRPCInterface} over its C{supervisor.*} namespace) and
its C{EventTypes} are the reference, and Salvus's verb registry and a host admin's
C{system.listMethods} the other side.  The aliases and bulk verbs no other test calls by name are
checked here too.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from salvusctl.admin.faults import Faults
from salvusctl.admin.rpc import RPCRoot
from salvusctl.admin.state import AdminOptions, AdminState
from salvusctl.supervisor import events as salvusEvents
from tests.admin.helpers import Harness, HarnessTestCase, tempDir
from tests.helpers import REPO

TABLE = os.path.join(REPO, "docs", "supervisord-compat.md")
STATUSES = ("same", "different", "missing")
_ROW = re.compile(r"^\| (method|event) \| `([^`]+)` \| (\w+) \| (.*) \| (.*) \|$")


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    status: str
    how: str
    tests: tuple[str, ...]
    line: int


def readTable(path: str = TABLE) -> dict[tuple[str, str], Row]:
    """The table's rows by (kind, name); AssertionError for a malformed or repeated row."""
    rows: dict[tuple[str, str], Row] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.startswith(("| method ", "| event ")):
                continue
            match = _ROW.match(line)
            if match is None:
                raise AssertionError(f"{path}:{number}: not a table row of five cells: {line!r}")
            kind, name, status, how, tests = match.groups()
            if status not in STATUSES:
                raise AssertionError(f"{path}:{number}: status {status!r} is not one of {STATUSES}")
            if (kind, name) in rows:
                raise AssertionError(f"{path}:{number}: {name} has a row already")
            rows[kind, name] = Row(kind, name, status, how.strip(),
                                   tuple(t.strip() for t in tests.split(",") if t.strip()), number)
    return rows


def supervisord():
    """supervisord's own introspection over its real namespaces, or SkipTest."""
    try:
        from supervisor import events, rpcinterface, xmlrpc
    except ImportError:
        raise SkipTest("needs supervisor (pip install -e .[test])")

    class NoSupervisord:
        """Listing and signatures read only the methods' docstrings, never the daemon."""

    namespace = rpcinterface.SupervisorNamespaceRPCInterface(NoSupervisord())
    return xmlrpc.SystemNamespaceRPCInterface([("supervisor", namespace)]), events


def salvusVerbs() -> dict:
    """Salvus's verb registry as a host without optional services publishes it."""
    state = AdminState(services={}, clock=Clock(), host_name="compat", options=AdminOptions())
    return RPCRoot(state).verbs()


def _testExists(reference: str) -> bool:
    """Whether C{path::Class::test} (or C{path::test}) names a test function in the file."""
    path, *names = reference.split("::")
    full = os.path.join(REPO, path)
    if not names or not os.path.isfile(full):
        return False
    with open(full, encoding="utf-8") as f:
        scope = ast.parse(f.read()).body
    for name in names:
        found = [n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == name]
        if not found:
            return False
        scope = getattr(found[0], "body", [])
    return names[-1].startswith("test")


class CompatTableTests(SynchronousTestCase):
    """The table lists all of supervisord and claims nothing Salvus does not do."""

    def setUp(self):
        self.system, self.events = supervisord()
        self.rows = readTable()

    def test_everySupervisordMethodHasARow(self):
        """A method supervisord answers and the table does not list fails here, by name."""
        listed = {name for kind, name in self.rows if kind == "method"}
        absent = sorted(set(self.system.listMethods()) - listed)
        self.assertEqual(absent, [], f"supervisord methods missing from {TABLE}")

    def test_everySupervisordEventHasARow(self):
        listed = {name for kind, name in self.rows if kind == "event"}
        absent = sorted(set(self._supervisordEvents()) - listed)
        self.assertEqual(absent, [], f"supervisord event types missing from {TABLE}")

    def test_noRowForWhatSupervisordLacks(self):
        """A row for a name supervisord does not have is a typo or a stale row."""
        methods, events = set(self.system.listMethods()), set(self._supervisordEvents())
        stale = sorted(name for (kind, name) in self.rows
                       if name not in (methods if kind == "method" else events))
        self.assertEqual(stale, [])

    def test_noMethodClaimedThatSalvusDoesNotAnswer(self):
        """C{same} and C{different} rows name verbs Salvus's registry holds and a host's admin
        lists in C{system.listMethods}; a C{missing} row names one it does not (else it is stale)."""
        registry = set(salvusVerbs())
        listed = set(Harness(tempDir(self)).rpc(self, "system.listMethods"))
        self.assertEqual(registry - listed, set())
        wrong = []
        for (kind, name), row in sorted(self.rows.items()):
            if kind != "method":
                continue
            answered = name in registry and name in listed
            if (row.status == "missing") == answered:
                wrong.append(f"line {row.line}: {name} is {row.status!r} but Salvus "
                             f"{'answers' if answered else 'does not answer'} it")
        self.assertEqual(wrong, [])

    def test_sameMethodsHaveSupervisordsSignature(self):
        """C{same} means same arguments and types: the signatures, read on each side from what
        the verb declares, are equal."""
        verbs = salvusVerbs()
        wrong = {name: (self.system.methodSignature(name), verbs[name].schema.signature())
                 for (kind, name), row in self.rows.items()
                 if kind == "method" and row.status == "same" and name in verbs
                 and self.system.methodSignature(name) != verbs[name].schema.signature()}
        self.assertEqual(wrong, {})

    def test_sameEventsHaveSupervisordsParent(self):
        """A C{same} event exists in Salvus under the type supervisord puts it under, so a
        listener subscribed to the parent receives it on both."""
        reference = self._supervisordEvents()
        wrong = {}
        for (kind, name), row in self.rows.items():
            if kind == "event" and row.status != "missing":
                ours = salvusEvents.EVENT_TYPES.get(name, "absent")
                if ours != reference[name]:
                    wrong[name] = (reference[name], ours)
        self.assertEqual(wrong, {})

    def test_differentRowsSayHowAndWhy(self):
        short = [name for (_, name), row in self.rows.items()
                 if row.status == "different" and len(row.how) < 20]
        self.assertEqual(short, [])

    def test_everyRowNamesATestThatExists(self):
        bad = [f"line {row.line}: {row.name}: {ref or '(none)'}" for row in self.rows.values()
               for ref in (row.tests or ("",)) if not _testExists(ref)]
        self.assertEqual(bad, [])

    def _supervisordEvents(self) -> dict[str, str | None]:
        """supervisord's event type name -> its parent's name (None for EVENT)."""
        types = self.events.EventTypes
        names = {getattr(types, n): n for n in dir(types) if not n.startswith("_")}
        return {name: next((names[b] for b in cls.__mro__[1:] if b in names), None)
                for cls, name in names.items()}


class ReadTableTests(SynchronousTestCase):
    """A malformed table is refused with its line, not read as fewer rows."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_badStatusNamesTheLine(self):
        path = self.write("| method | `system.listMethods` | similar | x | y |\n")
        with self.assertRaises(AssertionError) as caught:
            readTable(path)
        self.assertIn(":1: status 'similar'", str(caught.exception))

    def test_missingCellNamesTheLine(self):
        path = self.write("\n| event | `TICK_5` | same | tests/x.py::T::test_y\n")
        with self.assertRaises(AssertionError) as caught:
            readTable(path)
        self.assertIn(":2: not a table row", str(caught.exception))

    def test_repeatedRowRefused(self):
        row = "| event | `TICK_5` | same | a | b |\n"
        with self.assertRaises(AssertionError):
            readTable(self.write(row + row))

    def test_testReferences(self):
        self.assertTrue(_testExists("tests/admin/test_compattable.py::ReadTableTests::test_testReferences"))
        self.assertFalse(_testExists("tests/admin/test_compattable.py::ReadTableTests::test_nosuch"))
        self.assertFalse(_testExists("tests/admin/test_compattable.py::ReadTableTests"))
        self.assertFalse(_testExists("tests/nosuch.py::test_x"))


class AliasTests(HarnessTestCase):
    """supervisord's backward-compatible aliases answer exactly as the verbs they name."""

    def test_aliasesAnswerAsTheirTargets(self):
        sup = self.h.supervisor
        sup.emit("web:0", "hello")
        self.assertEqual(self.call("supervisor.readProcessLog", "web:0", 0, 0),
                         self.call("supervisor.readProcessStdoutLog", "web:0", 0, 0))
        self.assertTrue(self.call("supervisor.readProcessLog", "web:0", 0, 0).endswith("hello\n"))
        self.assertEqual(self.call("supervisor.tailProcessLog", "web:0", 0, 100),
                         self.call("supervisor.tailProcessStdoutLog", "web:0", 0, 100))
        self.assertEqual(self.call("supervisor.getVersion"), self.call("supervisor.getAPIVersion"))
        # the fake keeps no main log: both names answer the same fault
        self.assertEqual(self.call("supervisor.readMainLog", 0, 0).faultCode,
                         self.call("supervisor.readLog", 0, 0).faultCode)
        self.assertIs(self.call("supervisor.clearProcessLog", "web:0"), True)
        self.assertEqual(self.call("supervisor.readProcessLog", "web:0", 0, 0), "")
        self.assertFault(self.call("supervisor.clearProcessLog", "nosuch"), Faults.BAD_NAME)


class BulkTests(HarnessTestCase):
    """The all/group verbs answer supervisord's array: one result struct per process acted on."""

    def results(self, answer: list) -> dict[str, tuple[int, str]]:
        return {f"{r['group']}:{r['name']}": (r["status"], r["description"]) for r in answer}

    def test_stopAllProcesses(self):
        answer = self.call("supervisor.stopAllProcesses")
        self.assertEqual(set(self.results(answer).values()), {(Faults.SUCCESS, "OK")})
        self.assertEqual(len(answer), 3)
        self.assertEqual({i["statename"] for i in self.call("supervisor.getAllProcessInfo")}, {"STOPPED"})
        self.assertEqual(self.call("supervisor.stopAllProcesses"), [])

    def test_signalProcessGroupAndAll(self):
        self.assertEqual(len(self.call("supervisor.signalProcessGroup", "web", "HUP")), 2)
        self.assertEqual(self.h.supervisor.signals("web:1"), [1])
        self.assertEqual(self.h.supervisor.signals("worker:0"), [])
        self.call("supervisor.stopProcess", "worker:0")
        answer = self.call("supervisor.signalAllProcesses", "USR1")
        self.assertEqual(len(answer), 2)  # the stopped one is not signalled
        self.assertEqual(self.h.supervisor.signals("web:0"), [1, 10])
        self.assertFault(self.call("supervisor.signalAllProcesses", "NOPE"), Faults.BAD_SIGNAL)
        self.assertFault(self.call("supervisor.signalProcessGroup", "nosuch", "HUP"), Faults.BAD_NAME)

    def test_clearAllProcessLogs(self):
        for name in ("web:0", "worker:0"):
            self.h.supervisor.emit(name, "line")
        answer = self.call("supervisor.clearAllProcessLogs")
        self.assertEqual(len(answer), 3)
        self.assertEqual(set(self.results(answer).values()), {(Faults.SUCCESS, "OK")})
        self.assertEqual(self.call("supervisor.readProcessStdoutLog", "worker:0", 0, 0), "")

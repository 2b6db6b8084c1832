"""supervisord's XML-RPC API over the fakes: what supervisorctl and scripts rely on."""

from __future__ import annotations

import os
import xmlrpc.client as xmlrpclib

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.faults import Faults
from tests.admin.helpers import VIEW, Harness, HarnessTestCase, tempDir


class SupervisorNamespaceTests(HarnessTestCase):
    def test_versionAndState(self):
        """supervisorctl refuses a server whose API version is not 3.0."""
        self.assertEqual(self.call("supervisor.getVersion"), "3.0")
        self.assertEqual(self.call("supervisor.getAPIVersion"), "3.0")
        self.assertEqual(self.call("supervisor.getState"), {"statecode": 1, "statename": "RUNNING"})
        self.assertEqual(self.call("supervisor.getIdentification"), "testhost")
        self.assertEqual(self.call("supervisor.getPID"), os.getpid())

    def test_allProcessInfoFields(self):
        """The struct has supervisord's fields, with the group split from the instance name."""
        infos = self.call("supervisor.getAllProcessInfo")
        self.assertEqual(
            [(i["group"], i["name"]) for i in infos], [("web", "0"), ("web", "1"), ("worker", "0")]
        )
        expected = {
            "name",
            "group",
            "start",
            "stop",
            "now",
            "state",
            "statename",
            "spawnerr",
            "exitstatus",
            "logfile",
            "stdout_logfile",
            "stderr_logfile",
            "pid",
            "description",
        }
        self.assertEqual(set(infos[0]), expected)
        self.assertEqual(infos[0]["state"], 20)
        self.assertEqual(infos[0]["statename"], "RUNNING")

    def test_stopStartOne(self):
        """stopProcess then startProcess change the state; repeating gives NOT_RUNNING / ALREADY_STARTED."""
        self.assertIs(self.call("supervisor.stopProcess", "web:0"), True)
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "STOPPED")
        self.assertFault(self.call("supervisor.stopProcess", "web:0"), Faults.NOT_RUNNING)
        self.assertIs(self.call("supervisor.startProcess", "web:0"), True)
        self.assertFault(self.call("supervisor.startProcess", "web:0"), Faults.ALREADY_STARTED)
        info = self.call("supervisor.getProcessInfo", "web:0")
        self.assertEqual(info["statename"], "RUNNING")

    def test_bareNameOfSingleInstanceDeploy(self):
        """A deploy with one instance may be named without its index; a larger one may not."""
        self.assertIs(self.call("supervisor.stopProcess", "worker"), True)
        fault = self.assertFault(self.call("supervisor.stopProcess", "web"), Faults.BAD_NAME)
        self.assertIn("web:*", fault.faultString)

    def test_groupAndAll(self):
        """Group and all-process calls return supervisord's result arrays."""
        results = self.call("supervisor.stopProcessGroup", "web")
        self.assertEqual(sorted(r["name"] for r in results), ["0", "1"])
        self.assertEqual({r["status"] for r in results}, {Faults.SUCCESS})
        results = self.call("supervisor.stopProcess", "worker:*")
        self.assertEqual([(r["group"], r["name"]) for r in results], [("worker", "0")])
        results = self.call("supervisor.startAllProcesses")
        self.assertEqual(len(results), 3)
        self.assertEqual(self.call("supervisor.startAllProcesses"), [])

    def test_spawnError(self):
        """A failed start is SPAWN_ERROR with the reason, in single and group calls."""
        self.call("supervisor.stopProcess", "web:1")
        self.h.supervisor.failNextStart("web:1", "no such file: ./app")
        fault = self.assertFault(self.call("supervisor.startProcess", "web:1"), Faults.SPAWN_ERROR)
        self.assertIn("no such file", fault.faultString)

    def test_groupStartReportsEachInstance(self):
        """A group start goes through the supervisor's startDeploy and reports each instance."""
        self.call("supervisor.stopProcessGroup", "web")
        self.h.supervisor.failNextStart("web:1", "port 8001 in use")
        results = self.call("supervisor.startProcessGroup", "web")
        by_name = {r["name"]: r for r in results}
        self.assertEqual(by_name["0"]["status"], Faults.SUCCESS)
        self.assertEqual(by_name["1"]["status"], Faults.SPAWN_ERROR)
        self.assertIn("port 8001 in use", by_name["1"]["description"])
        self.assertEqual(
            self.call("supervisor.stopProcessGroup", "web", False),
            [{"name": "0", "group": "web", "status": Faults.SUCCESS, "description": "OK"}],
        )

    def test_unknownNames(self):
        """Unknown processes and groups are BAD_NAME, whichever call names them."""
        for method, params in [
            ("supervisor.startProcess", ("nope:0",)),
            ("supervisor.stopProcessGroup", ("nope",)),
            ("supervisor.getProcessInfo", ("web:9",)),
            ("supervisor.readProcessStdoutLog", ("nope", 0, 10)),
            ("supervisor.signalProcess", ("ghost:*", "HUP")),
        ]:
            self.assertFault(self.call(method, *params), Faults.BAD_NAME)

    def test_signal(self):
        """Signals by name or number reach the instance; a bad one is BAD_SIGNAL."""
        self.assertIs(self.call("supervisor.signalProcess", "web:0", "HUP"), True)
        self.assertIs(self.call("supervisor.signalProcess", "web:0", "15"), True)
        self.assertEqual(self.h.supervisor.signals("web:0"), [1, 15])
        self.assertFault(self.call("supervisor.signalProcess", "web:0", "NOPE"), Faults.BAD_SIGNAL)
        self.call("supervisor.stopProcess", "web:0")
        self.assertFault(self.call("supervisor.signalProcess", "web:0", "HUP"), Faults.NOT_RUNNING)

    def test_logs(self):
        """readProcessStdoutLog and tailProcessStdoutLog follow supervisord's offset rules."""
        self.h.supervisor.clearLogs("web:0")
        self.h.supervisor.emit("web:0", "hello")
        self.h.supervisor.emit("web:0", "world")
        self.assertEqual(self.call("supervisor.readProcessStdoutLog", "web:0", -1600, 0), "hello\nworld\n")
        self.assertEqual(self.call("supervisor.readProcessStdoutLog", "web:0", 6, 0), "world\n")
        self.assertEqual(self.call("supervisor.readProcessStdoutLog", "web:0", 0, 5), "hello")
        self.assertFault(self.call("supervisor.readProcessStdoutLog", "web:0", -5, 3), Faults.BAD_ARGUMENTS)
        self.assertEqual(self.call("supervisor.tailProcessStdoutLog", "web:0", 0, 6), ["world\n", 12, True])
        self.assertEqual(self.call("supervisor.tailProcessStdoutLog", "web:0", 12, 100), ["", 12, False])
        self.h.supervisor.emit("web:0", "stderr!", stream="stderr")
        self.assertEqual(self.call("supervisor.readProcessStderrLog", "web:0", 0, 0), "stderr!\n")
        self.assertIs(self.call("supervisor.clearProcessLogs", "web:0"), True)
        self.assertEqual(self.call("supervisor.readProcessStdoutLog", "web:0", 0, 0), "")

    def test_reloadConfig(self):
        """reloadConfig answers supervisord's [[added, changed, removed]]; a host composed in
        code has no config file to re-read, so nothing differs (tests/integration/test_reload.py
        re-reads a real one)."""
        self.assertEqual(self.call("supervisor.reloadConfig"), [[[], [], []]])

    def test_viewerCannotAct(self):
        """A viewer reads but every action is PERMISSION_DENIED."""
        self.assertEqual(len(self.call("supervisor.getAllProcessInfo", user=VIEW)), 3)
        fault = self.assertFault(
            self.call("supervisor.stopProcess", "web:0", user=VIEW), Faults.PERMISSION_DENIED
        )
        self.assertIn("operator", fault.faultString)
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "RUNNING")

    def test_noSupervisor(self):
        """A host without a supervisor says so instead of failing obscurely."""
        h = Harness(self.tmp, services={})
        fault = self.assertFault(h.rpc(self, "supervisor.getAllProcessInfo"), Faults.NO_SERVICE)
        self.assertIn("no supervisor", fault.faultString)


class BadRequestTests(SynchronousTestCase):
    """Bad input gets a Fault with a clear message, never a traceback or a dropped connection."""

    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.h = Harness(self.tmp)

    def post(self, body, content_type=b"text/xml"):
        return self.h.request(self, "POST", "/RPC2", headers={b"Content-Type": [content_type]}, data=body)

    def test_malformedXML(self):
        response, body = self.post(b"<methodCall><methodName>supervisor.getState</methodName")
        self.assertEqual(response.code, 200)
        with self.assertRaises(xmlrpclib.Fault) as e:
            xmlrpclib.loads(body)
        self.assertEqual(e.exception.faultCode, Faults.BAD_REQUEST)
        self.assertIn("malformed", e.exception.faultString)
        self.assertNotIn("Traceback", e.exception.faultString)

    def test_deepNestingAndBadBytes(self):
        """Pathological but small documents get a Fault, not a crash or a hung connection."""
        deep = b"<value><array><data>" * 5000 + b"</data></array></value>" * 5000
        body = b"<?xml version='1.0'?><methodCall><methodName>supervisor.getProcessInfo</methodName>"
        body += b"<params><param>" + deep + b"</param></params></methodCall>"
        response, content = self.post(body)
        with self.assertRaises(xmlrpclib.Fault) as e:
            xmlrpclib.loads(content)
        self.assertEqual(e.exception.faultCode, Faults.BAD_ARGUMENTS)
        response, content = self.post(b"<?xml version='1.0'?><methodCall><methodName>\xff\xfe</methodName>")
        with self.assertRaises(xmlrpclib.Fault) as e:
            xmlrpclib.loads(content)
        self.assertEqual(e.exception.faultCode, Faults.BAD_REQUEST)

    def test_multicallBounded(self):
        calls = [{"methodName": "supervisor.getState", "params": []}] * 1001
        fault = self.h.rpc(self, "system.multicall", calls)
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        self.assertIn("at most 1000", fault.faultString)

    def test_responseDocumentInsteadOfCall(self):
        response, body = self.post(xmlrpclib.dumps((1,), methodresponse=True).encode())
        with self.assertRaises(xmlrpclib.Fault) as e:
            xmlrpclib.loads(body)
        self.assertEqual(e.exception.faultCode, Faults.UNKNOWN_METHOD)

    def test_unknownMethod(self):
        fault = self.h.rpc(self, "supervisor.explode")
        self.assertEqual(fault.faultCode, Faults.UNKNOWN_METHOD)
        self.assertIn("supervisor.explode", fault.faultString)
        self.assertEqual(self.h.rpc(self, "nonamespace").faultCode, Faults.UNKNOWN_METHOD)
        self.assertEqual(self.h.rpc(self, "system.methodHelp", "x.y").faultCode, Faults.SIGNATURE_UNSUPPORTED)

    def test_wrongArgumentCount(self):
        fault = self.h.rpc(self, "supervisor.startProcess")
        self.assertEqual(fault.faultCode, Faults.INCORRECT_PARAMETERS)
        self.assertIn("supervisor.startProcess(name, wait=True)", fault.faultString)
        fault = self.h.rpc(self, "supervisor.getState", 1, 2)
        self.assertEqual(fault.faultCode, Faults.INCORRECT_PARAMETERS)

    def test_wrongTypes(self):
        fault = self.h.rpc(self, "supervisor.startProcess", 42)
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        self.assertIn("name must be a string, not int", fault.faultString)
        fault = self.h.rpc(self, "supervisor.readProcessStdoutLog", "web:0", "x", 0)
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        fault = self.h.rpc(self, "supervisor.getProcessInfo", ["web:0"])
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)
        fault = self.h.rpc(self, "salvus.balancerSetWeight", "www", "web", "127.0.0.1:8000", "heavy")
        self.assertEqual(fault.faultCode, Faults.BAD_ARGUMENTS)

    def test_notXML(self):
        """A form post (text/plain, the CSRF vector) is refused before parsing."""
        response, body = self.post(b"<methodCall/>", content_type=b"text/plain")
        self.assertEqual(response.code, 415)

    def test_getIsNotAllowed(self):
        response, _ = self.h.request(self, "GET", "/RPC2")
        self.assertEqual(response.code, 405)

    def test_unexpectedErrorIsOneLine(self):
        """A service raising something unexpected gives a generic FAILED with one line (no
        internal detail), and the traceback is logged."""

        def boom():
            raise RuntimeError("disk on fire")

        self.h.supervisor.instanceInfos = boom
        fault = self.h.rpc(self, "supervisor.getAllProcessInfo")
        self.assertEqual(fault.faultCode, Faults.FAILED)
        self.assertEqual(
            fault.faultString,
            "FAILED: internal error in supervisor.getAllProcessInfo (RuntimeError; see the host log)",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SystemNamespaceTests(HarnessTestCase):
    def test_listMethods(self):
        methods = self.h.rpc(self, "system.listMethods")
        for name in (
            "supervisor.getAllProcessInfo",
            "supervisor.tailProcessStdoutLog",
            "system.multicall",
            "salvus.balancerSnapshot",
            "salvus.reconcile",
        ):
            self.assertIn(name, methods)

    def test_methodHelpAndSignature(self):
        self.assertIn("Start a process", self.h.rpc(self, "system.methodHelp", "supervisor.startProcess"))
        self.assertEqual(
            self.h.rpc(self, "system.methodSignature", "supervisor.startProcess"),
            ["boolean", "string", "boolean"],
        )

    def test_multicall(self):
        """Each call's bare result or fault struct, in order, as supervisord answers (not the
        single-item arrays of its docstring); the role applies to each call."""
        results = self.h.rpc(
            self,
            "system.multicall",
            [
                {"methodName": "supervisor.getState", "params": []},
                {"methodName": "supervisor.stopProcess", "params": ["web:0"]},
                {"methodName": "supervisor.nope", "params": []},
                {"methodName": "system.multicall", "params": [[]]},
                "garbage",
            ],
        )
        self.assertEqual(results[0], {"statecode": 1, "statename": "RUNNING"})
        self.assertEqual(results[1], True)
        self.assertEqual(results[2]["faultCode"], Faults.UNKNOWN_METHOD)
        self.assertEqual(results[3]["faultCode"], Faults.INCORRECT_PARAMETERS)
        self.assertEqual(results[4]["faultCode"], Faults.INCORRECT_PARAMETERS)
        results = self.h.rpc(
            self,
            "system.multicall",
            [{"methodName": "supervisor.stopProcess", "params": ["web:1"]}],
            user=VIEW,
        )
        self.assertEqual(results[0]["faultCode"], Faults.PERMISSION_DENIED)
        self.assertEqual(self.h.rpc(self, "system.multicall", "x").faultCode, Faults.BAD_ARGUMENTS)


class LogFileTests(SynchronousTestCase):
    """When the supervisor names log files, the log calls read (and clear) the files themselves."""

    def setUp(self):
        from salvusctl.testing import FakeSupervisor

        self.tmp = tempDir(self)
        self.logfile = os.path.join(self.tmp, "web-0.out")
        with open(self.logfile, "wb") as f:
            f.write(b"0123456789" * 300)
        fake = FakeSupervisor()
        logfile = self.logfile

        class FileLogging:
            """Only ISupervisor's methods, with log files: no clearLogs of its own."""

            def instanceInfos(self):
                return [self.instanceInfo(i["name"]) for i in fake.instanceInfos()]

            def instanceInfo(self, name):
                info = fake.instanceInfo(name)
                if name == "web:0":
                    info["stdout_logfile"] = info["logfile"] = logfile
                return info

            def tailLog(self, name, lines=100, stream="stdout"):
                raise AssertionError("the file should be read instead")

        self.h = Harness(self.tmp, services={"supervisor": FileLogging()})

    def test_readTailClear(self):
        data = self.h.rpc(self, "supervisor.readProcessStdoutLog", "web:0", -1600, 0)
        self.assertEqual(len(data), 1600)
        self.assertEqual(self.h.rpc(self, "supervisor.readProcessStdoutLog", "web:0", 5, 3), "567")
        text, offset, overflow = self.h.rpc(self, "supervisor.tailProcessStdoutLog", "web:0", 0, 100)
        self.assertEqual((len(text), offset, overflow), (100, 3000, True))
        self.assertIs(self.h.rpc(self, "supervisor.clearProcessLogs", "web:0"), True)
        self.assertEqual(os.path.getsize(self.logfile), 0)
        fault = self.h.rpc(self, "supervisor.clearProcessLogs", "web:1")
        self.assertEqual(fault.faultCode, Faults.NO_FILE)


class AuditTests(HarnessTestCase):
    def test_deeplyNestedArgumentsKeepTheAuditLine(self):
        """An operator call with arguments nested 2,000 deep still leaves its one audit line, with
        the arguments cut (a plain repr raised and the line was dropped)."""
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        depth = 2000  # written by hand: the client's own marshaller would recurse too deep
        body = (
            "<?xml version='1.0'?><methodCall><methodName>supervisor.startProcess</methodName>"
            "<params><param>" + "<value><array><data>" * depth + "</data></array></value>" * depth
            + "</param></params></methodCall>"
        ).encode()
        response, _ = self.h.request(
            self, "POST", "/RPC2", headers={b"Content-Type": [b"text/xml"]}, data=body
        )
        self.assertEqual(response.code, 200)
        self.call("supervisor.stopProcess", "x" * 100_000)
        lines = [formatEvent(e) for e in events if e.get("log_format") == "{user} called {method}{args}"]
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("op called supervisor.startProcess("), lines[0])
        self.assertLessEqual(max(len(line) for line in lines), 1100)
        self.assertNotIn("Unable to format", "".join(lines))

"""The reloader's diff and apply, on fake services (the real host: tests/integration/test_reload.py)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.balancer.declare import Balanced, Group, Server
from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.host.loading import loadHost
from salvusctl.host.reload import HostReloader, declarationsDiffer
from salvusctl.monitor.build import Monitor
from salvusctl.supervisor.deploy import Deploy, Probe, Ready
from salvusctl.supervisor.reload import applyDeploys, deployDiff
from tests.helpers import REPO

CMD = [sys.executable, "-c", "pass"]


class _Supervisor:
    def __init__(self, deploys):
        self.deploys = {d.name: d for d in deploys}
        self.reloaded = []

    def reload(self, deploys):
        self.reloaded.append([d.name for d in deploys])
        self.deploys = {d.name: d for d in deploys}
        return succeed({})


class _Monitor:
    """The part of the monitor a reload uses: C{reconfigure}."""

    def __init__(self):
        self.reconfigured = []

    def reconfigure(self, **settings):
        self.reconfigured.append(settings)
        return ["interval"]


class _Balancer:
    def __init__(self, ops):
        self.ops = ops
        self.reconciled = []

    def diff(self, declared):
        return list(self.ops)

    def reconcile(self, declared):
        self.reconciled.append([d.name for d in declared])
        return succeed(self.ops)


def _host(deploys, monitor=5.0, weight=1):
    host = Host("h", store="sqlite:/tmp/x.db", var="/tmp/x")
    for deploy in deploys:
        host.add(deploy)
    host.add(Balanced("www", listen=["tcp:0"], groups=[Group("g", [Server("127.0.0.1:1", weight=weight)])]))
    host.add(Monitor(interval=monitor))
    return host


class DeployDiffTests(SynchronousTestCase):
    def test_changedMeansSpecDiffers(self):
        """A changed environment restarts; a priority-only change does not (it is not in spec())."""
        running = {"a": Deploy("a", command=CMD), "b": Deploy("b", command=CMD, env={"X": "1"}),
                   "c": Deploy("c", command=CMD)}
        declared = [Deploy("a", command=CMD, priority=5), Deploy("b", command=CMD, env={"X": "2"}),
                    Deploy("d", command=CMD)]
        self.assertEqual(deployDiff(running, declared),
                         {"added": ["d"], "changed": ["b"], "removed": ["c"]})

    def test_declarationsDiffer(self):
        """Plain declarations compare by value, not identity."""
        self.assertFalse(declarationsDiffer([Monitor(interval=5)], [Monitor(interval=5)]))
        self.assertTrue(declarationsDiffer([Monitor(interval=5)], [Monitor(interval=6)]))
        self.assertTrue(declarationsDiffer([Monitor(interval=5)], []))


class HostReloaderTests(SynchronousTestCase):
    def setUp(self):
        self.running = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)])
        self.next = self.running
        self.running.source = lambda: self.next
        self.supervisor = _Supervisor(self.running.declarations("supervisor"))
        self.balancer = _Balancer([])
        self.monitor = _Monitor()
        context = SimpleNamespace(services={"supervisor": self.supervisor, "balancer": self.balancer,
                                            "monitor": self.monitor}, host=self.running)
        self.reloader = HostReloader(self.running, context)

    def test_noDifference(self):
        """The same config: an empty diff, and reconcile touches nothing."""
        self.next = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)])
        self.assertEqual(self.reloader.diff(), {})
        self.assertEqual(self.successResultOf(self.reloader.reconcile()), {})
        self.assertEqual((self.supervisor.reloaded, self.balancer.reconciled), ([], []))

    def test_diffAndApply(self):
        """Supervisor, balancer and monitor changes are applied; once applied, the diff is empty."""
        self.next = _host([Deploy("a", command=CMD), Deploy("c", command=CMD)], monitor=9.0)
        self.balancer.ops = [{"op": "set-weight", "service": "www", "group": "g", "host": "127.0.0.1:1"}]
        expected = {
            "supervisor": {"added": ["c"], "changed": [], "removed": ["b"]},
            "balancer": {"added": [], "changed": ["www/g/127.0.0.1:1"], "removed": []},
            "monitor": {"added": [], "changed": ["interval"], "removed": []},
        }
        self.assertEqual(self.reloader.diff(), expected)
        self.assertEqual(self.successResultOf(self.reloader.reconcile()), expected)
        self.assertEqual(self.supervisor.reloaded, [["a", "c"]])
        self.assertEqual(self.balancer.reconciled, [["www"]])
        self.assertEqual([s["interval"] for s in self.monitor.reconfigured], [9.0])
        self.balancer.ops = []
        self.assertEqual(self.reloader.diff(), {})

    def test_applyFailureIsReportedAndKeptInTheDiff(self):
        """A service whose apply raises: the others are applied, its entry says why it failed, and
        the next diff still shows it (its running declarations did not move)."""
        def broken(**settings):
            raise RuntimeError("boom")

        self.monitor.reconfigure = broken
        self.next = _host([Deploy("a", command=CMD), Deploy("c", command=CMD)], monitor=9.0)
        result = self.successResultOf(self.reloader.reconcile())
        self.assertEqual(result["monitor"]["failed"], "RuntimeError: boom")
        self.assertEqual(self.supervisor.reloaded, [["a", "c"]])
        self.assertEqual(self.reloader.diff()["monitor"]["changed"], ["interval"])
        self.flushLoggedErrors(RuntimeError)

    def test_storeChangeNeedsRestart(self):
        """A new store URL is reported with restart and its reason, and nothing is applied."""
        self.next = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)])
        self.next.store_url = "sqlite:/tmp/other.db"
        entry = self.successResultOf(self.reloader.reconcile())["host"]
        self.assertEqual((entry["changed"], entry["restart"]), (["store/name/var"], True))
        self.assertIn("store URL", entry["reason"])
        self.assertEqual(self.reloader.diff()["host"], entry)

    def test_monitorAddressNeedsRestart(self):
        """A monitor edit that includes a fixed field is not applied at all (never half)."""
        self.next = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)], monitor=9.0)
        self.next.declarations("monitor")[0].address = "10.0.0.5"
        entry = self.successResultOf(self.reloader.reconcile())["monitor"]
        self.assertEqual((entry["changed"], entry["restart"]), (["address", "interval"], True))
        self.assertIn("address", entry["reason"])
        self.assertEqual(self.monitor.reconfigured, [])

    def test_badServiceEditChangesNothing(self):
        """An edit only a service's own checks refuse (two backup sets with one name) fails the
        reload before the supervisor or the monitor is touched."""
        from salvusctl.backup.declare import Backup

        self.next = _host([Deploy("a", command=CMD)], monitor=9.0)
        for _ in range(2):
            self.next.add(Backup("dup", destination="/tmp/b1", paths={"d": "/tmp"}))
        failure = self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertIn("two backup sets are named 'dup'", str(failure.value))
        self.assertEqual((self.supervisor.reloaded, self.monitor.reconfigured), ([], []))

    def test_badConfigChangesNothing(self):
        """A config that fails to read or validate fails reconcile before anything is applied."""
        def bad():
            raise ConfigError("syntax error: invalid syntax", "/etc/h.tac", 3)

        self.running.source = bad
        failure = self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertEqual(str(failure.value), "/etc/h.tac:3: syntax error: invalid syntax")
        self.next = _host([Deploy("a", command=CMD), Deploy("a", command=CMD)])
        self.running.source = lambda: self.next
        self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertEqual((self.supervisor.reloaded, self.balancer.reconciled), ([], []))

    def test_oneReloadAtATime(self):
        """A reconcile while another is still applying is refused, not interleaved."""
        from twisted.internet.defer import Deferred

        pending = Deferred()
        self.supervisor.reload = lambda deploys: pending
        self.next = _host([Deploy("a", command=CMD)])
        first = self.reloader.reconcile()
        failure = self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertIn("already in progress", str(failure.value))
        pending.callback({})
        self.assertEqual(self.successResultOf(first)["supervisor"]["removed"], ["b"])

    def test_composedInCode(self):
        """A host with no source compares what runs with its own declarations."""
        self.running.source = None
        self.assertEqual(self.reloader.diff(), {})
        self.balancer.ops = [{"op": "set-state", "service": "www", "group": "g", "host": "h"}]
        self.assertEqual(self.reloader.diff(),
                         {"balancer": {"added": [], "changed": ["www/g/h"], "removed": []}})
        self.successResultOf(self.reloader.reconcile())
        self.assertEqual(self.balancer.reconciled, [["www"]])


    def test_addedLeastLoadGroupIsBoundToTheMonitor(self):
        """A least-load source in a group the reload added is fed by the running monitor."""
        from salvusctl.monitor.loadsource import MonitorLoadSource

        source = MonitorLoadSource()
        group = SimpleNamespace(scheduler=SimpleNamespace(source=source))
        self.balancer.balanced = {"www": SimpleNamespace(groups={"g": group})}
        self.balancer.ops = [{"op": "add-group", "service": "www", "group": "g"}]
        monitor = SimpleNamespace(address=None, latest=lambda: {})
        self.reloader.context.services["monitor"] = monitor
        self.next = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)])
        self.successResultOf(self.reloader.reconcile())
        self.assertTrue(source.bound)


class SourceTests(SynchronousTestCase):
    def test_loadHostRemembersItsFile(self):
        """loadHost's host re-reads the file; the file's own application() builds nothing then."""
        path = os.path.abspath(self.mktemp() + ".tac")
        with open(path, "w") as f:
            f.write("from salvusctl.host import Host\nhost = Host('one', store='sqlite:x.db')\n"
                    "application = host.application()\n")
        host = loadHost(path)
        self.assertIsNone(host._built)
        with open(path, "w") as f:
            f.write("from salvusctl.host import Host\nhost = Host('two', store='sqlite:x.db')\n")
        again = host.source()
        self.assertEqual(again.name, "two")
        self.assertIsNot(again, host)

    def test_defaultHostSourceKeepsTheOptions(self):
        """The default host's source makes it again with the same --var and --store."""
        from salvusctl.tap import Options, loadConfiguredHost

        var = os.path.abspath(self.mktemp())
        options = Options()
        options.parseOptions(["--var", var, "--store", "sqlite:/tmp/other.db"])
        host = loadConfiguredHost(options)
        again = host.source()
        self.assertIsNot(again, host)
        self.assertEqual((again.store_url, again.var_dir), ("sqlite:/tmp/other.db", var))
        self.assertEqual([d.name for d in again.declarations("supervisor")], ["worker"])


class _Reader:
    """Stands in for the out-of-process reader: answers what the test says, counts reads."""

    def __init__(self, answer):
        self.answer = answer
        self.reads: list[bool] = []
        self.last = None

    def read(self, fresh=False):
        from twisted.internet.defer import fail

        self.reads.append(fresh)
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        self.last = self.answer
        return succeed(self.answer)


class OutOfProcessTests(SynchronousTestCase):
    def setUp(self):
        self.running = _host([Deploy("a", command=CMD), Deploy("b", command=CMD)])
        self.loads = 0

        def source():
            self.loads += 1
            return _host([Deploy("a", command=CMD), Deploy("c", command=CMD)])

        self.running.source = source
        self.supervisor = _Supervisor(self.running.declarations("supervisor"))
        context = SimpleNamespace(services={"supervisor": self.supervisor, "balancer": _Balancer([])})
        self.reloader = HostReloader(self.running, context)

    def test_fileHostGetsAReader(self):
        """A host read from a file, on a reactor that spawns, reads edits out of process; others not."""
        from twisted.internet.task import Clock

        from salvusctl.host.reader import ConfigReader

        self.running.origin = {"config": "/etc/h.tac", "store": "sqlite:/tmp/o.db"}
        reactor = Clock()
        reactor.spawnProcess = lambda *a, **kw: None
        reader = HostReloader(self.running, SimpleNamespace(reactor=reactor, services={})).reader
        self.assertIsInstance(reader, ConfigReader)
        self.assertEqual((reader.path, reader.store), ("/etc/h.tac", "sqlite:/tmp/o.db"))
        self.assertIsNone(HostReloader(self.running, SimpleNamespace(reactor=Clock(), services={})).reader)
        self.running.origin = None
        self.assertIsNone(HostReloader(self.running, SimpleNamespace(reactor=reactor, services={})).reader)

    def test_rereadNeverRunsTheFileHere(self):
        """diff of the edited config comes from the reader's model: the source is never called."""
        from salvusctl.host.model import DeclaredHost, describe

        edited = _host([Deploy("a", command=CMD), Deploy("c", command=CMD)])
        self.reloader.reader = _Reader(DeclaredHost(describe(edited)))
        diff = self.successResultOf(self.reloader.reread())
        self.assertEqual(diff["supervisor"], {"added": ["c"], "changed": [], "removed": ["b"]})
        self.assertEqual((self.loads, self.reloader.reader.reads), (0, [False]))
        self.assertIs(self.reloader.staged(), self.reloader.reader.last)

    def test_applyReadsOutOfProcessFirst(self):
        """reconcile asks the reader for a fresh read, and loads the file here only once that
        succeeded; a reader's error (a broken or hung file) stops it before anything runs."""
        self.reloader.reader = _Reader(ConfigError("reading the config took more than 1 s", "/h.tac"))
        failure = self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertIn("took more than 1 s", str(failure.value))
        self.assertEqual((self.loads, self.supervisor.reloaded), (0, []))
        self.reloader.reader = _Reader(object())
        self.successResultOf(self.reloader.reconcile())
        self.assertEqual((self.reloader.reader.reads, self.loads), ([True], 1))
        self.assertEqual(self.supervisor.reloaded, [["a", "c"]])

    def test_applyDeploysSharesTheLock(self):
        """add/remove of a group and reconcile are one reload at a time."""
        from twisted.internet.defer import Deferred

        pending = Deferred()
        self.supervisor.reload = lambda deploys: pending
        first = applyDeploys(self.reloader, lambda new, running: list(running.values()), load=False)
        failure = self.failureResultOf(self.reloader.reconcile(), ConfigError)
        self.assertIn("already in progress", str(failure.value))
        self.failureResultOf(applyDeploys(self.reloader, lambda new, running: []), ConfigError)
        pending.callback({})
        self.successResultOf(first)
        self.assertEqual(self.loads, 0)  # load=False: the config was not read at all

    def test_applyDeploysGivesTheLoadedHost(self):
        seen = []

        def choose(new, running):
            seen.append(([d.name for d in new.declarations("supervisor")], sorted(running)))
            return list(running.values())

        self.successResultOf(applyDeploys(self.reloader, choose))
        self.assertEqual(seen, [(["a", "c"], ["a", "b"])])


class OriginTests(SynchronousTestCase):
    def test_loadHostAndStoreOverride(self):
        """loadHost records the file; twistd's --store goes with it to the out-of-process reader."""
        from salvusctl.tap import Options, loadConfiguredHost

        path = os.path.abspath(self.mktemp() + ".tac")
        with open(path, "w") as f:
            f.write("from salvusctl.host import Host\nhost = Host('one', store='sqlite:x.db')\n")
        self.assertEqual(loadHost(path).origin, {"config": path})
        options = Options()
        options.parseOptions(["--config", path, "--store", "sqlite:/tmp/other.db"])
        self.assertEqual(loadConfiguredHost(options).origin,
                         {"config": path, "store": "sqlite:/tmp/other.db"})
        options = Options()
        options.parseOptions(["--var", os.path.abspath(self.mktemp())])
        self.assertIsNone(loadConfiguredHost(options).origin)  # the default host: salvusctl's own code


def _docExamples() -> list[tuple[str, int, str]]:
    """(page, block number, code) of every docs/ Python block that declares on C{host}."""
    import re

    docs = os.path.join(REPO, "docs")
    out = []
    for page in sorted(os.listdir(docs)):
        if page.endswith(".md"):
            with open(os.path.join(docs, page), encoding="utf-8") as f:
                blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
            out += [(page, n, code) for n, code in enumerate(blocks, 1) if "host." in code]
    return out


def _runExample(page: str, code: str, namespace: dict) -> Host:
    """A fresh host with one docs example declared on it (a page's blocks share their imports)."""
    host = Host("h", store="sqlite:/tmp/example.db", var="/tmp/example")
    namespace["host"] = host
    exec(compile(code, page, "exec"), namespace)
    return namespace["host"]


def _runningContext(host: Host):
    """What a reload diff sees of a running host: its real (unstarted) supervisor service."""
    import tempfile

    from twisted.internet.task import Clock

    from salvusctl.supervisor.reload import deploysOf
    from salvusctl.supervisor.service import SupervisorService

    services = {}
    deploys = deploysOf(host.declarations("supervisor"))
    if deploys:
        run = tempfile.mkdtemp(prefix="salvus-reload-example-")
        services["supervisor"] = SupervisorService(Clock(), deploys, runDir=run)
    return SimpleNamespace(services=services, host=host)


class ExampleHostReloadTests(SynchronousTestCase):
    """Every example host of docs/ and tac/ goes through a reload diff: the same config read
    again (in this process and as the out-of-process model) shows no supervisor difference, and
    supervisorctl's reread/avail shapes list no phantom group."""

    def assertReloads(self, label: str, running: Host, again: Host) -> None:
        from salvusctl.admin.processgroups import groupDiff, groupsOf
        from salvusctl.host.model import DeclaredHost, describe
        from salvusctl.supervisor.reload import SETTINGS_KEY

        context = _runningContext(running)
        reloader = HostReloader(running, context)
        model = DeclaredHost(describe(again))
        for new in (again, model):
            diff = reloader.diff(new)
            self.assertNotIn("supervisor", diff, label)
            self.assertNotIn(SETTINGS_KEY, diff, label)
            supervisor = context.services.get("supervisor")
            if supervisor is not None:
                declared = new.declarations("supervisor")
                self.assertEqual(groupDiff(dict(supervisor.deploys), declared), [[], [], []], label)
                self.assertNotIn("None", groupsOf(declared), label)

    def test_docs_examples(self):
        """Each docs/ page's host examples, the first of docs/supervisor.md (SupervisorSettings)
        among them."""
        examples = _docExamples()
        self.assertIn("supervisor.md", {page for page, _, _ in examples})
        namespaces: dict[str, dict] = {}
        for page, n, code in examples:
            # An example is an excerpt of a host file: the imports every host file has go first.
            namespace = namespaces.setdefault(page, {"sys": sys, "os": os, "Host": Host, "Deploy": Deploy,
                                                     "Balanced": Balanced, "Group": Group, "Server": Server,
                                                     "Probe": Probe, "Ready": Ready})
            running = _runExample(page, code, namespace)
            again = _runExample(page, code, dict(namespace))
            self.assertReloads(f"docs/{page} example {n}", running, again)

    def test_tac_examples(self):
        """Each example host of tac/."""
        tac = os.path.join(REPO, "tac")
        names = sorted(n for n in os.listdir(tac) if n.endswith(".tac"))
        self.assertTrue(names)
        for name in names:
            path = os.path.join(tac, name)
            self.assertReloads(f"tac/{name}", loadHost(path), loadHost(path))


class SupervisorSettingsReloadTests(SynchronousTestCase):
    """A host that declares C{SupervisorSettings}: its deploys reload as any others', and its
    settings are a difference of their own (applied live where the supervisor can take it)."""

    def setUp(self):
        from salvusctl.supervisor.build import SupervisorSettings

        self.Settings = SupervisorSettings

        def host(**settings):
            h = _host([Deploy("a", command=CMD)])
            h.add(SupervisorSettings(**settings))
            return h

        self.host = host
        self.running = host(max_processes=4)
        self.next = self.running
        self.running.source = lambda: self.next
        self.supervisor = _Supervisor([Deploy("a", command=CMD)])
        self.supervisor.maxProcesses, self.supervisor.drainTimeout = 4, 30.0
        context = SimpleNamespace(services={"supervisor": self.supervisor, "balancer": _Balancer([]),
                                            "monitor": _Monitor()}, host=self.running)
        self.reloader = HostReloader(self.running, context)

    def test_sameConfigNoDifference(self):
        """The settings are no deploy: no AttributeError, no phantom deploy, nothing to apply."""
        self.next = self.host(max_processes=4)
        self.assertEqual(self.reloader.diff(), {})
        self.assertEqual(self.successResultOf(self.reloader.reconcile()), {})
        self.assertEqual(self.supervisor.reloaded, [])

    def test_deployChangeReloadsOnlyDeploys(self):
        """A changed deploy beside the settings: the supervisor is given the deploys alone."""
        self.next = self.host(max_processes=4)
        self.next.add(Deploy("b", command=CMD))
        self.assertEqual(self.successResultOf(self.reloader.reconcile()),
                         {"supervisor": {"added": ["b"], "changed": [], "removed": []}})
        self.assertEqual(self.supervisor.reloaded, [["a", "b"]])

    def test_limitsApplyLive(self):
        """max_processes and drain_timeout reach the running supervisor; the diff is then empty."""
        from salvusctl.supervisor.reload import SETTINGS_KEY

        self.next = self.host(max_processes=8, drain_timeout=5.0)
        expected = {SETTINGS_KEY: {"added": [], "changed": ["drain_timeout", "max_processes"], "removed": []}}
        self.assertEqual(self.successResultOf(self.reloader.reconcile()), expected)
        self.assertEqual((self.supervisor.maxProcesses, self.supervisor.drainTimeout), (8, 5.0))
        self.assertEqual(self.reloader.diff(), {})

    def test_directoriesNeedARestart(self):
        """A moved run directory is reported for a restart and not applied."""
        from salvusctl.supervisor.reload import SETTINGS_KEY

        self.next = self.host(max_processes=8, run_dir="/tmp/elsewhere")
        entry = self.successResultOf(self.reloader.reconcile())[SETTINGS_KEY]
        self.assertEqual((entry["changed"], entry["restart"]), (["max_processes", "run_dir"], True))
        self.assertEqual(self.supervisor.maxProcesses, 4)

    def test_outOfProcessModelHasNoPhantom(self):
        """Read out of process (reread, avail): the settings are neither a deploy nor a group."""
        from salvusctl.admin.processgroups import groupDiff
        from salvusctl.host.model import DeclaredHost, describe
        from salvusctl.supervisor.reload import SETTINGS_KEY, deploysOf

        model = DeclaredHost(describe(self.host(max_processes=4)))
        self.assertEqual(self.reloader.diff(model), {})
        self.assertEqual([d.name for d in deploysOf(model.declarations("supervisor"))], ["a"])
        self.assertEqual(groupDiff(dict(self.supervisor.deploys), model.declarations("supervisor")),
                         [[], [], []])
        changed = self.reloader.diff(DeclaredHost(describe(self.host(max_processes=9))))
        self.assertEqual(changed[SETTINGS_KEY]["changed"], ["settings"])

"""Declarations and builders of the monitor and the alerts."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.alerts.actions import EmailAction, RecordAction, WebhookAction
from salvusctl.alerts.build import AlertRule, AlertSettings, EmailAlerts, WebhookAlerts, buildAlerts
from salvusctl.errors import ConfigError
from salvusctl.host import Host, HostContext
from salvusctl.monitor.build import Monitor, buildMonitor, wireMonitor
from salvusctl.monitor.loadsource import MonitorLoadSource
from salvusctl.monitor.retention import RetentionPolicy
from salvusctl.monitor.service import MonitorService
from tests.monitor.fakes import FakeSupervisor, SyncSQLiteStore, inline, tempDir


class HookedSupervisor(FakeSupervisor):
    def __init__(self):
        super().__init__()
        self.hooks = []

    def setStoreHook(self, hook):
        self.hooks.append(hook)


class BuildTests(SynchronousTestCase):
    def context(self, **services):
        clock = Clock()
        store = SyncSQLiteStore(clock)
        host = Host(name="h1", var=os.path.join(tempDir(self), "var"))
        return HostContext(reactor=clock, host=host, store=store, var_dir=host.var_dir,
                           services=dict(services))

    def test_hostBuildsMonitorAndAlerts(self):
        """A .tac with Monitor and alert declarations builds both services, in order."""
        var = tempDir(self)
        host = Host(name="h1", store="sqlite:" + os.path.join(var, "s.db"), var=var)
        host.add(Monitor(interval=2.0, memcached="tcp:127.0.0.1:11211"))
        host.add(AlertRule("cpu", 90, seconds=30))
        host.add(AlertRule("fatal", severity="critical"))
        host.add(EmailAlerts("127.0.0.1", "salvus@h1.test", ["ops@x.test"], port=2525))
        host.add(WebhookAlerts("http://127.0.0.1:9/hook"))
        host.add(AlertSettings(repeat_interval=600))
        top = host.build(MemoryReactorClock())
        names = [s.name for s in top]
        self.assertEqual(names, ["store", "monitor", "alerts"])
        monitor, alerts = top.getServiceNamed("monitor"), top.getServiceNamed("alerts")
        self.assertIsInstance(monitor, MonitorService)
        self.assertEqual(monitor.interval, 2.0)
        self.assertEqual([type(a) for a in alerts.actions], [RecordAction, EmailAction, WebhookAction])
        self.assertEqual(alerts.repeat_interval, 600)

    def test_fromATacFile(self):
        """The declarations as a .tac file writes them, through the config loader."""
        from salvusctl.host.loading import loadHost

        var = tempDir(self)
        path = os.path.join(var, "host.tac")
        with open(path, "w") as f:
            f.write(
                "from salvusctl.host import Host\n"
                "from salvusctl.monitor import Monitor, MonitorLoadSource\n"
                "from salvusctl.alerts import AlertRule, AlertSettings\n"
                f"host = Host(name='h1', store='sqlite:{var}/s.db', var='{var}')\n"
                "load = MonitorLoadSource()\n"
                "host.add(Monitor(interval=1, load_source=load))\n"
                "host.add(AlertRule('rss', 512, deploy='web'))\n"
                "host.add(AlertSettings(repeat_interval=7200))\n"
            )
        top = loadHost(path).build(MemoryReactorClock())
        self.assertEqual(top.getServiceNamed("alerts").rules[0].label, "rss:web")
        with open(path, "a") as f:
            f.write("host.add(AlertRule('rss'))\n")
        with self.assertRaises(ConfigError) as e:
            loadHost(path).build(MemoryReactorClock())
        self.assertIn("host.tac:9", str(e.exception))
        self.assertIn("needs a numeric threshold", str(e.exception))

    def test_wiresSupervisorHookAndBalancer(self):
        """The monitor observes the supervisor, takes its log lines and feeds the balancer's
        least-load group the unbound load source its declaration was given."""
        from twisted.internet.testing import MemoryReactorClock

        from salvusctl.balancer.control import BalancerService
        from salvusctl.balancer.declare import Balanced, Group

        source = MonitorLoadSource()
        balancer = BalancerService(MemoryReactorClock(), [Balanced("web", listen=["tcp:0"], groups=[
            Group("workers", scheduler="leastload", scheduler_options={"source": source})])])
        supervisor = HookedSupervisor()
        ctx = self.context(supervisor=supervisor, balancer=balancer)
        monitor = buildMonitor(ctx, [Monitor(address="10.0.0.5")], supervisor=supervisor)
        self.assertFalse(source.bound)  # the builder reaches into no other service
        wireMonitor(ctx, monitor)
        self.assertEqual(supervisor.hooks, [monitor.storeLogLine])
        self.assertTrue(source.bound)
        self.successResultOf(ctx.store.start())
        monitor._run = inline
        monitor.startService()
        self.assertEqual(supervisor._observers, [monitor.instanceChanged])
        self.successResultOf(monitor.stopService())

    def test_logHookReachesTheRealSupervisorsInstanceLogs(self):
        """The real supervisor's instance logs, made before the monitor, get its store hook, and
        their C{LogLine}s land in the log table."""
        from types import SimpleNamespace

        from salvusctl.supervisor.deploy import Deploy
        from salvusctl.supervisor.service import SupervisorService

        supervisor = SupervisorService(Clock(), [Deploy("web", command=["true"], autostart=False)],
                                       runDir=os.path.join(tempDir(self), "run"))
        ctx = self.context(supervisor=supervisor)
        monitor = buildMonitor(ctx, [Monitor()], supervisor=supervisor)
        wireMonitor(ctx, monitor)
        hook = supervisor.instances["web:0"].log.storeHook
        self.assertEqual(hook, monitor.storeLogLine)
        self.successResultOf(ctx.store.start())
        monitor._run = inline
        monitor.startService()
        hook(SimpleNamespace(instance="web:0", stream="stderr", level="error", text="boom", time=7.0))
        self.successResultOf(monitor.flush())
        self.assertEqual(ctx.store.rows("SELECT instance, level, text, received_at FROM logs"),
                         [("web:0", "error", "boom", 7.0)])
        self.successResultOf(monitor.stopService())

    def test_loadSourceDeclaredBeforeTheMonitor(self):
        """A load source made in the .tac for the balancer is bound when the monitor is built."""
        source = MonitorLoadSource()
        self.assertIsNone(source.loadOf(("127.0.0.1", 8001)))
        monitor = buildMonitor(self.context(), [Monitor(load_source=source)])
        monitor._latest = {"web:0": {"name": "web:0", "group": "web", "state": "RUNNING",
                                     "port": 8001, "cpu_percent": 12.5}}
        self.assertEqual(source.loadOf(("127.0.0.1", 8001)), 12.5)
        with self.assertRaises(ConfigError):
            Monitor(load_source=object()).validate(Host(name="h1"))

    def test_badDeclarations(self):
        """Each bad value is one ConfigError naming the argument."""
        host = Host(name="h1")
        cases = [
            (Monitor(interval=0), "interval"),
            (Monitor(buffer_rows=-5), "buffer_rows"),
            (Monitor(memcached="11211"), "memcached"),
            (Monitor(retention={"nope": {"max_age": 5}}), "unknown table"),
            (Monitor(retention={"status": {"max_age": -1}}), "max_age"),
            (AlertRule("cpu"), "threshold"),
            (EmailAlerts("smtp", "salvus@x", []), "recipient"),
            (EmailAlerts("smtp", "salvus@x", ["a@b"], port=0), "port"),
            (WebhookAlerts("file:///etc/passwd"), "http"),
            (AlertSettings(repeat_interval=-1), "repeat_interval"),
        ]
        for declaration, words in cases:
            with self.assertRaises(ConfigError) as e:
                declaration.validate(host)
            self.assertIn(words, str(e.exception))

    def test_retentionOverrides(self):
        """Retention given per table overrides the defaults; None removes a table's policy."""
        policies = Monitor(retention={"status": {"max_rows": 10}, "logs": None}).policies()
        self.assertEqual(policies["status"], RetentionPolicy(max_rows=10))
        self.assertNotIn("logs", policies)

    def test_alertsNeedTheMonitor(self):
        """Rules without a monitor to feed them are refused at build time."""
        with self.assertRaises(ConfigError):
            buildAlerts(self.context(), [AlertRule("fatal")])
        monitor = buildMonitor(self.context(), [])
        with self.assertRaises(ConfigError) as e:
            buildAlerts(self.context(), [AlertRule("fatal"), AlertRule("fatal")], monitor=monitor)
        self.assertIn("share the name", str(e.exception))
        self.assertIsNone(buildAlerts(self.context(), [AlertSettings()], monitor=monitor))

    def test_oneMonitorPerHost(self):
        with self.assertRaises(ConfigError):
            buildMonitor(self.context(), [Monitor(), Monitor()])

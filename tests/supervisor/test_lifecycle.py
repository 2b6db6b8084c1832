"""The instance state machine and the service's ordering, under a Clock with a fake OS."""

from __future__ import annotations

import signal

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from salvusctl.interfaces import ISupervisor
from salvusctl.supervisor.deploy import Backoff, Deploy, Flapping, Probe, Ready
from salvusctl.supervisor.notify import NotifySocket
from salvusctl.supervisor.process import (
    IInstanceOwner,
    INotifyChannel,
    InstanceFatal,
    IProcessOS,
    ProcessOS,
    StartRefused,
)
from salvusctl.supervisor.service import DependencyFailed, SupervisorService
from salvusctl.supervisor.testing import FakeOS
from tests.supervisor import scratch


def deploy(name="web", **kw) -> Deploy:
    kw.setdefault("command", ["/bin/true"])
    return Deploy(name, **kw)


class Harness(SynchronousTestCase):
    def make(self, *deploys, prober=None, **kw) -> SupervisorService:
        self.clock = Clock()
        self.fake = FakeOS(self.clock)
        svc = SupervisorService(self.clock, list(deploys), runDir=scratch(self), os=self.fake,
                                prober=prober, reapInterval=0, **kw)
        self.events: list[tuple[str, str, str, str]] = []
        svc.addObserver(lambda n, o, new, info: self.events.append((n, o.name, new.name, info["event"])))
        self.svc = svc
        return svc

    def state(self, name: str) -> str:
        return self.svc.instanceInfo(name)["state"]

    def pid(self, name: str) -> int:
        return self.svc.instanceInfo(name)["pid"]


class StartTests(Harness):
    def test_interface(self):
        """The real service provides ISupervisor, so the admin can rely on it; the fake OS and the
        real one provide the same IProcessOS, so the fake cannot drift."""
        verifyObject(ISupervisor, self.make(deploy()))
        verifyObject(IProcessOS, self.fake)
        verifyObject(IProcessOS, ProcessOS(self.clock))

    def test_ownerInterface(self):
        """An instance meets its supervisor only through IInstanceOwner, which the real service
        provides; a fake owner for an instance's own tests can check itself against the same."""
        verifyObject(IInstanceOwner, self.make(deploy()))
        verifyObject(INotifyChannel, self.fake.openNotify("t", lambda pid, fields: None))
        self.assertTrue(INotifyChannel.implementedBy(NotifySocket))

    def test_orphanAdoptedThroughTheOS(self):
        """An orphan the OS reports adopted becomes a member of its running instance at the next
        reaper pass: the service asks the OS, whichever it is, and never which one it is."""
        svc = self.make(deploy(startsecs=0))
        svc.startService()
        self.clock.advance(0.1)
        self.fake.adopt(4242, "web:0")
        svc.reapPass()
        self.assertIn(4242, svc.instances["web:0"].members)

    def test_running_after_startsecs(self):
        """STARTING turns RUNNING only once the process has lived startsecs."""
        svc = self.make(deploy(startsecs=2))
        d = svc.startInstance("web:0")
        self.assertEqual(self.state("web:0"), "STARTING")
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.successResultOf(d)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertEqual(self.svc.instanceInfo("web:0")["statecode"], 20)

    def test_numprocs_ports_and_templates(self):
        """Each instance gets its own port, substituted in argv, env and the rendered config file."""
        svc = self.make(deploy(command=["/bin/echo", "--port={port}", "{name}"], numprocs=3, port=7000,
                               env={"LISTEN": "127.0.0.1:{port}"},
                               templates={"app.conf": "server { listen {port}; } # {name}\n"}))
        svc.startDeploy("web")
        argvs = [s.argv for s in self.fake.spawned]
        self.assertEqual(argvs[2], ["/bin/echo", "--port=7002", "web:2"])
        self.assertEqual(self.fake.spawned[1].env["LISTEN"], "127.0.0.1:7001")
        self.assertEqual(self.fake.spawned[1].env["PORT"], "7001")
        with open(svc.instances["web:1"].runDir + "/app.conf") as f:
            self.assertEqual(f.read(), "server { listen 7001; } # web:1\n")

    def test_store_hook_set_later(self):
        """The monitor can plug the store in after the supervisor is built."""
        svc = self.make(deploy(startsecs=0, store_level="warning"))
        svc.startInstance("web:0")
        got = []
        svc.setStoreHook(got.append)
        self.fake.output(self.pid("web:0"), b"INFO quiet\nWARNING loud\n")
        self.assertEqual([(x.instance, x.text, x.level) for x in got], [("web:0", "WARNING loud", "warning")])

    def test_env_marker(self):
        """Every instance carries a marker its descendants inherit (orphan attribution)."""
        svc = self.make(deploy())
        svc.startInstance("web:0")
        self.assertEqual(self.fake.latest().env["SALVUS_INSTANCE"], svc.token + "/web:0")

    def test_spawn_error_backs_off(self):
        """A spawn that raises counts as a failed start, with the error kept in spawnerr."""
        svc = self.make(deploy(startretries=1))
        self.fake.failSpawn = OSError("no such file")
        d = svc.startInstance("web:0")
        self.assertEqual(self.state("web:0"), "BACKOFF")
        self.assertIn("no such file", svc.instanceInfo("web:0")["spawnerr"])
        self.clock.advance(1)
        self.assertEqual(self.state("web:0"), "FATAL")
        self.failureResultOf(d, InstanceFatal)


class BackoffTests(Harness):
    def test_exponential_backoff_with_cap_then_fatal(self):
        """Exits before startsecs retry after 1, 2, 4, 4 s (cap), then FATAL after the retries."""
        svc = self.make(deploy(startsecs=5, backoff=Backoff(initial=1, factor=2, cap=4, retries=4),
                               flapping=None))
        d = svc.startInstance("web:0")
        delays = []
        for _ in range(4):
            self.fake.exit(self.pid("web:0"), 1)
            self.assertEqual(self.state("web:0"), "BACKOFF")
            before = len(self.fake.spawned)
            waited = 0.0
            while len(self.fake.spawned) == before:
                self.clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 4.0])
        self.fake.exit(self.pid("web:0"), 1)
        self.assertEqual(self.state("web:0"), "FATAL")
        self.assertIn("Exited too quickly", self.failureResultOf(d, InstanceFatal).getErrorMessage())

    def test_unlimited_retries(self):
        """startretries=None never gives up: 50 early exits, still retrying, delay capped."""
        svc = self.make(deploy(startsecs=5, startretries=None, backoff=Backoff(initial=0.1, cap=0.5),
                               flapping=None))
        svc.startInstance("web:0")
        for _ in range(50):
            self.fake.exit(self.pid("web:0"), 1)
            self.clock.advance(0.5)
        self.assertEqual(self.state("web:0"), "STARTING")
        self.assertEqual(svc.instances["web:0"].backoffCount, 50)

    def test_running_resets_backoff(self):
        """Reaching RUNNING forgets earlier failed starts."""
        svc = self.make(deploy(startsecs=1, startretries=2, flapping=None, autorestart="never"))
        svc.startInstance("web:0")
        self.fake.exit(self.pid("web:0"), 1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertEqual(svc.instances["web:0"].backoffCount, 0)


class ExitTests(Harness):
    def run_and_exit(self, code, **kw):
        svc = self.make(deploy(startsecs=0, **kw))
        svc.startInstance("web:0")
        self.assertEqual(self.state("web:0"), "RUNNING")
        before = len(self.fake.spawned)
        self.fake.exit(self.pid("web:0"), code)
        return len(self.fake.spawned) - before

    def test_unexpected_exit_restarts_at_once(self):
        """A crash of a RUNNING instance respawns it in the same turn: no poll interval."""
        self.assertEqual(self.run_and_exit(3), 1)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertIn(("web:0", "RUNNING", "EXITED", "state"), self.events)

    def test_expected_exit_is_not_restarted(self):
        """autorestart=unexpected leaves an exit code listed in exitcodes EXITED."""
        self.assertEqual(self.run_and_exit(0), 0)
        self.assertEqual(self.state("web:0"), "EXITED")

    def test_custom_exitcodes(self):
        self.assertEqual(self.run_and_exit(2, exitcodes=[0, 2]), 0)

    def test_autorestart_always_and_never(self):
        self.assertEqual(self.run_and_exit(0, autorestart="always"), 1)
        self.assertEqual(self.run_and_exit(1, autorestart="never"), 0)
        self.assertEqual(self.state("web:0"), "EXITED")

    def test_flapping_goes_fatal_with_reason(self):
        """Five restarts within 10 s are allowed; the next exit makes the instance FATAL, and the
        reason counts the five restarts that were made."""
        svc = self.make(deploy(startsecs=0, flapping=Flapping(restarts=5, window=10)))
        svc.startInstance("web:0")
        for _ in range(5):
            self.clock.advance(1)
            self.fake.exit(self.pid("web:0"), 1)
            self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertEqual(svc.instanceInfo("web:0")["restarts"], 5)
        self.clock.advance(1)
        self.fake.exit(self.pid("web:0"), 1)
        info = svc.instanceInfo("web:0")
        self.assertEqual(info["state"], "FATAL")
        self.assertEqual(info["restarts"], 5)
        self.assertEqual(info["reason"], "flapping: 5 restarts in 10s")
        self.assertEqual(info["description"], "flapping: 5 restarts in 10s")

    def test_flapping_count_default(self):
        """The default, Flapping(10, 60): ten restarts, then "10 restarts" (not after nine)."""
        svc = self.make(deploy(startsecs=0))
        svc.startInstance("web:0")
        for _ in range(10):
            self.clock.advance(1)
            self.fake.exit(self.pid("web:0"), 1)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.fake.exit(self.pid("web:0"), 1)
        info = svc.instanceInfo("web:0")
        self.assertEqual((info["state"], info["restarts"]), ("FATAL", 10))
        self.assertEqual(info["reason"], "flapping: 10 restarts in 60s")

    def test_flapping_counts_backoff_retries(self):
        """Starts that fail (BACKOFF, retried) are restarts too, counted the same way."""
        svc = self.make(deploy(startsecs=5, startretries=100,
                               backoff=Backoff(initial=0.1, factor=1, cap=0.1),
                               flapping=Flapping(restarts=3, window=60)))
        d = svc.startInstance("web:0")
        for _ in range(3):
            self.fake.exit(self.pid("web:0"), 1)
            self.assertEqual(self.state("web:0"), "BACKOFF")
            self.clock.advance(0.1)
            self.assertEqual(self.state("web:0"), "STARTING")
        self.fake.exit(self.pid("web:0"), 1)
        info = svc.instanceInfo("web:0")
        self.assertEqual((info["state"], info["restarts"]), ("FATAL", 3))
        self.assertEqual(info["reason"], "flapping: 3 restarts in 60s")
        self.failureResultOf(d, InstanceFatal)

    def test_slow_crashes_are_not_flapping(self):
        """The same number of restarts spread wider than the window never trips it."""
        svc = self.make(deploy(startsecs=0, flapping=Flapping(restarts=3, window=10)))
        svc.startInstance("web:0")
        for _ in range(20):
            self.clock.advance(6)
            self.fake.exit(self.pid("web:0"), 1)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertEqual(svc.instanceInfo("web:0")["restarts"], 20)

    def test_start_after_fatal_forgets_history(self):
        svc = self.make(deploy(startsecs=0, flapping=Flapping(restarts=2, window=10)))
        svc.startInstance("web:0")
        for _ in range(3):
            self.fake.exit(self.pid("web:0"), 1)
        self.assertEqual(self.state("web:0"), "FATAL")
        self.successResultOf(svc.startInstance("web:0"))
        self.assertEqual(self.state("web:0"), "RUNNING")


class StopTests(Harness):
    def test_stop_signals_group_and_waits(self):
        """Stop sends stopsignal to the whole group and fires once the process is gone."""
        svc = self.make(deploy(startsecs=0, stopsignal="INT"))
        svc.startInstance("web:0")
        pid = self.pid("web:0")
        d = svc.stopInstance("web:0")
        self.assertEqual(self.state("web:0"), "STOPPING")
        self.assertIn(((pid,), signal.SIGINT), self.fake.signals)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(self.state("web:0"), "STOPPED")

    def test_sigkill_after_stopwaitsecs(self):
        """A process ignoring the stop signal gets SIGKILL after stopwaitsecs, not before."""
        svc = self.make(deploy(startsecs=0, stopwaitsecs=3))
        svc.startInstance("web:0")
        pid = self.pid("web:0")
        self.fake.stubborn.add(pid)
        d = svc.stopInstance("web:0")
        self.clock.pump([0.05] * 58)
        self.assertNoResult(d)
        self.assertNotIn(signal.SIGKILL, [s for _, s in self.fake.signals])
        self.clock.pump([0.05] * 5)
        self.assertIn(((pid,), signal.SIGKILL), self.fake.signals)
        self.clock.advance(0.1)
        self.successResultOf(d)

    def test_stop_in_backoff(self):
        svc = self.make(deploy(startsecs=5))
        d = svc.startInstance("web:0")
        self.fake.exit(self.pid("web:0"), 1)
        self.successResultOf(svc.stopInstance("web:0"))
        self.assertEqual(self.state("web:0"), "STOPPED")
        self.clock.advance(100)
        self.assertEqual(len(self.fake.spawned), 1)
        self.failureResultOf(d)

    def test_signal_instance(self):
        svc = self.make(deploy(startsecs=0))
        svc.startInstance("web:0")
        svc.signalInstance("web:0", "HUP")
        self.assertEqual(self.fake.signals[-1], ((self.pid("web:0"),), signal.SIGHUP))
        self.assertRaises(ValueError, svc.signalInstance, "web:0", "NOPE")


class OrderTests(Harness):
    def test_dependent_waits_for_probe(self):
        """A dependent starts only after its dependency is RUNNING and its probe answers."""
        answers: dict[str, Deferred] = {}

        def prober(instance):
            answers[instance.name] = d = Deferred()
            return d

        svc = self.make(deploy("db", startsecs=1, port=5432, probe=Probe(interval=1)),
                        deploy("app", depends_on=["db"], startsecs=0), prober=prober)
        done = svc.startAll()
        self.assertEqual([s.argv for s in self.fake.spawned], [["/bin/true"]])
        self.clock.advance(1)
        self.assertEqual(self.state("db:0"), "RUNNING")
        self.assertEqual(self.state("app:0"), "STOPPED")
        answers["db:0"].callback(True)
        self.assertEqual(self.state("app:0"), "RUNNING")
        self.successResultOf(done)
        self.assertIn(("db:0", "RUNNING", "RUNNING", "ready"), self.events)

    def test_failed_dependency_fails_dependent(self):
        svc = self.make(deploy("db", startsecs=1, startretries=0), deploy("app", depends_on=["db"]))
        done = svc.startAll()
        self.fake.exit(self.pid("db:0"), 1)
        f = self.failureResultOf(done)
        self.assertEqual(self.state("app:0"), "STOPPED")
        self.assertIn("db:0", f.getErrorMessage())

    def test_start_dependent_starts_dependency(self):
        svc = self.make(deploy("db", startsecs=0, autostart=False), deploy("app", depends_on=["db"],
                                                                              startsecs=0))
        self.successResultOf(svc.startDeploy("app"))
        self.assertEqual((self.state("db:0"), self.state("app:0")), ("RUNNING", "RUNNING"))

    def test_startAll_everything_starts_autostart_false(self):
        """startAll() at start-up leaves autostart=False deploys alone; startAll(everything=True),
        what supervisord's startAllProcesses and `supervisorctl start all` do, starts them too."""
        svc = self.make(deploy("a", startsecs=0), deploy("m", startsecs=0, autostart=False))
        self.successResultOf(svc.startAll())
        self.assertEqual((self.state("a:0"), self.state("m:0")), ("RUNNING", "STOPPED"))
        self.successResultOf(svc.startAll(everything=True))
        self.assertEqual((self.state("a:0"), self.state("m:0")), ("RUNNING", "RUNNING"))

    def test_priority_orders_spawns(self):
        svc = self.make(deploy("c", priority=30, command=["/bin/echo", "c"]),
                        deploy("a", priority=10, command=["/bin/echo", "a"]),
                        deploy("b", priority=20, command=["/bin/echo", "b"]))
        svc.startAll()
        self.assertEqual([s.argv[1] for s in self.fake.spawned], ["a", "b", "c"])
        self.assertEqual([i["name"] for i in svc.instanceInfos()], ["a:0", "b:0", "c:0"])

    def test_stop_reverse_dependency_order(self):
        """db stops only after app (which depends on it) has fully stopped."""
        svc = self.make(deploy("db", startsecs=0), deploy("app", depends_on=["db"], startsecs=0))
        svc.startAll()
        app, db = self.pid("app:0"), self.pid("db:0")
        d = svc.stopAll()
        self.assertEqual([p for p, _ in self.fake.signals], [(app,)])
        self.clock.advance(0.1)
        self.assertEqual([p for p, _ in self.fake.signals], [(app,), (db,)])
        self.clock.advance(0.1)
        self.successResultOf(d)

    def test_groups(self):
        svc = self.make(deploy("a", group="g", startsecs=0), deploy("b", group="g", startsecs=0),
                        deploy("c", startsecs=0))
        self.successResultOf(svc.startGroup("g"))
        self.assertEqual([self.state(n) for n in ("a:0", "b:0", "c:0")], ["RUNNING", "RUNNING", "STOPPED"])
        self.assertEqual(svc.groups(), {"g": ["a", "b"], "c": ["c"]})
        d = svc.stopGroup("g")
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertRaises(KeyError, svc.startGroup, "nope")


class LimitTests(Harness):
    def test_global_limit_refuses_with_reason(self):
        """A start past the global limit fails at once with the reason, nothing is queued."""
        svc = self.make(deploy("a", numprocs=2, startsecs=0), deploy("b", startsecs=0), maxProcesses=2)
        self.successResultOf(svc.startDeploy("a"))
        f = self.failureResultOf(svc.startInstance("b:0"), StartRefused)
        self.assertIn("global limit of 2 simultaneous processes", f.getErrorMessage())
        self.assertEqual(self.state("b:0"), "STOPPED")
        self.assertIn("global limit", svc.instanceInfo("b:0")["spawnerr"])

    def test_per_deploy_limit(self):
        svc = self.make(deploy("a", numprocs=3, startsecs=0, max_processes=2))
        f = self.failureResultOf(svc.startDeploy("a"), StartRefused)
        self.assertIn("deploy 'a' already runs its limit of 2", f.getErrorMessage())
        self.assertEqual([self.state(f"a:{i}") for i in range(3)], ["RUNNING", "RUNNING", "STOPPED"])


class RollingTests(Harness):
    def test_rolling_restart_drains_one_at_a_time(self):
        """Each instance is drained (hook), stopped, started and ready before the next is touched."""
        svc = self.make(deploy(numprocs=3, startsecs=0))
        svc.startAll()
        log = []
        drains: list[Deferred] = []

        def drain(name, info):
            log.append(("drain", name, info["state"]))
            drains.append(Deferred())
            return drains[-1]

        svc.addBeforeStop(drain)
        svc.addObserver(lambda n, o, new, info: log.append((info["event"], n)) if info["event"] != "state"
                        else None)
        old = [self.pid(f"web:{i}") for i in range(3)]
        d = svc.restartDeploy("web", batch=1)
        self.assertEqual(log, [("drain", "web:0", "RUNNING")])
        self.assertEqual(self.state("web:1"), "RUNNING")
        self.assertEqual(self.fake.signals, [])  # nothing signalled until the drain finished
        drains[0].callback(None)
        self.clock.advance(0.1)
        self.assertEqual(log[1:4], [("unready", "web:0"), ("ready", "web:0"), ("drain", "web:1", "RUNNING")])
        drains[1].callback(None)
        self.clock.advance(0.1)
        drains[2].callback(None)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertTrue(all(self.pid(f"web:{i}") not in old for i in range(3)))

    def test_drain_timeout(self):
        """A hook that never answers delays the stop by drainTimeout, not forever."""
        svc = self.make(deploy(startsecs=0), drainTimeout=5)
        svc.startAll()
        svc.addBeforeStop(lambda n, i: Deferred())
        d = svc.stopInstance("web:0")
        self.clock.advance(4.9)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.clock.advance(0.2)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.flushLoggedErrors()


class ProbeTests(Harness):
    def test_lost_contact_restarts(self):
        """Three failed probes in a row restart the instance (seed: restart on lost contact)."""
        results = {"ok": True}
        svc = self.make(deploy(startsecs=0, port=8000, probe=Probe(interval=1, failures=3)),
                        prober=lambda inst: results["ok"])
        svc.startAll()
        self.clock.advance(0)
        first = self.pid("web:0")
        self.assertTrue(svc.instanceInfo("web:0")["ready"])
        results["ok"] = False
        self.clock.advance(1)
        self.assertFalse(svc.instanceInfo("web:0")["ready"])
        self.clock.advance(1)
        self.assertEqual(self.pid("web:0"), first)
        self.clock.advance(1)
        results["ok"] = True
        self.clock.advance(0.1)
        self.clock.advance(0)
        self.assertNotEqual(self.pid("web:0"), first)
        self.assertTrue(svc.instanceInfo("web:0")["ready"])
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertIn("liveness probe failed 3 times", svc.instanceInfo("web:0")["restart_reason"])


class ReloadTests(Harness):
    def test_reload_applies_only_differences(self):
        """Unchanged keeps its pid; changed restarts; removed stops; added starts."""
        svc = self.make(deploy("same", startsecs=0), deploy("changed", startsecs=0),
                        deploy("gone", startsecs=0))
        svc.startService()
        pids = {n: self.pid(n + ":0") for n in ("same", "changed", "gone")}
        d = svc.reload([deploy("same", startsecs=0, priority=5),
                        deploy("changed", startsecs=0, command=["/bin/echo", "v2"]),
                        deploy("new", startsecs=0)])
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d),
                         {"added": ["new"], "changed": ["changed"], "scaled": [], "removed": ["gone"],
                          "rolled": []})
        self.assertEqual(self.pid("same:0"), pids["same"])
        self.assertNotEqual(self.pid("changed:0"), pids["changed"])
        self.assertEqual(self.fake.latest().argv[0], "/bin/true")
        self.assertNotIn("gone:0", svc.instances)
        self.assertEqual(self.state("new:0"), "RUNNING")
        self.assertNotIn(pids["gone"], self.fake.live)
        d = svc.stopService()
        self.clock.advance(0.1)  # priority 999 (changed, new) stop first ...
        self.clock.advance(0.1)  # ... then priority 5 (same)
        self.successResultOf(d)

    def test_reload_scales_without_touching_kept_instances(self):
        """numprocs 2 -> 4 adds two instances; 4 -> 1 stops three; the survivors keep their pid."""
        svc = self.make(deploy("w", numprocs=2, startsecs=0, port=9000))
        svc.startService()
        keep = self.pid("w:0"), self.pid("w:1")
        d = svc.reload([deploy("w", numprocs=4, startsecs=0, port=9000)])
        self.assertEqual(self.successResultOf(d)["scaled"], ["w"])
        self.assertEqual((self.pid("w:0"), self.pid("w:1")), keep)
        self.assertEqual([self.state(f"w:{i}") for i in range(4)], ["RUNNING"] * 4)
        self.assertEqual(svc.instanceInfo("w:3")["port"], 9003)
        d = svc.reload([deploy("w", numprocs=1, startsecs=0, port=9000)])
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(sorted(svc.instances), ["w:0"])
        self.assertEqual(self.pid("w:0"), keep[0])
        self.assertEqual(len(self.fake.live), 1)

    def test_reload_rolls_a_followed_deploy(self):
        """A changed deploy that a balanced group follows is replaced one instance at a time: the
        next one is drained only once its predecessor's successor is ready, so two of three
        always serve; each successor runs the new declaration on the old port."""
        svc = self.make(deploy("w", numprocs=3, startsecs=1, port="auto", env={"MODE": "one"}))
        svc.startService()
        self.clock.advance(1)
        svc.addRolling("w")
        old = {f"w:{i}": self.pid(f"w:{i}") for i in range(3)}
        ports = {n: svc.instanceInfo(n)["port"] for n in old}
        serving = []
        svc.addBeforeStop(lambda name, info: serving.append(
            (name, sorted(n for n in old if svc.instanceInfo(n)["ready"]))))
        d = svc.reload([deploy("w", numprocs=3, startsecs=1, port="auto", env={"MODE": "two"})])
        for _ in range(40):
            self.clock.advance(0.1)
        result = self.successResultOf(d)
        self.assertEqual((result["changed"], result["rolled"]), (["w"], ["w"]))
        self.assertEqual(serving, [("w:0", ["w:0", "w:1", "w:2"]), ("w:1", ["w:0", "w:1", "w:2"]),
                                   ("w:2", ["w:0", "w:1", "w:2"])])
        for name in old:
            self.assertNotEqual(self.pid(name), old[name])
            self.assertEqual(svc.instanceInfo(name)["port"], ports[name])
            self.assertEqual(self.state(name), "RUNNING")
        self.assertEqual([s.env["MODE"] for s in self.fake.spawned[3:]], ["two"] * 3)
        self.assertEqual(svc.deploys["w"].env, {"MODE": "two"})
        # one instance of three down at a time: never two stopped at once
        downs = [e for e in self.events if e[2] == "STOPPED"]
        self.assertEqual([e[0] for e in downs], ["w:0", "w:1", "w:2"])

    def test_reload_roll_stops_at_an_instance_that_fails(self):
        """A new declaration that cannot start stops the roll at its first instance: the others
        keep running the old one, and the deploy stays recorded as changed for the next reload."""
        svc = self.make(deploy("w", numprocs=3, startsecs=0, port="auto", startretries=1))
        svc.startService()
        svc.addRolling("w")
        old = {f"w:{i}": self.pid(f"w:{i}") for i in range(3)}
        running = svc.deploys["w"]
        self.fake.failSpawn = OSError(2, "No such file or directory")
        d = svc.reload([deploy("w", numprocs=3, startsecs=0, port="auto", startretries=1,
                               command=["/bin/false"])])
        for _ in range(100):
            self.clock.advance(1)
        f = self.failureResultOf(d)
        self.assertIn("rolling restart of w stopped", str(f.value))
        self.assertIn("w:1, w:2 keep the old declaration", str(f.value))
        self.assertEqual((self.pid("w:1"), self.pid("w:2")), (old["w:1"], old["w:2"]))
        self.assertIs(svc.deploys["w"], running)
        self.flushLoggedErrors()

    def test_reload_rolls_a_deploy_a_rule_covers(self):
        """addRolling with a rule (the cluster publisher's "every deploy with a port") rolls each
        changed deploy it matches, and only those; removeRolling with the same rule undoes it."""
        def rule(d):
            return d.port is not None

        svc = self.make(deploy("w", numprocs=2, startsecs=0, port="auto"), deploy("b", startsecs=0))
        svc.startService()
        svc.addRolling(rule)
        self.assertEqual(svc.rollingDeploys(), ["w"])
        d = svc.reload([deploy("w", numprocs=2, startsecs=0, port="auto", env={"X": "1"}),
                        deploy("b", startsecs=0, env={"X": "1"})])
        for _ in range(20):
            self.clock.advance(0.1)
        result = self.successResultOf(d)
        self.assertEqual((result["changed"], result["rolled"]), (["w", "b"], ["w"]))
        svc.removeRolling(rule)
        self.assertEqual(svc.rollingDeploys(), [])

    def test_reload_without_rolling_restarts_at_once(self):
        """rolling=False (and a deploy nothing follows) restarts every instance together."""
        svc = self.make(deploy("w", numprocs=2, startsecs=0))
        svc.startService()
        svc.addRolling("w")
        svc.removeRolling("w")
        self.assertEqual(svc.rollingDeploys(), [])
        d = svc.reload([deploy("w", numprocs=2, startsecs=0, env={"X": "1"})])
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d)["rolled"], [])
        svc.addRolling("w")
        d = svc.reload([deploy("w", numprocs=2, startsecs=0, env={"X": "2"})], rolling=False)
        self.assertEqual([self.state("w:0"), self.state("w:1")], ["STOPPING", "STOPPING"])
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d)["rolled"], [])

    def test_reload_rejects_bad_config_untouched(self):
        from salvusctl.errors import ConfigError

        svc = self.make(deploy("a", startsecs=0))
        svc.startService()
        pid = self.pid("a:0")
        f = self.failureResultOf(svc.reload([deploy("a", depends_on=["b"]), deploy("b", depends_on=["a"])]),
                                 ConfigError)
        self.assertEqual(str(f.value), "dependency cycle: a -> b -> a")
        self.assertEqual(self.pid("a:0"), pid)


class DependencyErrorTests(SynchronousTestCase):
    def test_dependency_failed_type(self):
        self.assertTrue(issubclass(DependencyFailed, Exception))


class ReadyTests(Harness):
    """C{Deploy(ready=...)}: STARTING ends when the instance says it is ready, not after startsecs."""

    def test_notify_ready_ends_starting(self):
        """READY=1 from the leader makes the instance RUNNING and ready at once, long before
        startsecs; STATUS= is kept.  The instance is told where to send it (NOTIFY_SOCKET)."""
        svc = self.make(deploy(ready="notify", startsecs=5))
        d = svc.startInstance("web:0")
        self.assertIn("NOTIFY_SOCKET", self.fake.latest().env)
        self.clock.advance(0.2)
        self.assertEqual(self.state("web:0"), "STARTING")
        self.fake.notify(self.pid("web:0"), {"STATUS": "loading"})
        self.assertEqual(self.state("web:0"), "STARTING")
        self.assertEqual(svc.instanceInfo("web:0")["status"], "loading")
        # supervisord says nothing while STARTING; Salvus's extras stand alone
        self.assertEqual(svc.instanceInfo("web:0")["description"],
                         "waiting for ready (notify), status: loading")
        self.fake.notify(self.pid("web:0"), {"READY": "1", "STATUS": "serving"})
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.successResultOf(d)
        self.assertEqual(svc.instanceInfo("web:0")["status"], "serving")

    def test_notify_from_a_stranger_is_ignored(self):
        """A pid that is no instance's cannot make anything ready."""
        svc = self.make(deploy(ready="notify"))
        d = svc.startInstance("web:0")
        self.fake.notify(424242, {"READY": "1"})
        self.assertEqual(self.state("web:0"), "STARTING")
        self.assertNoResult(d)

    def test_never_ready_times_out_into_backoff(self):
        """No ready signal within the timeout: the attempt is stopped (stopsignal, then SIGKILL if
        it ignores it) and counted as a failed start, with the reason kept; retries, then FATAL."""
        from salvusctl.supervisor.deploy import Ready

        svc = self.make(deploy(ready=Ready("notify", timeout=3), stopwaitsecs=1,
                               backoff=Backoff(initial=1, factor=1, cap=1, retries=1)))
        d = svc.startInstance("web:0")
        first = self.pid("web:0")
        self.fake.stubborn.add(first)
        self.clock.advance(3)
        self.assertEqual(self.fake.live[first].signals, [signal.SIGTERM])
        self.assertEqual(self.state("web:0"), "STARTING")
        self.clock.advance(1)
        self.clock.advance(0)
        self.assertEqual(self.fake.live.get(first), None)
        self.assertEqual(self.state("web:0"), "BACKOFF")
        self.assertIn("not ready within 3s", svc.instanceInfo("web:0")["description"])
        self.clock.advance(1)  # the retry
        self.assertEqual(self.state("web:0"), "STARTING")
        self.clock.advance(3)
        self.clock.advance(0)
        self.assertEqual(self.state("web:0"), "FATAL")
        self.assertIn("not ready within 3s", str(self.failureResultOf(d, InstanceFatal).value))

    def test_extend_timeout(self):
        """EXTEND_TIMEOUT_USEC pushes the start timeout out (never in), as under systemd."""
        from salvusctl.supervisor.deploy import Ready

        svc = self.make(deploy(ready=Ready("notify", timeout=3)))
        svc.startInstance("web:0")
        pid = self.pid("web:0")
        self.fake.stubborn.add(pid)  # keeps its signals on record
        self.clock.advance(2)
        self.fake.notify(pid, {"EXTEND_TIMEOUT_USEC": "5000000"})
        self.fake.notify(pid, {"EXTEND_TIMEOUT_USEC": "1000"})  # shorter: ignored
        self.fake.notify(pid, {"EXTEND_TIMEOUT_USEC": "soon"})  # garbage: ignored
        self.clock.advance(4.9)
        self.assertEqual(self.fake.live[pid].signals, [])
        self.clock.advance(0.2)
        self.assertEqual(self.fake.live[pid].signals, [signal.SIGTERM])

    def test_exit_before_ready_is_a_failed_start(self):
        """An instance that exits before it is ready failed to start, even with startsecs=0."""
        svc = self.make(deploy(ready="notify", startsecs=0))
        svc.startInstance("web:0")
        self.fake.exit(self.pid("web:0"), 1)
        self.assertEqual(self.state("web:0"), "BACKOFF")

    def test_log_line_ready(self):
        """A matching line of this process's output ends STARTING; other lines do not, and a
        line split across reads still matches once whole."""
        from salvusctl.supervisor.deploy import Ready

        svc = self.make(deploy(ready=Ready("log", pattern=r"ready to accept connections")))
        d = svc.startInstance("web:0")
        pid = self.pid("web:0")
        self.fake.output(pid, b"starting up\nLOG: database system is ready to ")
        self.assertEqual(self.state("web:0"), "STARTING")
        self.fake.output(pid, b"accept connections\n", fd=2)
        self.assertEqual(self.state("web:0"), "STARTING")  # another stream: its own line buffer
        self.fake.output(pid, b"accept connections\n")
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.successResultOf(d)

    def test_probe_ready(self):
        """ready='probe': the probe is tried every interval while STARTING; its first success
        makes the instance RUNNING and ready together (no second probe needed)."""
        from salvusctl.supervisor.deploy import Ready

        answers = [False, False, True]
        calls = []

        def prober(instance):
            calls.append((self.clock.seconds(), instance.state.name))
            return answers.pop(0) if answers else True

        svc = self.make(deploy(port=7000, probe=Probe(kind="tcp", interval=5),
                               ready=Ready("probe", interval=0.5)), prober=prober)
        d = svc.startInstance("web:0")
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.state("web:0"), "STARTING")
        self.clock.advance(0.5)
        self.assertEqual(self.state("web:0"), "RUNNING")
        self.assertTrue(svc.instanceInfo("web:0")["ready"])
        self.successResultOf(d)
        self.assertEqual(calls, [(0.5, "STARTING"), (1.0, "STARTING"), (1.5, "STARTING")])
        self.clock.advance(5)  # then the liveness schedule
        self.assertEqual(calls[-1], (6.5, "RUNNING"))

    def test_dependent_starts_when_dependency_notifies(self):
        """depends_on waits for the dependency's ready signal, not for a timer."""
        svc = self.make(deploy("db", ready="notify", startsecs=10),
                        deploy("web", depends_on=["db"], startsecs=0))
        svc.startAll()
        self.assertEqual(self.state("web:0"), "STOPPED")
        self.fake.notify(self.pid("db:0"), {"READY": "1"})
        self.assertEqual(self.state("web:0"), "RUNNING")

    def test_bad_ready_declarations(self):
        """Each impossible ready declaration is refused with a sentence naming the deploy."""
        from salvusctl.errors import ConfigError
        from salvusctl.supervisor.deploy import Ready

        cases = {
            "bogus": "ready must be None",
            Ready("bogus"): "ready kind must be one of",
            "log": "needs a pattern",
            Ready("log", pattern="(unclosed"): "not a regular expression",
            "probe": "needs a probe",
            Ready("notify", timeout=0): "must be > 0",
        }
        for ready, message in cases.items():
            with self.assertRaises(ConfigError) as e:
                deploy(ready=ready).validate()
            self.assertIn("deploy 'web'", str(e.exception))
            self.assertIn(message, str(e.exception))


class WatchdogTests(Harness):
    """Probe(kind='watchdog'): systemd's watchdog protocol as a liveness probe."""

    def make_watchdog(self, **kw):
        svc = self.make(deploy(startsecs=0, probe=Probe(kind="watchdog", interval=1, timeout=5, failures=1),
                               **kw))
        svc.startInstance("web:0")
        return svc

    def test_environment_tells_the_instance(self):
        """The instance learns the socket and the period from its environment, as under systemd."""
        self.make_watchdog()
        env = self.fake.latest().env
        self.assertEqual(env["WATCHDOG_USEC"], "5000000")
        self.assertTrue(env["NOTIFY_SOCKET"].startswith("@salvus-notify-"))

    def test_pings_keep_it_alive_silence_restarts_it(self):
        """WATCHDOG=1 at least every timeout keeps the instance; once it falls silent for longer
        it is restarted, with the reason kept."""
        svc = self.make_watchdog()
        first = self.pid("web:0")
        for _ in range(10):
            self.clock.advance(3)
            self.fake.notify(first, {"WATCHDOG": "1"})
        self.assertEqual(self.pid("web:0"), first)
        self.assertTrue(svc.instanceInfo("web:0")["ready"])
        for _ in range(7):
            self.clock.advance(1)
        self.clock.advance(0)
        self.clock.advance(0.1)
        self.assertNotEqual(self.pid("web:0"), first)
        self.assertIn("liveness probe failed", svc.instanceInfo("web:0")["restart_reason"])

    def test_trigger_restarts_at_once(self):
        """WATCHDOG=trigger is the instance asking to be restarted: it is, at once."""
        svc = self.make_watchdog()
        first = self.pid("web:0")
        self.fake.notify(first, {"WATCHDOG": "trigger"})
        self.clock.advance(0)
        self.clock.advance(0.1)
        self.assertNotEqual(self.pid("web:0"), first)
        self.assertIn("WATCHDOG=trigger", svc.instanceInfo("web:0")["restart_reason"])

    def test_ready_on_first_ping(self):
        """ready='probe' with a watchdog: the first WATCHDOG=1 is the instance's ready signal."""
        from salvusctl.supervisor.deploy import Ready

        svc = self.make(deploy(probe=Probe(kind="watchdog", timeout=5), ready=Ready("probe", interval=0.5)))
        svc.startInstance("web:0")
        self.clock.advance(2)
        self.assertEqual(self.state("web:0"), "STARTING")
        self.fake.notify(self.pid("web:0"), {"WATCHDOG": "1"})
        self.clock.advance(0.5)
        self.assertEqual(self.state("web:0"), "RUNNING")


class NotificationParseTests(SynchronousTestCase):
    def test_fields_and_malformed_lines(self):
        """A datagram's KEY=VALUE lines become fields; lines that are not (no '=', lower-case or
        empty keys, undecodable bytes) are skipped or replaced, never raised."""
        from salvusctl.supervisor.notify import parseNotification

        self.assertEqual(parseNotification(b"READY=1\nSTATUS=up = fine\n"),
                         {"READY": "1", "STATUS": "up = fine"})
        self.assertEqual(parseNotification(b"junk\n=1\nready=1\nEXTEND_TIMEOUT_USEC=5\n"),
                         {"EXTEND_TIMEOUT_USEC": "5"})
        self.assertEqual(parseNotification(b"STATUS=\xff\xfe"), {"STATUS": "\ufffd\ufffd"})
        self.assertEqual(parseNotification(b""), {})


class _ExitsInSpawn(FakeOS):
    """A fake whose next process exits inside C{spawn()} itself (Twisted may report a very fast
    exit from there), so the respawn waits for the next reactor turn."""

    exitNext = False

    def spawn(self, *args, **kwargs):
        transport = super().spawn(*args, **kwargs)
        if self.exitNext:
            self.exitNext = False
            self.exit(transport.pid, 1)
        return transport


class StopMidRespawnTests(Harness):
    """An operator's stop that lands while an instance is between two processes ends STOPPED:
    never EXITED or BACKOFF, and nothing is spawned after it."""

    def test_stop_while_respawn_is_pending(self):
        """The process exited inside spawn(); the stop comes before the respawn's reactor turn."""
        svc = self.make(deploy(startsecs=0))
        self.fake = svc.os = _ExitsInSpawn(self.clock)
        svc.startInstance("web:0")
        spawned = len(self.fake.spawned)
        self.fake.exitNext = True
        self.fake.exit(self.pid("web:0"), 1)  # autorestart: the respawn exits inside spawn()
        self.assertEqual(self.state("web:0"), "EXITED")
        self.successResultOf(svc.stopInstance("web:0"))
        self.assertEqual(self.state("web:0"), "STOPPED")
        self.clock.advance(10)
        self.assertEqual((self.state("web:0"), len(self.fake.spawned)), ("STOPPED", spawned + 1))

    def test_exit_into_backoff_during_the_drain(self):
        """The process failed its start while the balancer drained it: STOPPED, no retry."""
        svc = self.make(deploy(startsecs=0))
        svc.startInstance("web:0")
        drained = Deferred()
        svc.addBeforeStop(lambda n, i: drained)
        d = svc.stopInstance("web:0")
        svc.instances["web:0"].deploy = deploy(startsecs=5)  # its respawn must live 5 s
        self.fake.exit(self.pid("web:0"), 1)                 # RUNNING -> EXITED -> STARTING
        self.fake.exit(self.pid("web:0"), 1)                 # an early exit: BACKOFF, retry timer
        self.assertEqual(self.state("web:0"), "BACKOFF")
        spawned = len(self.fake.spawned)
        drained.callback(None)
        self.successResultOf(d)
        self.assertEqual(self.state("web:0"), "STOPPED")
        self.clock.advance(60)
        self.assertEqual((self.state("web:0"), len(self.fake.spawned)), ("STOPPED", spawned))

    def test_exit_without_restart_during_the_drain(self):
        """The process exited for good (autorestart='never') while it was drained: STOPPED."""
        svc = self.make(deploy(startsecs=0, autorestart="never"))
        svc.startInstance("web:0")
        drained = Deferred()
        svc.addBeforeStop(lambda n, i: drained)
        d = svc.stopInstance("web:0")
        self.fake.exit(self.pid("web:0"), 0)
        self.assertEqual(self.state("web:0"), "EXITED")
        drained.callback(None)
        self.successResultOf(d)
        self.assertEqual(self.state("web:0"), "STOPPED")

    def test_stop_during_a_probe_restart(self):
        """A liveness restart is stopping the old process when the operator stops the instance:
        the new process is never started."""
        results = {"ok": True}
        svc = self.make(deploy(startsecs=0, port=8000, probe=Probe(interval=1, failures=1)),
                        prober=lambda inst: results["ok"])
        svc.startAll()
        self.clock.advance(0)
        results["ok"] = False
        self.clock.advance(1)
        self.assertEqual(self.state("web:0"), "STOPPING")
        spawned = len(self.fake.spawned)
        d = svc.stopInstance("web:0")
        for _ in range(10):
            self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual((self.state("web:0"), len(self.fake.spawned)), ("STOPPED", spawned))

    def test_stop_during_a_flapping_probe_restart(self):
        """The same when that restart would have ended FATAL for flapping: STOPPED is what the
        operator asked for."""
        results = {"ok": True}
        svc = self.make(deploy(startsecs=0, port=8000, probe=Probe(interval=1, failures=1),
                               flapping=Flapping(restarts=1, window=60)),
                        prober=lambda inst: results["ok"])
        svc.startAll()
        self.clock.advance(0)
        results["ok"] = False
        self.clock.advance(1)    # the first liveness restart is allowed, the second refused
        for _ in range(100):
            self.clock.advance(0.01)
            if svc.instanceInfo("web:0")["restarts"] == 1 and self.state("web:0") == "STOPPING":
                break
        self.assertEqual((self.state("web:0"), svc.instanceInfo("web:0")["restarts"]), ("STOPPING", 1))
        d = svc.stopInstance("web:0")
        for _ in range(10):
            self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(self.state("web:0"), "STOPPED")

    def test_flapping_probe_restarts_end_fatal(self):
        """Without an operator's stop, the refused liveness restart ends FATAL with both reasons
        (it went through STOPPING: RUNNING cannot turn FATAL directly)."""
        results = {"ok": True}
        svc = self.make(deploy(startsecs=0, port=8000, probe=Probe(interval=1, failures=1),
                               flapping=Flapping(restarts=1, window=60)),
                        prober=lambda inst: results["ok"])
        svc.startAll()
        self.clock.advance(0)
        results["ok"] = False
        for _ in range(40):
            self.clock.advance(0.1)
        info = svc.instanceInfo("web:0")
        self.assertEqual((info["state"], info["restarts"]), ("FATAL", 1))
        self.assertEqual(info["reason"], "liveness probe failed; flapping: 1 restarts in 60s")
        self.assertEqual(self.flushLoggedErrors(), [])


class StartFailureLogTests(Harness):
    """Each failed start is one log line that says why and what comes next."""

    def lines(self) -> list[str]:
        from twisted.logger import formatEvent, globalLogPublisher

        out: list[str] = []

        def observer(event):
            text = formatEvent(event)
            if text.startswith("web:0"):
                out.append(text)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return out

    def test_early_exits_then_fatal(self):
        """Three early exits with two retries: two 'retry' lines, then one FATAL line with the
        last exit's reason; nothing else."""
        lines = self.lines()
        svc = self.make(deploy(startsecs=1, startretries=2,
                               backoff=Backoff(initial=1, factor=2, cap=60), flapping=None))
        d = svc.startInstance("web:0")
        self.clock.advance(0.5)
        self.fake.exit(self.pid("web:0"), 3)
        self.clock.advance(1)
        self.clock.advance(0.2)
        self.fake.exit(self.pid("web:0"), None, signal.SIGSEGV)
        self.clock.advance(2)
        self.fake.exit(self.pid("web:0"), 3)
        self.failureResultOf(d, InstanceFatal)
        self.assertEqual(lines, [
            "web:0: start failed: exited with status 3 after 0.5s (startsecs=1); retry 1 in 1s",
            "web:0: start failed: killed by SIGSEGV after 0.2s (startsecs=1); retry 2 in 2s",
            "web:0: start failed: exited with status 3 after 0.0s (startsecs=1); "
            "FATAL: Exited too quickly (process log may have details)",
        ])

    def test_spawn_errors(self):
        """A command that cannot be spawned: one line per attempt, the error in it."""
        lines = self.lines()
        svc = self.make(deploy(startsecs=1, startretries=1, backoff=Backoff(initial=1, factor=1, cap=1),
                               flapping=None))
        self.fake.failSpawn = OSError(2, "No such file or directory")
        d = svc.startInstance("web:0")
        self.clock.advance(1)
        self.failureResultOf(d, InstanceFatal)
        self.assertEqual(lines, [
            "web:0: start failed: spawn failed: [Errno 2] No such file or directory; retry 1 in 1s",
            "web:0: FATAL: spawn failed: [Errno 2] No such file or directory",
        ])

    def test_not_ready_is_one_line(self):
        """A start that never said ready: one line once the process is gone, not two."""
        lines = self.lines()
        svc = self.make(deploy(ready=Ready("notify", timeout=3), startretries=0, flapping=None))
        d = svc.startInstance("web:0")
        self.clock.advance(3)
        self.clock.advance(0.1)
        self.failureResultOf(d, InstanceFatal)
        self.assertEqual(lines, ["web:0: FATAL: not ready within 3s (ready='notify'), stopped"])

    def test_flapping_line_keeps_the_failure(self):
        """The start failure that trips flapping is named in the FATAL line."""
        lines = self.lines()
        svc = self.make(deploy(startsecs=1, startretries=None, backoff=Backoff(initial=1, factor=1, cap=1),
                               flapping=Flapping(restarts=1, window=60)))
        d = svc.startInstance("web:0")
        self.fake.exit(self.pid("web:0"), 1)
        self.clock.advance(1)
        self.fake.exit(self.pid("web:0"), 1)
        self.failureResultOf(d, InstanceFatal)
        self.assertEqual(lines, [
            "web:0: start failed: exited with status 1 after 0.0s (startsecs=1); retry 1 in 1s",
            "web:0: start failed: exited with status 1 after 0.0s (startsecs=1); "
            "FATAL: flapping: 1 restarts in 60s",
        ])

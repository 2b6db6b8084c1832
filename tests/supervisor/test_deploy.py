"""Declarations: bad ones are refused before anything starts, with one clear sentence."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.errors import ConfigError
from salvusctl.host import Host
from salvusctl.supervisor.build import SupervisorSettings, buildSupervisor
from salvusctl.supervisor.deploy import Backoff, Deploy, Probe, startOrder, substitute
from salvusctl.supervisor.states import InvalidTransition, ProcessState, checkTransition
from tests.supervisor import scratch


def host(*declarations) -> Host:
    h = Host(name="t", store="sqlite::memory:", var="/tmp/salvus-t-var")
    for d in declarations:
        h.add(d)
    return h


class ValidationTests(SynchronousTestCase):
    def refused(self, *declarations) -> str:
        e = self.assertRaises(ConfigError, host(*declarations).validate)
        return e.message

    def test_missing_command(self):
        self.assertEqual(self.refused(Deploy("web")),
                         "deploy 'web': missing command (an argv list of strings)")

    def test_command_not_found(self):
        self.assertIn("not found on PATH", self.refused(Deploy("web", command=["no-such-prog-xyz"])))

    def test_unknown_user(self):
        self.assertEqual(self.refused(Deploy("web", command=["/bin/true"], user="no_such_user_x")),
                         "deploy 'web': unknown user 'no_such_user_x'")

    def test_dependency_cycle(self):
        msg = self.refused(Deploy("a", command=["/bin/true"], depends_on=["b"]),
                           Deploy("b", command=["/bin/true"], depends_on=["c"]),
                           Deploy("c", command=["/bin/true"], depends_on=["a"]))
        self.assertIn("dependency cycle: a -> b -> c -> a", msg)

    def test_unknown_dependency(self):
        self.assertIn("depends on unknown deploy 'db'",
                      self.refused(Deploy("a", command=["/bin/true"], depends_on=["db"])))

    def test_port_clash(self):
        msg = self.refused(Deploy("a", command=["/bin/true"], port=8000, numprocs=4),
                           Deploy("b", command=["/bin/true"], port=8003))
        self.assertIn("port 8003 clashes with deploy 'a'", msg)

    def test_port_clash_with_other_listener(self):
        """Instances' fixed ports are endpoints the host checks against every other listener."""
        self.assertEqual(Deploy("a", command=["/bin/true"], port=8000, numprocs=2).endpoints(),
                         ["tcp:8000", "tcp:8001"])

    def test_other_mistakes(self):
        cases = [
            (dict(numprocs=0), "numprocs must be an int >= 1"),
            (dict(autorestart="sometimes"), "autorestart must be one of"),
            (dict(stopsignal="NOPE"), "unknown signal 'NOPE'"),
            (dict(rlimits={"bogus": 1}), "unknown rlimit 'bogus'"),
            (dict(probe=Probe()), "a tcp probe needs a port"),
            (dict(port=65535, numprocs=2), "out of range"),
            (dict(backoff=Backoff(initial=5, cap=1)), "backoff needs"),
            (dict(log_level="loud"), "unknown log level 'loud'"),
            (dict(cwd="/no/such/dir"), "working directory '/no/such/dir' does not exist"),
            (dict(depends_on=["web"]), "depends on itself"),
        ]
        for kw, text in cases:
            self.assertIn(text, self.refused(Deploy("web", command=["/bin/true"], **kw)), kw)

    def test_bad_name(self):
        self.assertIn("deploy name must be", self.refused(Deploy("a b", command=["/bin/true"])))

    def test_settings(self):
        self.assertIn("max_processes", self.refused(SupervisorSettings(max_processes=0)))

    def test_good_declaration_passes(self):
        host(Deploy("web", command=["/bin/sleep", "1"], numprocs=2, port=9000, probe=Probe()),
             SupervisorSettings(max_processes=10)).validate()


class HelpersTests(SynchronousTestCase):
    def test_substitute_leaves_other_braces(self):
        """nginx/haproxy configs are full of braces: only known keys are replaced."""
        self.assertEqual(substitute("http { listen {port}; } {unknown} {{port}}", {"port": 80}),
                         "http { listen 80; } {unknown} {80}")

    def test_start_order_waves(self):
        ds = [Deploy("app", command=["x"], depends_on=["db", "cache"]),
              Deploy("db", command=["x"], priority=2),
              Deploy("cache", command=["x"], priority=1), Deploy("lb", command=["x"], depends_on=["app"])]
        self.assertEqual([[d.name for d in w] for w in startOrder(ds)], [["cache", "db"], ["app"], ["lb"]])

    def test_backoff_delay(self):
        b = Backoff(initial=0.5, factor=3, cap=10)
        self.assertEqual([b.delay(n) for n in range(1, 6)], [0.5, 1.5, 4.5, 10, 10])

    def test_spec_ignores_priority(self):
        a = Deploy("a", command=["x"], priority=1)
        self.assertEqual(a.spec(), Deploy("a", command=["x"], priority=2).spec())
        self.assertNotEqual(a.spec(), Deploy("a", command=["y"]).spec())


class StateTests(SynchronousTestCase):
    def test_codes_match_supervisord(self):
        self.assertEqual({s.name: int(s) for s in ProcessState},
                         {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40,
                          "EXITED": 100, "FATAL": 200, "UNKNOWN": 1000})

    def test_guarded_transitions(self):
        checkTransition("x", ProcessState.STARTING, ProcessState.RUNNING)
        e = self.assertRaises(InvalidTransition, checkTransition, "x", ProcessState.STOPPED,
                              ProcessState.RUNNING)
        self.assertEqual(str(e), "x: invalid transition STOPPED -> RUNNING")


class BuildTests(SynchronousTestCase):
    def test_build_none_without_deploys(self):
        from salvusctl.host import HostContext

        ctx = HostContext(reactor=None, host=host(), store=None, var_dir=scratch(self))
        self.assertIsNone(buildSupervisor(ctx, []))

    def test_build_with_settings(self):
        from twisted.internet.task import Clock

        from salvusctl.host import HostContext

        h = host()
        ctx = HostContext(reactor=Clock(), host=h, store=None, var_dir=scratch(self))
        svc = buildSupervisor(ctx, [Deploy("a", command=["/bin/true"]), SupervisorSettings(max_processes=3)])
        self.assertEqual(svc.maxProcesses, 3)
        self.assertTrue(svc.runDir.endswith("run/supervisor"))

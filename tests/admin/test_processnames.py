"""supervisord's process names on a real Salvus host (twistd), beside the real supervisord.

A deploy declared with C{process_name="supervisord"} is named as supervisord names a program:
C{ticker} for one process, C{pool_00} … for three. The tools written against supervisord type
those names back (C{supervisorctl status ticker}, supervisor-wildcards' C{mstop tick*},
supervisor-serialrestart), so they are compared with supervisord's on the same programs and the
tools are run for real against both.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from tests.admin import test_sidebyside as sbs
from tests.admin.helpers import OP
from tests.helpers import waitFor

TICK = sbs.TICK
PROGRAMS = {
    # name: (supervisord options, Salvus Deploy arguments)
    "ticker": ({"command": f"{sys.executable} -c \"{TICK}\"", "startsecs": "0"},
               f"command=[{sys.executable!r}, '-c', {TICK!r}], startsecs=0, process_name='supervisord'"),
    "pool": ({"command": f"{sys.executable} -c \"{TICK}\"", "startsecs": "0", "numprocs": "3",
              "process_name": "%%(program_name)s_%%(process_num)02d"},
             f"command=[{sys.executable!r}, '-c', {TICK!r}], startsecs=0, numprocs=3, "
             "process_name='supervisord'"),
}

CTL_PLUGINS = """
[ctlplugin:wildcards]
supervisor.ctl_factory = supervisorwildcards.controllerplugin:make_wildcards_controllerplugin

[ctlplugin:serialrestart]
supervisor.ctl_factory = supervisorserialrestart.controllerplugin:make_serialrestart_controllerplugin
"""


class ProcessNameTests(sbs.SideBySideTests):
    """Only the tests below: the side-by-side harness with supervisord-named programs."""

    def setUp(self):
        for module in ("supervisorwildcards", "supervisorserialrestart"):
            try:
                __import__(module)
            except ImportError:
                raise SkipTest(f"needs {module}: pip install -e .[test]")
        self._saved = dict(sbs.PROGRAMS)
        sbs.PROGRAMS.clear()
        sbs.PROGRAMS.update(PROGRAMS)
        self.addCleanup(lambda: (sbs.PROGRAMS.clear(), sbs.PROGRAMS.update(self._saved)))
        return super().setUp()

    def ctlPlugins(self, which: str, *args: str) -> defer.Deferred:
        """supervisorctl with supervisor-wildcards and supervisor-serialrestart loaded."""
        conf = os.path.join(self.dir, f"ctl-{which}.conf")
        lines = ["[supervisorctl]", f"serverurl=unix://{self.sock[which]}"]
        if which == "salvus":
            lines += [f"username={OP[0]}", f"password={OP[1]}"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n" + CTL_PLUGINS)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir, "LANG": "C.UTF-8"}
        d = getProcessOutputAndValue(sbs.SUPERVISORCTL, ["-c", conf] + list(args), env=env,
                                     path=self.dir, reactor=reactor)
        return d.addCallback(lambda r: (sbs.normaliseOutput(r[0].decode() + r[1].decode()), r[2]))

    def names(self, which: str) -> list[tuple[str, str]]:
        return sorted((i["group"], i["name"]) for i in self.call(which, "supervisor.getAllProcessInfo"))

    def test_getAllProcessInfoNamesAreSupervisords(self):
        """One process is named after its program, three are pool_00 … pool_02, in both."""
        expected = [("pool", "pool_00"), ("pool", "pool_01"), ("pool", "pool_02"), ("ticker", "ticker")]
        self.assertEqual(self.names("supervisord"), expected)
        self.assertEqual(self.names("salvus"), expected)

    @defer.inlineCallbacks
    def test_statusAndStopByTheProgramsName(self):
        """C{supervisorctl status ticker} and C{stop ticker} answer as supervisord's (exit 0)."""
        for args in (("status", "ticker"), ("status", "pool:pool_01"), ("status", "pool:*")):
            reference, salvus = yield self.both(*args)
            self.assertEqual(reference, salvus, args)
            self.assertEqual(salvus[1], 0, args)
        reference, salvus = yield self.both("stop", "ticker")
        self.assertEqual((reference, salvus[1]), (salvus, 0))
        yield waitFor(lambda: self.state("salvus", "ticker") == "STOPPED", timeout=20)
        self.assertEqual(self.state("supervisord", "ticker"), "STOPPED")

    @defer.inlineCallbacks
    def test_olderSpellingStillFindsTheProcess(self):
        """C{ticker:0} and C{pool:1}, Salvus's older names, still reach ticker and pool_01."""
        info = self.call("salvus", "supervisor.getProcessInfo", "ticker:0")
        self.assertEqual((info["group"], info["name"]), ("ticker", "ticker"))
        info = self.call("salvus", "supervisor.getProcessInfo", "pool:1")
        self.assertEqual((info["group"], info["name"]), ("pool", "pool_01"))
        # supervisorctl's status filters getAllProcessInfo itself, so only the verbs it passes
        # to the server (stop, start, restart, signal, tail) take the older spelling.
        output, code = yield self.ctl("salvus", "stop", "ticker:0")
        self.assertEqual(code, 0, output)
        yield waitFor(lambda: self.state("salvus", "ticker") == "STOPPED", timeout=20)

    @defer.inlineCallbacks
    def test_wildcardsStopByPattern(self):
        """supervisor-wildcards' C{mstop tick*} stops ticker and nothing else, in both."""
        for which in ("supervisord", "salvus"):
            output, code = yield self.ctlPlugins(which, "mstop", "tick*")
            self.assertEqual(output, "ticker: stopped", which)
            yield waitFor(lambda w=which: self.state(w, "ticker") == "STOPPED", timeout=20)
            self.assertEqual([self.state(which, f"pool:pool_0{i}") for i in range(3)], ["RUNNING"] * 3)
            output, code = yield self.ctlPlugins(which, "mstart", "pool_0[01]")
            self.assertIn("pool:pool_00: ERROR (already started)", output, which)

    @defer.inlineCallbacks
    def test_serialrestartRestartsOneAfterAnother(self):
        """supervisor-serialrestart restarts ticker and each pool process by name, in both."""
        outputs = {}
        for which in ("supervisord", "salvus"):
            before = {n: i["pid"] for n, i in self.infos(which).items()}
            output, code = yield self.ctlPlugins(which, "serialrestart", "ticker", "pool:pool_0*")
            outputs[which] = sorted(output.splitlines())
            after = {n: i["pid"] for n, i in self.infos(which).items()}
            self.assertEqual([n for n in before if before[n] == after[n]], [], which)
        self.assertEqual(outputs["supervisord"], outputs["salvus"])
        self.assertIn("ticker: started", outputs["salvus"])


def _ansible() -> str | None:
    """The C{ansible} command (PyPI's C{ansible}, which carries community.general): next to
    this Python, or named by C{SALVUS_TEST_ANSIBLE}."""
    candidates = [os.environ.get("SALVUS_TEST_ANSIBLE", ""), os.path.join(sbs.BIN, "ansible")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class AnsibleTests(ProcessNameTests):
    """Ansible's community.general.supervisorctl module, run for real, by the program's name."""

    def setUp(self):
        if _ansible() is None:
            raise SkipTest("needs ansible (pip install ansible, or SALVUS_TEST_ANSIBLE=/path/to/ansible)")
        return super().setUp()

    def ansible(self, which: str, **args: str) -> defer.Deferred:
        options = {"server_url": f"unix://{self.sock[which]}", "supervisorctl_path": sbs.SUPERVISORCTL}
        if which == "salvus":
            options.update(username=OP[0], password=OP[1])
        options.update(args)
        argv = ["localhost", "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={sys.executable}",
                "-m", "community.general.supervisorctl",
                "-a", " ".join(f"{k}={v}" for k, v in options.items())]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir, "LANG": "C.UTF-8",
               "ANSIBLE_LOCAL_TEMP": os.path.join(self.dir, "ansible-tmp"),
               "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1"}
        d = getProcessOutputAndValue(_ansible(), argv, env=env, path=self.dir, reactor=reactor)
        return d.addCallback(lambda r: (r[0].decode() + r[1].decode(), r[2]))

    @defer.inlineCallbacks
    def test_ansibleStopsAndStartsByTheProgramsName(self):
        """C{name=ticker state=stopped} then C{started}: changed, as against supervisord."""
        for which in ("supervisord", "salvus"):
            output, code = yield self.ansible(which, name="ticker", state="stopped")
            self.assertEqual(code, 0, output)
            self.assertIn("CHANGED", output, which)
            self.assertEqual(self.state(which, "ticker"), "STOPPED", which)
            output, code = yield self.ansible(which, name="ticker", state="started")
            self.assertEqual(code, 0, output)
            self.assertIn("CHANGED", output, which)
            yield waitFor(lambda w=which: self.state(w, "ticker") == "RUNNING", timeout=20)
            output, code = yield self.ansible(which, name="pool:", state="restarted")
            self.assertEqual(code, 0, output)


for _name in [n for n in vars(ProcessNameTests) if n.startswith("test_")]:
    setattr(AnsibleTests, _name, None)


# The harness's own comparisons run in test_sidebyside; here only the name tests.
for _name in [n for n in vars(sbs.SideBySideTests) if n.startswith("test_")]:
    setattr(ProcessNameTests, _name, None)
del _name

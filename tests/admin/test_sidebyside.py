"""The real supervisord 4.3 and a real Salvus host (twistd) on the same programs, side by side.

Each test asks both the same thing, over their unix sockets, and compares: C{getAllProcessInfo},
C{getAllConfigInfo}'s keys, fault codes, C{system.multicall}'s shape, and the real
C{supervisorctl}'s output and exit code for every one of its verbs.  supervisord is the
reference: a difference fails the test unless it is named in L{KNOWN} (and docs/admin.md says
why).

Names: a Salvus deploy with one instance is C{ticker:0} (group C{ticker}, process C{0}) where
supervisord says C{ticker}; L{salvusName} maps one onto the other before comparing (the KNOWN
entry C{names}).  Once Salvus reports C{ticker} itself, the mapping does nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import xmlrpc.client as xmlrpclib
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.admin.helpers import OP, writeUsers
from tests.helpers import TWISTD, childEnv, waitFor

BIN = os.path.dirname(sys.executable)
SUPERVISORD = os.path.join(BIN, "supervisord")
SUPERVISORCTL = os.path.join(BIN, "supervisorctl")

TICK = "import signal; print('tick', flush=True); signal.pause()"

#: Differences that are deliberate, by name; docs/admin.md ("Side by side with supervisord").
KNOWN = {
    "names": "a one-instance deploy is ticker:0 in Salvus, ticker in supervisord (normalised here)",
    "version": "supervisorctl version prints 4.3.0+salvus.<version>: supervisord's API release, "
               "then Salvus's own",
    "maintail": "the main log's lines are Salvus's (same events, its own timestamps and wording "
                "for Salvus-only events); only the exit code is compared",
    "vanishing": "Salvus refuses to load a host file whose command or working directory does not "
                 "exist (supervisord loads it and fails at start); here both exist when the hosts "
                 "load and are removed before the comparisons: the case both answer at run time",
    "killasgroup": "getAllConfigInfo's killasgroup is always true: Salvus stops an instance's whole "
                   "process group and cgroup (supervisord's default is false)",
    "fg": "fg needs a terminal on both sides; sendProcessStdin, what it calls, is compared instead",
}

PROGRAMS = {
    # name: (supervisord options, Salvus Deploy arguments)
    "ticker": ({"command": f"{sys.executable} -c \"{TICK}\"", "startsecs": "1"},
               f"command=[{sys.executable!r}, '-c', {TICK!r}], startsecs=1"),
    "manual": ({"command": f"{sys.executable} -c \"{TICK}\"", "autostart": "false", "startsecs": "1"},
               f"command=[{sys.executable!r}, '-c', {TICK!r}], startsecs=1, autostart=False"),
    "badcmd": ({"command": "%(dir)s/vanishing", "autostart": "false"},
               "command=['%(dir)s/vanishing'], autostart=False"),
    "badcwd": ({"command": "/bin/sleep 30", "directory": "%(dir)s/gone", "autostart": "false"},
               "command=['/bin/sleep', '30'], cwd='%(dir)s/gone', autostart=False"),
}

TAC = """
from salvusctl.admin.declare import Admin
from salvusctl.host import Host
from salvusctl.supervisor import Deploy

host = Host(name="sbs", store="sqlite:{var}/salvus.db", var="{var}")
host.add(Admin("unix:{sock}", users="{users}"))
{deploys}
application = host.application()
"""


def salvusName(name: str) -> str:
    """C{ticker:0} -> C{ticker} (the KNOWN difference C{names}); other names unchanged."""
    return name[:-2] if name.endswith(":0") else name


def normaliseOutput(text: str) -> str:
    """supervisorctl's output with what differs run to run made equal: pids, uptimes, stop
    times, column padding, and Salvus's one-instance names."""
    text = re.sub(r"\b([a-z]+):0\b", r"\1", text)
    text = re.sub(r"pid \d+", "pid N", text)
    text = re.sub(r"uptime [0-9a-z, :]+?(?=$|\n|,)", "uptime T", text)
    text = re.sub(r"[A-Z][a-z]{2} \d\d \d\d:\d\d [AP]M", "TIME", text)
    text = re.sub(r"^\d+$", "PID", text, flags=re.M)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


class _Proc(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.status = None
        self.output = b""

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.status = reason.value
        self.ended.callback(reason.value)


class SideBySideBase(TestCase):
    """Both hosts on L{programs}, ready once L{isReady} holds for each; the helpers, no tests."""

    timeout = 120
    programs = PROGRAMS

    @defer.inlineCallbacks
    def setUp(self):
        if not (os.path.exists(SUPERVISORD) and os.path.exists(SUPERVISORCTL)):
            raise SkipTest("needs supervisord and supervisorctl: pip install -e .[test]")
        self.dir = os.path.join("/tmp", f"salvus-sbs-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.dir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.procs: dict[str, _Proc] = {}
        self.sock = {"supervisord": os.path.join(self.dir, "sd.sock"),
                     "salvus": os.path.join(self.dir, "sv.sock")}
        self.unvanish()
        self.startSupervisord()
        self.startSalvus()
        for which in ("supervisord", "salvus"):
            try:
                yield waitFor(lambda w=which: self.answers(w), timeout=30)
            except AssertionError:
                raise AssertionError(f"{which} does not answer: {getattr(self, 'lastError', '')}; "
                                     f"{self.tail(which)}")
            yield waitFor(lambda w=which: self.isReady(w), timeout=30)

    def isReady(self, which: str) -> bool:
        return self.state(which, "ticker") == "RUNNING"

    def vanish(self) -> None:
        """Remove badcmd's command and badcwd's directory (KNOWN["vanishing"])."""
        os.unlink(os.path.join(self.dir, "vanishing"))
        os.rmdir(os.path.join(self.dir, "gone"))

    def unvanish(self) -> None:
        vanishing = os.path.join(self.dir, "vanishing")
        with open(vanishing, "w") as f:
            f.write("#!/bin/sh\nexec sleep 30\n")
        os.chmod(vanishing, 0o755)
        os.mkdir(os.path.join(self.dir, "gone"))

    # -- the two hosts --------------------------------------------------------------------------

    def spawn(self, which: str, argv: list[str], env: dict[str, str]) -> None:
        proc = _Proc()
        reactor.spawnProcess(proc, argv[0], argv, env=env, path=self.dir)
        self.procs[which] = proc

        def kill():
            # TERM first: both stop their programs on it (a SIGKILLed supervisord leaves its
            # children running); KILL only if it is still there after 10 s.
            if not proc.ended.called:
                proc.transport.signalProcess("TERM")
                late = reactor.callLater(
                    10, lambda: proc.ended.called or proc.transport.signalProcess("KILL"))
                return proc.ended.addBoth(lambda r: late.active() and late.cancel())

        self.addCleanup(kill)

    def startSupervisord(self) -> None:
        conf = os.path.join(self.dir, "supervisord.conf")
        lines = ["[supervisord]", f"logfile={self.dir}/supervisord.log",
                 f"pidfile={self.dir}/supervisord.pid", f"childlogdir={self.dir}", "nodaemon=true",
                 "", "[unix_http_server]", f"file={self.sock['supervisord']}", "",
                 "[rpcinterface:supervisor]",
                 "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                 "", "[supervisorctl]", f"serverurl=unix://{self.sock['supervisord']}", ""]
        for name, (options, _) in self.programs.items():
            lines.append(f"[program:{name}]")
            lines += [f"{k}={v}" % {"dir": self.dir} for k, v in options.items()]
            lines.append("")
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        self.spawn("supervisord", [SUPERVISORD, "-n", "-c", conf], dict(os.environ))

    def startSalvus(self) -> None:
        var = os.path.join(self.dir, "var")
        users = os.path.join(self.dir, "users")
        writeUsers(users)
        deploys = "\n".join(f"host.add(Deploy({name!r}, {args % {'dir': self.dir}}))"
                            for name, (_, args) in self.programs.items())
        tac = os.path.join(self.dir, "host.tac")
        with open(tac, "w") as f:
            f.write(TAC.format(var=var, sock=self.sock["salvus"], users=users, deploys=deploys))
        self.salvusLog = os.path.join(self.dir, "twistd.log")
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", self.salvusLog, "salvus", "--config", tac]
        self.spawn("salvus", argv, childEnv())

    def tail(self, which: str) -> str:
        path = self.salvusLog if which == "salvus" else os.path.join(self.dir, "supervisord.log")
        try:
            with open(path) as f:
                return f.read()[-3000:]
        except OSError as e:
            return f"{e}; {self.procs[which].output[-3000:]!r}"

    def proxy(self, which: str) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        user, password = OP if which == "salvus" else (None, None)
        transport = SupervisorTransport(user, password, f"unix://{self.sock[which]}")
        return xmlrpclib.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)

    def call(self, which: str, method: str, *args: Any) -> Any:
        """The answer (or the Fault) of one call; blocking is fine, both servers are children."""
        target = self.proxy(which)
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except xmlrpclib.Fault as f:
            return f

    def answers(self, which: str) -> bool:
        try:
            return self.call(which, "supervisor.getState")["statename"] == "RUNNING"
        except (OSError, xmlrpclib.ProtocolError, TypeError) as e:
            self.lastError = f"{which}: {e!r}"
            return False

    def infos(self, which: str) -> dict[str, dict]:
        """getAllProcessInfo by (normalised) name."""
        out = {}
        for info in self.call(which, "supervisor.getAllProcessInfo"):
            full = info["name"] if info["name"] == info["group"] else f"{info['group']}:{info['name']}"
            info = dict(info, name=salvusName(full), group=info["group"])
            out[info["name"]] = info
        return out

    def state(self, which: str, name: str) -> str | None:
        try:
            return self.infos(which).get(name, {}).get("statename")
        except (OSError, xmlrpclib.ProtocolError):
            return None

    def oneInstanceNamesDiffer(self) -> bool:
        """Does Salvus still name a one-instance deploy ticker:0 (KNOWN["names"])?"""
        return any(i["name"] != i["group"] for i in self.call("salvus", "supervisor.getAllProcessInfo")
                   if i["group"] == "ticker")

    def ctl(self, which: str, *args: str) -> defer.Deferred:
        argv = ["-s", f"unix://{self.sock[which]}"]
        if which == "salvus":
            argv += ["-u", OP[0], "-p", OP[1]]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir, "LANG": "C.UTF-8"}
        d = getProcessOutputAndValue(SUPERVISORCTL, argv + list(args), env=env, path=self.dir,
                                     reactor=reactor)
        return d.addCallback(lambda r: (normaliseOutput(r[0].decode() + r[1].decode()), r[2]))

    @defer.inlineCallbacks
    def both(self, *args: str) -> Any:
        """(supervisord's (output, code), Salvus's) for one supervisorctl command."""
        reference = yield self.ctl("supervisord", *args)
        salvus = yield self.ctl("salvus", *args)
        return reference, salvus


class SideBySideTests(SideBySideBase):
    """The comparisons on PROGRAMS."""

    def assertSameInfo(self, reference: dict, salvus: dict, name: str) -> None:
        self.assertEqual(set(reference), set(salvus), name)
        for key in ("group", "state", "statename", "spawnerr", "exitstatus"):
            self.assertEqual(reference[key], salvus[key], f"{name}: {key}")
        described = [normaliseOutput(i["description"]) for i in (reference, salvus)]
        self.assertEqual(described[0], described[1], f"{name}: description")
        self.assertEqual(bool(reference["pid"]), bool(salvus["pid"]), f"{name}: pid")

    def test_getAllProcessInfo(self):
        """Same processes, states, exit statuses, spawn errors and descriptions; the same struct
        keys (the names aside: KNOWN['names'])."""
        reference, salvus = self.infos("supervisord"), self.infos("salvus")
        self.assertEqual(sorted(reference), sorted(salvus))
        for name in reference:
            self.assertSameInfo(reference[name], salvus[name], name)

    def test_getAllConfigInfoKeys(self):
        """Every row has supervisord's keys, for the same processes, with the same autostart."""
        reference = {r["name"]: r for r in self.call("supervisord", "supervisor.getAllConfigInfo")}
        salvus = {salvusName(r["name"] if r["name"] == r["group"] else f"{r['group']}:{r['name']}"): r
                  for r in self.call("salvus", "supervisor.getAllConfigInfo")}
        self.assertEqual(sorted(reference), sorted(salvus))
        for name in reference:
            self.assertEqual(set(reference[name]), set(salvus[name]), name)
            for key in ("autostart", "inuse", "startsecs", "stopsignal", "exitcodes", "directory",
                        "redirect_stderr", "serverurl"):
                self.assertEqual(reference[name][key], salvus[name][key], f"{name}: {key}")

    @defer.inlineCallbacks
    def test_faultCodes(self):
        """The same fault (or success) for the same mistakes, including a start that cannot
        spawn, answered at its first failed attempt."""
        calls = [
            ("supervisor.startProcess", "nosuch"),
            ("supervisor.startProcess", "ticker"),
            ("supervisor.stopProcess", "manual"),
            ("supervisor.signalProcess", "ticker", "NOSUCHSIG"),
            ("supervisor.signalProcess", "manual", "HUP"),
            ("supervisor.getProcessInfo", "nosuch"),
            ("supervisor.readProcessStdoutLog", "nosuch", 0, 100),
            ("supervisor.startProcessGroup", "nosuch"),
            ("supervisor.removeProcessGroup", "ticker"),
            ("supervisor.addProcessGroup", "ticker"),
            ("supervisor.addProcessGroup", "nosuch"),
            ("supervisor.sendProcessStdin", "manual", "x"),
            ("supervisor.nosuchmethod",),
            "vanish",
            ("supervisor.startProcess", "badcmd"),
            ("supervisor.startProcess", "badcwd"),
        ]
        for call in calls:
            if call == "vanish":
                self.vanish()
                continue
            method, *args = call
            reference = yield defer.maybeDeferred(self.call, "supervisord", method, *args)
            salvus = yield defer.maybeDeferred(self.call, "salvus", method, *args)
            code = [r.faultCode if isinstance(r, xmlrpclib.Fault) else "ok" for r in (reference, salvus)]
            self.assertEqual(code[0], code[1], f"{method}{tuple(args)}: supervisord {reference!r}, "
                                               f"Salvus {salvus!r}")
        reference, salvus = self.infos("supervisord"), self.infos("salvus")
        # badcmd refused before spawning (STOPPED, no spawnerr) by both
        self.assertEqual((reference["badcmd"]["statename"], reference["badcmd"]["spawnerr"]),
                         (salvus["badcmd"]["statename"], salvus["badcmd"]["spawnerr"]))
        # badcwd retrying: BACKOFF with its error, or already STARTING its next attempt
        self.assertIn(reference["badcwd"]["statename"], ("BACKOFF", "STARTING"))
        self.assertIn(salvus["badcwd"]["statename"], ("BACKOFF", "STARTING"))

    def test_multicallShape(self):
        """Bare values and fault structs, in order."""
        calls = [{"methodName": "supervisor.getState", "params": []},
                 {"methodName": "supervisor.getProcessInfo", "params": ["nosuch"]},
                 {"methodName": "supervisor.getAPIVersion", "params": []}]
        reference = self.call("supervisord", "system.multicall", calls)
        salvus = self.call("salvus", "system.multicall", calls)
        self.assertEqual(reference[0], salvus[0])
        self.assertEqual(set(reference[1]), {"faultCode", "faultString"})
        self.assertEqual(set(reference[1]), set(salvus[1]))
        self.assertEqual(reference[1]["faultCode"], salvus[1]["faultCode"])
        self.assertEqual(reference[2], salvus[2])

    @defer.inlineCallbacks
    def test_everySupervisorctlVerb(self):
        """Each verb, in one sequence applied to both: the same output and exit code."""
        sequence = [
            ("status",), ("status", "ticker"), ("status", "nosuch"),
            ("start", "ticker"), ("start", "manual"), ("status", "manual"),
            ("stop", "manual"), ("stop", "manual"), ("start", "nosuch"),
            ("restart", "ticker"), ("signal", "HUP", "manual"), ("signal", "USR1", "ticker"),
            ("pid",), ("pid", "nosuch"),
            ("avail",), ("tail", "ticker"), ("tail", "nosuch"), ("clear", "ticker"), ("tail", "ticker"),
            ("reread",), ("update",), ("add", "ticker"), ("remove", "ticker"), ("add", "nosuch"),
            ("remove", "nosuch"), "vanish", ("start", "badcmd"), ("start", "badcwd"),
            ("stop", "badcmd"), ("stop", "badcwd"), "unvanish", ("start", "all"), ("stop", "all"),
            ("status",),
            ("help",), ("help", "start"),
        ]
        failures = []
        for args in sequence:
            if args in ("vanish", "unvanish"):
                getattr(self, args)()
                continue
            (ref, refcode), (sal, salcode) = yield self.both(*args)
            if args[0] == "status" and len(args) > 1 and self.oneInstanceNamesDiffer():
                continue  # KNOWN["names"]: supervisorctl matches "ticker" against "ticker:0"
            if args[-1] == "all":
                # supervisord's order over processes of equal priority varies run to run
                ref, sal = ("\n".join(sorted(t.splitlines())) for t in (ref, sal))
            if (ref, refcode) != (sal, salcode):
                failures.append(f"supervisorctl {' '.join(args)}:\n  supervisord [{refcode}] {ref!r}"
                                f"\n  Salvus      [{salcode}] {sal!r}")
        (ref, refcode), (sal, salcode) = yield self.both("version")
        self.assertEqual(refcode, salcode, KNOWN["version"])
        self.assertTrue(sal.startswith(ref), KNOWN["version"])
        (ref, refcode), (sal, salcode) = yield self.both("maintail")
        self.assertEqual(refcode, salcode, KNOWN["maintail"])
        self.maxDiff = None
        self.assertEqual("\n".join(failures), "")

    @defer.inlineCallbacks
    def test_shutdown(self):
        """supervisorctl shutdown: the same answer; both stop their programs and exit, Salvus's
        twistd as cleanly as on SIGTERM."""
        salvusTicker = self.call("salvus", "supervisor.getProcessInfo", "ticker")["pid"]
        (ref, refcode), (sal, salcode) = yield self.both("shutdown")
        self.assertEqual((ref, refcode), (sal, salcode))
        yield self.procs["supervisord"].ended
        yield self.procs["salvus"].ended
        with open(self.salvusLog) as f:
            log = f.read()
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log)
        self.assertFalse(os.path.exists(f"/proc/{salvusTicker}/status")
                         and "zombie" not in open(f"/proc/{salvusTicker}/status").read().lower())

    @defer.inlineCallbacks
    def test_reload(self):
        """supervisorctl reload: the same answer; both restart their programs in place (the
        host process stays, the programs get new pids) and answer again."""
        before = {w: self.call(w, "supervisor.getProcessInfo", "ticker")["pid"]
                  for w in ("supervisord", "salvus")}
        hostPid = self.call("salvus", "supervisor.getPID")
        (ref, refcode), (sal, salcode) = yield self.both("reload")
        self.assertEqual((ref, refcode), (sal, salcode))
        for which in ("supervisord", "salvus"):
            yield waitFor(lambda w=which: self.answers(w) and self.state(w, "ticker") == "RUNNING"
                          and self.call(w, "supervisor.getProcessInfo", "ticker")["pid"] != before[w],
                          timeout=30)
        self.assertEqual(self.call("salvus", "supervisor.getPID"), hostPid)
        self.assertFalse(self.procs["salvus"].ended.called)

"""C{salvusctl import-supervisord}: the host file it writes validates, starts in a real twistd, and
the real C{supervisorctl status} prints the processes supervisord itself starts from the original
file.

Side by side: supervisord 4 (the PyPI package in the test extras) runs the original config and
C{supervisorctl status} lists its processes; then the converted host runs under C{twistd -n salvus}
on the same socket and the same C{supervisorctl} lists Salvus's.  Both runs are bounded (every
wait has a deadline) and leave no process behind.

Names: today a Salvus deploy's instances are C{name:N} (C{ticker:0}, C{web:api:1}) where
supervisord says C{ticker} and C{web:api_01} (issue 15, "Names").  Until that lands, the
comparison goes through L{salvusNameToday}, which states the rule; the day Salvus prints
supervisord's names, the exact comparison passes and the rule is no longer used.  An
C{[eventlistener:]} becomes an C{EventListener} and runs under Salvus as under supervisord.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.cli.importsupervisord import convert
from salvusctl.cli.main import run
from salvusctl.host.loading import loadHost
from salvusctl.supervisor.eventlistener import EventListener
from salvusctl.supervisor.supervisordconf import readSupervisordConf
from tests.helpers import childEnv
from tests.supervisor import supervisordconfs

BIN = os.path.dirname(sys.executable)
SUPERVISORD = os.path.join(BIN, "supervisord")
SUPERVISORCTL = os.path.join(BIN, "supervisorctl")
TWISTD = os.path.join(BIN, "twistd")
SALVUSCTL = os.path.join(BIN, "salvusctl")
PASSWORD = "operator-password-1"


def salvusNameToday(conf, namespec: str) -> str:
    """The name Salvus prints for the process supervisord prints as C{namespec}: a program's
    own (the converter carries its process_name over), an event listener's instance of P in
    group G C{P:i} (G == P) or C{G:P:i}, counted from 0."""
    for prog in conf.programs:
        for i, p in enumerate(prog.processes):
            if p.namespec == namespec and prog.kind == "program":
                return namespec
            if p.namespec == namespec:
                return f"{prog.name}:{i}" if prog.group == prog.name else f"{prog.group}:{prog.name}:{i}"
    raise KeyError(namespec)


def _shortDir(test) -> str:
    """A directory under /tmp: a unix socket's path must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="svimp-", dir="/tmp")
    test.addCleanup(shutil.rmtree, path, True)
    return path


class _Child(ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(getattr(reason.value, "exitCode", None))


def _status(text: str) -> dict[str, str]:
    """C{supervisorctl status} output -> {name: state}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


class ConvertTests(SynchronousTestCase):
    """The host file for each config loads and validates; the warnings name file:line."""

    def setUp(self):
        self.base = _shortDir(self)
        self.env = dict(os.environ, **supervisordconfs.MULTI_ENV)

    def convert(self, path):
        conf = readSupervisordConf(path, self.env)
        text, warnings = convert(conf, path)
        tac = os.path.join(self.base, "host.tac")
        with open(tac, "w") as f:
            f.write(text)
        old = os.getcwd()
        os.chdir(self.base)
        self.addCleanup(os.chdir, old)
        host = loadHost(tac)
        host.validate()
        return host, text, warnings

    def test_sampleValidates(self):
        """supervisord's own sample: an Admin on its unix socket, no deploy; the [supervisord]
        options twistd takes instead are each one warning with its line."""
        path = supervisordconfs.sample(self.base)
        host, text, warnings = self.convert(path)
        [admin] = host.declarations("admin")
        self.assertEqual(admin.listen, [f"unix:{self.base}/supervisor.sock"])
        self.assertEqual(host.declarations("supervisor"), [])
        self.assertIn(f"--pidfile={self.base}/supervisord.pid", text)
        pidfile = [w for w in warnings if "pidfile=" in w]
        self.assertEqual(len(pidfile), 1)
        with open(path) as f:
            line = [i for i, t in enumerate(f, 1) if t.startswith("pidfile=")][0]
        self.assertTrue(pidfile[0].startswith(f"{path}:{line}: [supervisord] pidfile="), pidfile[0])

    def test_multiMapsEveryProgram(self):
        """numprocs, templates for %(process_num)s, groups, the merged environment, stdin and no
        flapping limit (supervisord has none); the event listener is an C{EventListener}."""
        path = supervisordconfs.multi(self.base, os.path.join(self.base, "s.sock"))
        host, text, warnings = self.convert(path)
        deploys = {d.name: d for d in host.declarations("supervisor") if not isinstance(d, EventListener)}
        self.assertEqual(sorted(deploys), ["api", "pool", "ticker", "worker"])
        api = deploys["api"]
        self.assertEqual((api.numprocs, api.group, api.autorestart), (3, "web", "always"))
        self.assertEqual(api.command[-1], "slot={index}")
        self.assertEqual(api.env["SLOT"], "{index}")
        self.assertEqual(api.env["APP_MODE"], "prod")
        self.assertEqual(api.env["HERE"], os.path.join(self.base, "conf.d"))
        self.assertEqual(deploys["worker"].exitcodes, (0, 2))
        self.assertEqual(deploys["ticker"].stopsignal, "INT")
        self.assertIn("token-42", deploys["ticker"].command)
        self.assertTrue(all(d.stdin and d.flapping is None for d in deploys.values()))
        [listener] = [d for d in host.declarations("supervisor") if isinstance(d, EventListener)]
        self.assertEqual((listener.name, listener.events), ("listener", ("PROCESS_STATE_EXITED", "TICK_60")))
        conf_d = os.path.join(self.base, "conf.d")
        self.assertIn(f"{conf_d}/api.conf:6: [program:api] stdout_logfile=", "\n".join(warnings))
        self.assertTrue(any(w.startswith(f"{path}:20: %(ENV_IMPORT_EXTRA)s: expanded now") for w in warnings))
        self.assertTrue(any(w.startswith(f"{path}:4: [unix_http_server] username=op") for w in warnings))

    def test_cliWritesHostAndWarnings(self):
        """C{salvusctl import-supervisord FILE}: the host file on stdout, warnings on stderr, 0."""
        path = supervisordconfs.sample(self.base)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(run(["import-supervisord", path], self.env, out, err, io.StringIO()), 0)
        self.assertIn("application = host.application()", out.getvalue())
        self.assertTrue(all(line.startswith("warning: ") for line in err.getvalue().splitlines()))

    def test_badConfigOneLine(self):
        """A file supervisord refuses: exit 1, one line naming file:line, nothing on stdout."""
        path = os.path.join(self.base, "bad.conf")
        with open(path, "w") as f:
            f.write("[supervisord]\n[program:x]\ncommand=/bin/cat %(ENV_IMPORT_NOPE)s\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(run(["import-supervisord", path], {}, out, err, io.StringIO()), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(err.getvalue().splitlines()), 1)
        self.assertIn(f"{path}:3: ", err.getvalue())


class SideBySideTests(TestCase):
    """supervisord on the original file, then the converted host under twistd: same names."""

    timeout = 150

    @defer.inlineCallbacks
    def waitStatus(self, sock: str, user: tuple[str, str] | None, expected: int, child: _Child):
        """C{supervisorctl status} until C{expected} processes are RUNNING (at most 30 s)."""
        auth = ["-u", user[0], "-p", user[1]] if user else []
        deadline = reactor.seconds() + 30
        last = b""
        while reactor.seconds() < deadline and not child.ended.called:
            out, err, code = yield getProcessOutputAndValue(
                SUPERVISORCTL, ["-s", f"unix://{sock}", *auth, "status"], env=childEnv(), reactor=reactor
            )
            last = out + err
            states = _status(out.decode())
            if len(states) >= expected and all(s == "RUNNING" for s in states.values()):
                return states
            yield deferLater(reactor, 0.3, lambda: None)
        self.fail(
            f"not all RUNNING: {last.decode(errors='replace')}\n"
            f"{child.output.decode(errors='replace')[-3000:]}"
        )

    def spawn(self, argv: list[str], path: str, env: dict[str, str]) -> _Child:
        child = _Child()
        process = reactor.spawnProcess(child, argv[0], argv, env=env, path=path)
        child.process = process

        def cleanup():
            if not child.ended.called:
                process.signalProcess("KILL")
                return child.ended

        self.addCleanup(cleanup)
        return child

    @defer.inlineCallbacks
    def stop(self, child: _Child):
        child.process.signalProcess("TERM")
        deadline = reactor.callLater(30, lambda: child.ended.called or child.process.signalProcess("KILL"))
        yield child.ended
        if deadline.active():
            deadline.cancel()

    @defer.inlineCallbacks
    def sideBySide(self, base: str, path: str, sock: str, supervisordUser, salvusUser: str, env):
        conf = readSupervisordConf(path, env)
        expected = sum(len(p.processes) for p in conf.programs)
        # 1. supervisord itself on the original file
        sup = self.spawn([SUPERVISORD, "-n", "-c", path], base, env)
        theirs = yield self.waitStatus(sock, supervisordUser, expected, sup)
        yield self.stop(sup)
        self.assertEqual(sorted(theirs), sorted(p.namespec for p in conf.processes()))
        # 2. the converted host under twistd, on the same socket
        out, err, code = yield getProcessOutputAndValue(
            SALVUSCTL, ["import-supervisord", path], env=env, path=base, reactor=reactor
        )
        self.assertEqual(code, 0, err)
        tac = os.path.join(base, "host.tac")
        with open(tac, "wb") as f:
            f.write(out)
        users = os.path.join(base, "var", "admin-users")
        _, err, code = yield self.addUser(users, salvusUser, env, base)
        self.assertEqual(code, 0, err)
        host = self.spawn([TWISTD, "-n", "--pidfile=", "salvus", "--config", tac], base, env)
        mine = yield self.waitStatus(sock, (salvusUser, PASSWORD), expected, host)
        yield self.stop(host)
        self.assertNotIn(b"Traceback", host.output)
        # 3. the same names (or, until Salvus follows supervisord's names, the stated rule)
        names = sorted(p.namespec for p in conf.processes())
        if sorted(mine) != names:
            self.assertEqual(sorted(mine), sorted(salvusNameToday(conf, n) for n in names))
        return theirs, mine

    def addUser(self, users: str, name: str, env, base):
        """C{salvusctl user add NAME} with the test's password on stdin, as an operator would."""
        child = _Child()
        process = reactor.spawnProcess(
            child,
            SALVUSCTL,
            [SALVUSCTL, "user", "add", name, "--role", "operator", "--file", users, "--password-stdin"],
            env=env,
            path=base,
        )
        process.write(PASSWORD.encode() + b"\n")
        process.closeStdin()
        return child.ended.addCallback(lambda code: (b"", child.output, code))

    @defer.inlineCallbacks
    def test_sampleWithItsProgram(self):
        """echo_supervisord_conf's sample with its [program:theprogramname] (C{/bin/cat}) on."""
        base = _shortDir(self)
        path = supervisordconfs.sampleProgram(base)
        theirs, mine = yield self.sideBySide(
            base, path, os.path.join(base, "supervisor.sock"), None, "admin", childEnv()
        )
        self.assertEqual(sorted(theirs), ["theprogramname"])

    @defer.inlineCallbacks
    def test_programsNumprocsGroupsIncludesEnv(self):
        """Programs, numprocs with process_name, a group, include globs and env expansion."""
        base = _shortDir(self)
        sock = os.path.join(base, "s.sock")
        path = supervisordconfs.multi(base, sock)
        theirs, mine = yield self.sideBySide(
            base, path, sock, ("op", "operator-password-1"), "op", childEnv(**supervisordconfs.MULTI_ENV)
        )
        self.assertEqual(
            sorted(theirs),
            [
                "listener",
                "pool:pool-0",
                "pool:pool-1",
                "ticker",
                "web:api_00",
                "web:api_01",
                "web:api_02",
                "web:worker",
            ],
        )
        self.assertEqual(len(mine), 8)


SUPERLANCE_DOCS = """\
[supervisord]

[eventlistener:memmon]
command=memmon -a 200MB -m bob@example.com
events=TICK_60

[eventlistener:crashmail]
command=crashmail -a -m developers@example.com
events=PROCESS_STATE_EXITED

[eventlistener:httpok]
command=httpok -p foo http://localhost:8080/tasty/service
events=TICK_60

[eventlistener:fatalmailbatch]
command=fatalmailbatch --toEmail="you@bar.com" --fromEmail="me@bar.com"
events=PROCESS_STATE,TICK_60
buffer_size=100
"""


class SuperlanceConfigTests(SynchronousTestCase):
    """The [eventlistener:] sections superlance's docs give become EventListener declarations."""

    def test_superlanceDocsListeners(self):
        """Command, events and buffer_size carried over; each listener's stdin is its pipe."""
        base = _shortDir(self)
        path = os.path.join(base, "supervisord.conf")
        with open(path, "w") as f:
            f.write(SUPERLANCE_DOCS)
        text, warnings = convert(readSupervisordConf(path, {}), path)
        tac = os.path.join(base, "host.tac")
        with open(tac, "w") as f:
            f.write(text)
        host = loadHost(tac)  # not validated: superlance need not be installed where this runs
        listeners = {d.name: d for d in host.declarations("supervisor")}
        self.assertEqual(sorted(listeners), ["crashmail", "fatalmailbatch", "httpok", "memmon"])
        self.assertTrue(all(isinstance(d, EventListener) and d.stdin for d in listeners.values()))
        self.assertEqual(listeners["memmon"].command, ("memmon", "-a", "200MB", "-m", "bob@example.com"))
        self.assertEqual(listeners["crashmail"].events, ("PROCESS_STATE_EXITED",))
        batch = listeners["fatalmailbatch"]
        self.assertEqual((batch.events, batch.buffer_size), (("PROCESS_STATE", "TICK_60"), 100))
        self.assertEqual(batch.command[1], "--toEmail=you@bar.com")
        self.assertEqual(batch.priority, -1)  # supervisord's pools start first and stop last


class NameTests(SynchronousTestCase):
    def test_nameSalvusRefusesIsWarnedWithItsLine(self):
        """supervisord accepts C{[program:web+api]}; Salvus's deploy names do not: the warning
        names the section's line, before the host file fails to start."""
        base = _shortDir(self)
        path = os.path.join(base, "supervisord.conf")
        with open(path, "w") as f:
            f.write("[supervisord]\n\n[program:web+api]\ncommand=/bin/cat\n")
        _, warnings = convert(readSupervisordConf(path, {}), path)
        self.assertIn(f"{path}:3: [program:web+api]: Salvus refuses this name", "\n".join(warnings))

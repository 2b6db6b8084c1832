"""The commands the README and docs/admin.md write, run as written through the real C{salvusctl}.

Help and local commands run the console script in a child process (as a shell runs it); commands
that talk to a host run against a real admin listening on a real socket (see L{CLITestBase}).
"""

from __future__ import annotations

import os
import shutil
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from salvusctl.cli import ExitCode
from tests.cli.test_cli import ROOT, CLITestBase


def salvusctl(*argv: str, env: dict[str, str] | None = None, path: str | None = None):
    """The installed console script (or C{-m salvusctl.cli}) in a child: (out, err, code)."""
    script = os.path.join(os.path.dirname(sys.executable), "salvusctl")
    full = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT, "HOME": path or "/nonexistent"}
    full.update(env or {})
    if os.path.exists(script):
        return getProcessOutputAndValue(script, list(argv), env=full, path=path, reactor=reactor)
    return getProcessOutputAndValue(
        sys.executable, ["-m", "salvusctl.cli", *argv], env=full, path=path, reactor=reactor
    )


class HelpTests(TestCase):
    """Every subcommand answers -h/--help (the top-level help points at them all)."""

    timeout = 120

    @defer.inlineCallbacks
    def test_everySubcommandAnswersHelp(self):
        """C{backup -h}, C{restore -h} and C{user -h} used to fail with "unrecognized arguments";
        now each command prints its usage, exits 0, and a command with actions lists them."""
        actions = {
            "backup": ["run", "status", "list", "log", "verify"],
            "user": ["add", "passwd", "remove", "list"],
            "balancer": ["show", "drain", "weight", "add-service"],
            "monitor": ["top", "history"],
            "cluster": ["hosts", "send", "deliver", "clients", "ping", "messages"],
        }
        commands = ["status", "start", "stop", "restart", "tail", "balancer", "monitor", "cluster",
                    "alerts", "diff", "reconcile", "backup", "restore", "user"]
        out, err, code = yield salvusctl("-h")
        self.assertEqual(code, 0, err)
        for command in commands:
            self.assertIn(command, out.decode())
        for command in commands:
            for flag in ("-h", "--help"):
                out, err, code = yield salvusctl(command, flag)
                self.assertEqual((code, err), (0, b""), (command, flag))
                self.assertIn(f"usage: salvusctl {command}", out.decode())
                for action in actions.get(command, []):
                    self.assertRegex(out.decode(), rf"\n\s+{action}\s", (command, action))
        out, err, code = yield salvusctl("user", "add", "-h")
        self.assertEqual(code, 0, err)
        self.assertIn("--password-stdin", out.decode())

    @defer.inlineCallbacks
    def test_errorsBeginWithSalvusctl(self):
        """Each usage error is one line on stderr beginning C{salvusctl:}, exit 2, nothing on stdout."""
        for argv in ((), ("frobnicate",), ("balancer", "frob"), ("user",), ("status", "--zz"),
                     ("monitor",), ("user", "add")):
            out, err, code = yield salvusctl(*argv)
            self.assertEqual((code, out), (ExitCode.USAGE, b""), argv)
            self.assertEqual(err.count(b"\n"), 1, (argv, err))
            self.assertTrue(err.startswith(b"salvusctl: "), (argv, err))


class BackupErrorPrefixTests(CLITestBase):
    @defer.inlineCallbacks
    def test_backupUsageErrorOnStderr(self):
        """The backup command's own usage errors are prefixed C{salvusctl: backup:} on stderr."""
        code, out, err = yield self.cli("backup", "frobnicate")
        self.assertEqual((code, out), (ExitCode.USAGE, ""))
        self.assertTrue(err.startswith("salvusctl: backup: "), err)
        self.assertEqual(err.count("\n"), 1, err)


class BalancerTargetTests(CLITestBase):
    def hostState(self, service, group, name):
        for host in self.balancer.snapshot()["services"][service]["groups"][group]["hosts"]:
            if host.get("name") == name:
                return host
        return None

    @defer.inlineCallbacks
    def test_targetAsWordsOrSlashes(self):
        """C{balancer drain web workers worker:0} (the README) and C{web/workers/worker:0} (the
        help) both work, for every action on a host or a group; a wrong count is one line, exit 2."""
        code, out, err = yield self.cli(
            "balancer", "add", "www", "web", "127.0.0.1:9100", "--name", "worker:0"
        )
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("-v", "balancer", "drain", "www", "web", "worker:0")
        self.assertEqual((code, out, err), (ExitCode.OK, "www/web/worker:0: drain\n", ""))
        self.assertEqual(self.hostState("www", "web", "worker:0")["state"], "drain")
        code, out, err = yield self.cli("balancer", "up", "www/web/worker:0")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(self.hostState("www", "web", "worker:0")["state"], "up")
        code, out, err = yield self.cli("balancer", "down", "www/web", "worker:0")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(self.hostState("www", "web", "worker:0")["state"], "maint")
        code, out, err = yield self.cli("balancer", "weight", "www", "web", "worker:0", "7")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertEqual(self.hostState("www", "web", "worker:0")["weight"], 7)
        code, out, err = yield self.cli("balancer", "retry", "www", "web", "worker:0")
        self.assertEqual(code, ExitCode.OK, err)
        code, out, err = yield self.cli("balancer", "remove", "www", "web", "worker:0")
        self.assertEqual(code, ExitCode.OK, err)
        self.assertIsNone(self.hostState("www", "web", "worker:0"))
        for argv in (("add-service", "api", "tcp:8081:interface=127.0.0.1"), ("add-group", "api", "blue"),
                     ("scheduler", "api", "blue", "leastconns"), ("add", "api", "blue", "10.0.0.1:80"),
                     ("remove-all", "api", "blue"), ("remove-group", "api", "blue")):
            code, out, err = yield self.cli("balancer", *argv)
            self.assertEqual(code, ExitCode.OK, (argv, err))
        self.assertEqual(list(self.balancer.services["api"]["groups"]), ["default"])  # as added live
        for argv in (("drain", "www", "web"), ("drain", "www", "web", "worker:0", "extra"),
                     ("remove-group", "api")):
            code, out, err = yield self.cli("balancer", *argv)
            self.assertEqual(code, ExitCode.USAGE, argv)
            self.assertRegex(err, r"^salvusctl: bad target .*: expected SERVICE/GROUP(/HOST)? "
                                  r"\(or SERVICE GROUP( HOST)?\)\n$")


class MonitorHistoryTests(CLITestBase):
    @defer.inlineCallbacks
    def test_unknownNameIsAnError(self):
        """C{monitor history nosuch} exited 0 with an empty table; now it exits 6 and lists the
        names it knows, while a known instance with no samples yet is an empty table, exit 0."""
        code, out, err = yield self.cli("monitor", "history", "nosuch")
        self.assertEqual((code, out), (ExitCode.NO_SUCH_NAME, ""))
        self.assertEqual(err, "salvusctl: nosuch: no such instance (known: web:0, web:1, worker:0)\n")
        code, out, err = yield self.cli("monitor", "history", "web:1")
        self.assertEqual((code, err), (ExitCode.OK, ""))
        code, out, err = yield self.cli("monitor", "history", "web:0")
        self.assertEqual((code, err), (ExitCode.OK, ""))
        self.assertEqual(len(out.splitlines()), 6)


class TailGroupTests(CLITestBase):
    @defer.inlineCallbacks
    def test_suggestedGroupSpellingWorks(self):
        """C{tail web} (two instances) suggests C{web:*}, which failed; now C{web:*} prints every
        instance's output under tail(1)'s C{==> NAME <==} headers, with C{-f} too."""
        for name in ("web:0", "web:1"):
            self.supervisor.clearLogs(name)
            self.supervisor.emit(name, f"hello from {name}")
        code, out, err = yield self.cli("tail", "web")
        self.assertEqual(code, ExitCode.NO_SUCH_NAME)
        self.assertIn("use web:* or web:N", err)
        code, out, err = yield self.cli("tail", "web:*")
        self.assertEqual((code, err), (ExitCode.OK, ""))
        self.assertEqual(out, "==> web:0 <==\nhello from web:0\n\n==> web:1 <==\nhello from web:1\n")
        reactor.callLater(0.15, self.supervisor.emit, "web:1", "later")
        code, out, err = yield self.cli("tail", "-f", "--interval", "0.1", "--polls", "4", "web:*")
        self.assertEqual((code, err), (ExitCode.OK, ""))
        self.assertEqual(out, "==> web:0 <==\nhello from web:0\n\n==> web:1 <==\nhello from web:1\n"
                              "later\n")
        self.supervisor.emit("worker:0", "hello from worker:0")
        code, out, err = yield self.cli("tail", "worker:*")  # one instance: no header
        self.assertEqual((code, out), (ExitCode.OK, "hello from worker:0\n"))
        code, out, err = yield self.cli("tail", "ghost:*")
        self.assertEqual((code, err), (ExitCode.NO_SUCH_NAME, "salvusctl: ghost: no such group\n"))


class UserScriptTests(TestCase):
    """C{salvusctl user} as a script runs it: no terminal, the real console script."""

    timeout = 60

    def setUp(self):
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)
        self.path = os.path.join(self.tmp, "users")

    def content(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    @defer.inlineCallbacks
    def test_oneClearLineAndNothingHalfWritten(self):
        """Without a terminal C{user add} gave a 30-line traceback; C{user add NAME --random} of an
        existing user printed a password and then refused. Now each is one line and leaves the
        file as it was; a generated password is printed only once the file holds it."""
        env = {"SALVUS_USERS": self.path}
        out, err, code = yield salvusctl("user", "add", "alice", env=env)
        self.assertEqual((code, out), (ExitCode.USAGE, b""))
        self.assertEqual(err, b"salvusctl: no terminal to ask for the password on: "
                              b"use --password-stdin or --random\n")
        self.assertIsNone(self.content())
        out, err, code = yield salvusctl("user", "add", "alice", "--random", env=env)
        self.assertEqual((code, err), (0, b""))
        password = out.decode().strip()
        self.assertEqual(len(out.splitlines()), 1)
        from salvusctl.admin.users import UsersFile

        self.assertIsNotNone(UsersFile(self.path).check("alice", password))
        before = self.content()
        out, err, code = yield salvusctl("user", "add", "alice", "--random", env=env)
        self.assertEqual((code, out), (ExitCode.FAILED, b""))
        self.assertEqual(err.decode(), f"salvusctl: user 'alice' already exists in {self.path} "
                                       "(salvusctl user passwd alice sets a new password)\n")
        out, err, code = yield salvusctl("user", "passwd", "bob", "--random", env=env)
        self.assertEqual((code, out), (ExitCode.FAILED, b""))
        self.assertEqual(err.decode(), f"salvusctl: no user 'bob' in {self.path} (salvusctl user add bob)\n")
        out, err, code = yield salvusctl("user", "add", "bad name!", "--random", env=env)
        self.assertEqual((code, out, err.count(b"\n")), (ExitCode.FAILED, b"", 1))
        self.assertEqual(self.content(), before)
        out, err, code = yield salvusctl("user", "passwd", "alice", "--random", env=env)
        self.assertEqual((code, err), (0, b""))
        self.assertIsNotNone(UsersFile(self.path).check("alice", out.decode().strip()))


class _Terminal(protocol.ProcessProtocol):
    """A child on a pseudo-terminal: types C{answer} when C{prompt} appears."""

    def __init__(self, prompt: bytes, answer: bytes):
        self.prompt, self.answer = prompt, answer
        self.output = b""
        self.asked = 0
        self.ended: defer.Deferred = defer.Deferred()

    def childDataReceived(self, fd, data):
        self.output += data
        if self.output.count(self.prompt) > self.asked:
            self.asked += 1
            self.transport.write(self.answer)

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class PasswordAndSocketTests(CLITestBase):
    sockdir = os.path.join("/tmp", f"salvus-cli2-{os.getpid()}")
    listeners = ("tcp:0:interface=127.0.0.1", f"unix:{sockdir}/var/admin.sock")

    @defer.inlineCallbacks
    def setUp(self):
        os.makedirs(os.path.join(self.sockdir, "var"), exist_ok=True)
        self.addCleanup(shutil.rmtree, self.sockdir, True)
        yield super().setUp()

    @defer.inlineCallbacks
    def test_passwordAskedOnTerminal(self):
        """C{-s URL -u op status} on a terminal exited 5 without asking; now it prompts (getpass,
        on the child's controlling terminal) and runs the command with what was typed."""
        script = os.path.join(os.path.dirname(sys.executable), "salvusctl")
        if not os.path.exists(script):
            raise SkipTest("no installed salvusctl console script")
        term = _Terminal(b"password for op at ", b"op-secret\n")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": self.tmp, "TERM": "dumb"}
        reactor.spawnProcess(term, script, [script, "-s", self.url, "-u", "op", "status"],
                             env=env, usePTY=True)
        code = yield term.ended
        self.assertEqual(term.asked, 1, term.output)
        self.assertEqual(code, 0, term.output)
        self.assertIn(b"worker:0", term.output)
        self.assertNotIn(b"op-secret", term.output)  # not echoed

    @defer.inlineCallbacks
    def test_passwordFromEnvironmentWithoutTerminal(self):
        """Without a terminal the password comes from SALVUS_PASSWORD; missing, one line, exit 2."""
        out, err, code = yield salvusctl("-s", self.url, "-u", "op", "status")
        self.assertEqual((code, out), (ExitCode.USAGE, b""))
        self.assertEqual(err, b"salvusctl: no password for op: use -p, SALVUS_PASSWORD or password= in "
                              b"~/.salvusctl.conf (or run on a terminal to be asked)\n")
        out, err, code = yield salvusctl("-s", self.url, "-u", "op", "status",
                                         env={"SALVUS_PASSWORD": "op-secret"})
        self.assertEqual(code, 0, err)
        self.assertIn(b"worker:0", out)

    @defer.inlineCallbacks
    def test_relativeUnixSocket(self):
        """C{-s unix://var/admin.sock} (as the README writes it for supervisorctl) is the socket
        under the working directory; from elsewhere the error names the path it resolved to."""
        env = {"SALVUS_PASSWORD": "op-secret"}
        for url in ("unix://var/admin.sock", "unix:var/admin.sock", f"unix://{self.sockdir}/var/admin.sock"):
            out, err, code = yield salvusctl("-s", url, "-u", "op", "status", env=env, path=self.sockdir)
            self.assertEqual(code, 0, (url, err))
            self.assertEqual(len(out.splitlines()), 3)
        elsewhere = os.path.realpath(self.tmp)
        out, err, code = yield salvusctl("-s", "unix://var/admin.sock", "-u", "op", "status",
                                         env=env, path=elsewhere)
        self.assertEqual(code, ExitCode.UNREACHABLE)
        self.assertEqual(err.decode(), f"salvusctl: unix://{elsewhere}/var/admin.sock: no such socket "
                                       "(is the host running?)\n")


class _ClosesStdoutAtOnce(protocol.ProcessProtocol):
    """Like C{| head -0}: the reader of the child's output is gone before the child writes."""

    def __init__(self):
        self.err = b""
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.transport.closeStdin()
        self.transport.closeStdout()

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class BrokenPipeTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_closedReaderIsNoTraceback(self):
        """C{salvusctl … | head} printed a BrokenPipeError traceback; now it stops quietly with the
        status a shell gives SIGPIPE (141), as C{cat} and C{ls} do."""
        script = os.path.join(os.path.dirname(sys.executable), "salvusctl")
        argv = [script, "-h"] if os.path.exists(script) else [sys.executable, "-m", "salvusctl.cli", "-h"]
        proto = _ClosesStdoutAtOnce()
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT, "HOME": "/nonexistent"}
        reactor.spawnProcess(proto, argv[0], argv, env=env)
        code = yield proto.ended
        self.assertNotIn(b"Traceback", proto.err)
        self.assertEqual((code, proto.err), (141, b""))

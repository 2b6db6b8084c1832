"""superlance's listeners, unchanged, under Salvus: C{memmon} restarts a program over its RSS
limit, C{httpok} one whose URL stops answering, C{crashmail} mails an unexpected exit to a real
SMTP server the test runs.  Each is a real host (supervisor + admin on a unix socket) built from
declarations; the listener reaches the admin through C{SUPERVISOR_SERVER_URL} with no password.
Each also runs under the real supervisord on the same programs, as the reference."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import warnings

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SkipTest, TestCase

from salvusctl.admin.declare import Admin
from salvusctl.host import Host
from salvusctl.supervisor import Deploy, EventListener
from tests.admin.helpers import writeUsers
from tests.helpers import waitFor

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))

HOG = ("import signal\n"
       "block = bytearray(80 * 1024 * 1024)\n"
       "for i in range(0, len(block), 4096):\n"
       "    block[i] = 1\n"
       "print('up', flush=True)\n"
       "signal.pause()\n")

WEB = ("import http.server, os, sys, time\n"
       "flag = sys.argv[1]\n"
       "if os.path.exists(flag):\n"
       "    os.unlink(flag)\n"
       "class H(http.server.BaseHTTPRequestHandler):\n"
       "    def do_GET(self):\n"
       "        if os.path.exists(flag):\n"
       "            time.sleep(30)\n"
       "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
       "    def log_message(self, *a):\n"
       "        pass\n"
       "s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), H)\n"
       "s.daemon_threads = True\n"
       "print('up', flush=True)\n"
       "s.serve_forever()\n")

CRASH = "import time; time.sleep(2); raise SystemExit(3)"

SENDMAIL = ("import smtplib, sys\n"
            "msg = sys.stdin.read()\n"
            "to = [l.split(':', 1)[1].strip() for l in msg.splitlines() if l.startswith('To:')]\n"
            "with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10) as s:\n"
            "    s.sendmail('salvus@localhost', to, msg)\n")


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


class SMTPSink:
    """A real SMTP server on 127.0.0.1 (the stdlib's, in a thread): keeps what it receives."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asyncore
            import smtpd
        self.asyncore = asyncore
        self.messages: list[str] = []
        sink = self

        class Server(smtpd.SMTPServer):
            def process_message(self, peer, mailfrom, rcpttos, data, **kw):
                sink.messages.append(data.decode() if isinstance(data, bytes) else data)

        self.map: dict = {}
        self.server = Server(("127.0.0.1", 0), None, decode_data=False)
        self.server._map = self.map
        self.asyncore.dispatcher.__init__(self.server, self.server.socket, map=self.map)
        self.port = self.server.socket.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            self.asyncore.loop(timeout=0.1, count=1, map=self.map)

    def close(self):
        self.running = False
        self.thread.join(5)
        self.server.close()


class SuperlanceTests(TestCase):
    timeout = 60

    def setUp(self):
        if not os.path.exists(os.path.join(BIN, "memmon")):
            raise SkipTest("superlance is not installed (pip install -e .[test])")
        self.dir = os.path.join("/tmp", f"salvus-sl-{os.getpid()}-{id(self) % 100000}")
        os.makedirs(self.dir, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "admin.sock")

    @defer.inlineCallbacks
    def host(self, *declarations):
        users = os.path.join(self.dir, "users")
        writeUsers(users)
        host = Host("sl", var=os.path.join(self.dir, "var"))
        host.add(Admin(f"unix:{self.sock}", users=users))
        for d in declarations:
            host.add(d)
        host.validate()
        top = host.build(reactor)
        top.startService()
        self.addCleanup(top.stopService)
        services = host.context.services
        yield services["admin"].ready
        self.sup = services["supervisor"]
        self.assertEqual(self.sup.serverURL, f"unix://{self.sock}")

    @defer.inlineCallbacks
    def waitOr(self, predicate, timeout, listener):
        """waitFor, failing with what the listener wrote on stderr (its own account)."""
        try:
            value = yield waitFor(predicate, timeout=timeout)
        except AssertionError as e:
            err = "\n".join(self.sup.tailLog(listener, 30, stream="stderr"))
            raise AssertionError(f"{e}; {listener} stderr:\n{err}\n{self.sup.instanceInfos()}")
        return value

    def running(self, name):
        """The pid of C{name} when it is RUNNING (else 0)."""
        info = self.sup.instanceInfo(name)
        return info["pid"] if info["state"] == "RUNNING" else 0

    def pid(self, name):
        return self.sup.instanceInfo(name)["pid"]

    @defer.inlineCallbacks
    def test_memmon_restarts_a_program_over_its_rss_limit(self):
        """memmon (on TICK_5) reads RSS with ps and restarts the 80 MB hog limited to 30 MB."""
        yield self.host(
            Deploy("hog", [sys.executable, "-c", HOG], startsecs=0.5),
            EventListener("memmon", [os.path.join(BIN, "memmon"), "-g", "hog=30MB"], events=["TICK_5"]),
        )
        first = yield waitFor(lambda: self.running("hog:0"), timeout=15)
        yield self.waitOr(lambda: self.sup.instanceInfo("hog:0")["state"] == "RUNNING"
                          and self.pid("hog:0") not in (0, first), 20, "memmon:0")
        self.assertIn("RSS of hog:0 is", "\n".join(self.sup.tailLog("memmon:0", stream="stderr")))

    @defer.inlineCallbacks
    def test_httpok_restarts_a_program_whose_url_stops_answering(self):
        """httpok (on TICK_5, 2 s timeout) restarts web:0 once its URL hangs; the new one answers."""
        port = freePort()
        flag = os.path.join(self.dir, "hang")
        yield self.host(
            Deploy("web", [sys.executable, "-c", WEB, flag, str(port)], startsecs=0.5),
            EventListener("httpok", [os.path.join(BIN, "httpok"), "-p", "web:0", "-t", "2",
                                     f"http://127.0.0.1:{port}/"], events=["TICK_5"]),
        )
        first = yield waitFor(lambda: self.running("web:0"), timeout=15)
        with open(flag, "w"):
            pass
        yield self.waitOr(lambda: self.sup.instanceInfo("web:0")["state"] == "RUNNING"
                          and self.pid("web:0") not in (0, first), 25, "httpok:0")
        self.assertFalse(os.path.exists(flag))
        # startProcess answers httpok once web:0 is RUNNING again: it says so just after.
        yield self.waitOr(lambda: "web:0 restarted" in "\n".join(
            self.sup.tailLog("httpok:0", stream="stderr")), 10, "httpok:0")
        err = "\n".join(self.sup.tailLog("httpok:0", stream="stderr"))
        self.assertIn("web:0 is in RUNNING state, restarting", err)

    @defer.inlineCallbacks
    def test_httpok_p_takes_the_programs_own_name(self):
        """httpok's C{-p web}, as written for supervisord, finds a C{process_name="supervisord"}
        deploy's one instance C{web} and restarts it."""
        port = freePort()
        flag = os.path.join(self.dir, "hang")
        yield self.host(
            Deploy("web", [sys.executable, "-c", WEB, flag, str(port)], startsecs=0.5,
                   process_name="supervisord"),
            EventListener("httpok", [os.path.join(BIN, "httpok"), "-p", "web", "-t", "2",
                                     f"http://127.0.0.1:{port}/"], events=["TICK_5"]),
        )
        first = yield waitFor(lambda: self.running("web"), timeout=15)
        with open(flag, "w"):
            pass
        yield self.waitOr(lambda: self.sup.instanceInfo("web")["state"] == "RUNNING"
                          and self.pid("web") not in (0, first), 25, "httpok:0")
        yield self.waitOr(lambda: "web restarted" in "\n".join(
            self.sup.tailLog("httpok:0", stream="stderr")), 10, "httpok:0")
        self.assertIn("web is in RUNNING state, restarting",
                      "\n".join(self.sup.tailLog("httpok:0", stream="stderr")))

    @defer.inlineCallbacks
    def test_childutils_rpc_and_remote_communication(self):
        """C{childutils.getRPCInterface} on the environment a child gets reaches the host with
        no password; its C{sendRemoteCommEvent} reaches a REMOTE_COMMUNICATION listener."""
        from supervisor import childutils

        out = os.path.join(self.dir, "events")
        yield self.host(
            EventListener("lst", [sys.executable, os.path.join(HERE, "event_listener.py"), out],
                          events=["REMOTE_COMMUNICATION"], startsecs=0.2),
        )
        yield waitFor(lambda: self.running("lst:0"), timeout=15)
        env = {"SUPERVISOR_SERVER_URL": self.sup.serverURL}

        def call():
            rpc = childutils.getRPCInterface(env)
            rpc.supervisor.sendRemoteCommEvent("deploy", "version 2 is out")
            return rpc.supervisor.getState()

        state = yield threads.deferToThread(call)
        self.assertEqual(state["statename"], "RUNNING")

        def heard():
            if not os.path.exists(out):
                return None
            with open(out) as f:
                return [line for line in f if "REMOTE_COMMUNICATION" in line]

        lines = yield waitFor(heard, timeout=10)
        event = json.loads(lines[0])
        self.assertEqual(event["payload"], "type:deploy\nversion 2 is out")
        self.assertEqual(event["env"]["SUPERVISOR_SERVER_URL"], f"unix://{self.sock}")

    def smtp(self) -> SMTPSink:
        sink = SMTPSink()
        self.addCleanup(sink.close)
        sendmail = os.path.join(self.dir, "sendmail.py")
        with open(sendmail, "w") as f:
            f.write(SENDMAIL)
        return sink, f"{sys.executable} {sendmail} {sink.port}"

    @defer.inlineCallbacks
    def test_crashmail_mails_an_unexpected_exit(self):
        """crashmail hears PROCESS_STATE_EXITED expected:0 and mails it through a real SMTP server."""
        sink, sendmail = self.smtp()
        yield self.host(
            Deploy("crasher", [sys.executable, "-c", CRASH], startsecs=1, autorestart="never"),
            EventListener("crashmail", [os.path.join(BIN, "crashmail"), "-a", "-m", "ops@localhost",
                                        "-s", sendmail], events=["PROCESS_STATE_EXITED"]),
        )
        yield waitFor(lambda: sink.messages, timeout=20)
        text = sink.messages[0]
        self.assertIn("To: ops@localhost", text)
        self.assertRegex(text, r"Process 0 in group crasher exited unexpectedly \(pid \d+\) "
                               r"from state RUNNING")

    def supervisord(self, programs: str):
        """Run the real supervisord (until the test ends) on C{programs}, its sections."""
        supervisord = os.path.join(BIN, "supervisord")
        if not os.path.exists(supervisord):
            raise SkipTest("supervisord is not installed")
        conf = os.path.join(self.dir, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(f"""[supervisord]
nodaemon=true
logfile={self.dir}/supervisord.log
pidfile={self.dir}/supervisord.pid
childlogdir={self.dir}

[unix_http_server]
file={self.dir}/sd.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

""" + programs)
        ended = defer.Deferred()

        class P(ProcessProtocol):
            def processEnded(self, reason):
                ended.callback(None)

        proc = reactor.spawnProcess(P(), supervisord, [supervisord, "-c", conf], env=dict(os.environ))

        def stop():
            try:
                proc.signalProcess("TERM")
            except Exception:
                pass
            return ended

        self.addCleanup(stop)
        return defer.succeed(None)

    def supervisordLog(self) -> str:
        path = os.path.join(self.dir, "supervisord.log")
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    @defer.inlineCallbacks
    def test_memmon_under_supervisord_for_reference(self):
        """The same memmon and hog under the real supervisord: it restarts the hog too."""
        hog = os.path.join(self.dir, "hog.py")
        with open(hog, "w") as f:
            f.write(HOG)
        yield self.supervisord(f"""[program:hog]
command={sys.executable} {hog}
startsecs=1

[eventlistener:memmon]
command={os.path.join(BIN, "memmon")} -g hog=30MB
events=TICK_5
""")
        yield waitFor(lambda: self.supervisordLog().count("success: hog entered RUNNING") >= 2, timeout=25)
        self.assertIn("stopped: hog (terminated by SIGTERM)", self.supervisordLog())

    @defer.inlineCallbacks
    def test_httpok_under_supervisord_for_reference(self):
        """The same httpok and web program under the real supervisord: it restarts the web too."""
        port = freePort()
        flag = os.path.join(self.dir, "hang")
        web = os.path.join(self.dir, "web.py")
        with open(web, "w") as f:
            f.write(WEB)
        yield self.supervisord(f"""[program:web]
command={sys.executable} {web} {flag} {port}
startsecs=1

[eventlistener:httpok]
command={os.path.join(BIN, "httpok")} -p web -t 2 http://127.0.0.1:{port}/
events=TICK_5
""")
        yield waitFor(lambda: "success: web entered RUNNING" in self.supervisordLog(), timeout=15)
        with open(flag, "w"):
            pass
        yield waitFor(lambda: self.supervisordLog().count("success: web entered RUNNING") >= 2, timeout=25)
        self.assertFalse(os.path.exists(flag))

    @defer.inlineCallbacks
    def test_crashmail_under_supervisord_for_reference(self):
        """The same crashmail and program under the real supervisord: the same mail (its names
        are supervisord's, C{crasher} for a single process)."""
        sink, sendmail = self.smtp()
        yield self.supervisord(f"""[program:crasher]
command={sys.executable} -c "{CRASH}"
startsecs=1
autorestart=false

[eventlistener:crashmail]
command={os.path.join(BIN, "crashmail")} -a -m ops@localhost -s "{sendmail}"
events=PROCESS_STATE_EXITED
""")
        try:
            yield waitFor(lambda: sink.messages, timeout=20)
        except AssertionError as e:
            logs = [os.path.join(self.dir, n) for n in sorted(os.listdir(self.dir)) if n.endswith(".log")]
            raise AssertionError(f"{e}\n" + "\n".join(open(p).read()[-2000:] for p in logs))
        self.assertRegex(sink.messages[0],
                         r"Process crasher in group crasher exited unexpectedly \(pid \d+\) "
                         r"from state RUNNING")


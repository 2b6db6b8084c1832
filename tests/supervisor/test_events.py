"""supervisord's event listener protocol: envelopes, serials, buffering, FAIL and overflow
(in memory), PROCESS_STATE payloads and ticks on a Clock, and a real listener process."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.errors import ConfigError
from salvusctl.supervisor import EventListener
from salvusctl.supervisor.deploy import Deploy
from salvusctl.supervisor.eventlistener import EventHub, ListenerState
from salvusctl.supervisor.events import processStatePayload
from salvusctl.supervisor.service import SupervisorService
from salvusctl.supervisor.states import ProcessState
from tests.helpers import waitFor
from tests.supervisor import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
LISTENER = os.path.join(HERE, "event_listener.py")
S = ProcessState


class FakeTransport:
    def __init__(self):
        self.written: list[bytes] = []

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.append(data)


class FakeInstance:
    def __init__(self, deploy, index=0):
        self.deploy = deploy
        self.name = f"{deploy.name}:{index}"
        self.state = S.STOPPED
        self.pid = None
        self.exitstatus = None
        self.backoffCount = 0
        self.transport = FakeTransport()


class FakeService:
    def __init__(self):
        self.reactor = Clock()


def listener(name="lst", events=("PROCESS_STATE",), command=None, **kw) -> EventListener:
    return EventListener(name, command or [sys.executable, LISTENER], events=list(events), **kw)


class ProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.hub = EventHub(FakeService())
        self.decl = listener(buffer_size=3)
        self.hub.deployAdded(self.decl)
        self.pool = self.hub.pools["lst"]
        self.inst = FakeInstance(self.decl)
        self.prog = FakeInstance(Deploy("web", ["true"]))

    def run_(self, instance, pid=100):
        for old, new in ((S.STOPPED, S.STARTING), (S.STARTING, S.RUNNING)):
            instance.state = new
            if new == S.RUNNING:
                instance.pid = pid
            self.hub.stateChanged(instance, old, new)
        if instance is self.inst:
            # Its own two state events (serials 0 and 1) are not what these tests look at.
            self.pool.buffer.clear()

    def test_envelope_is_supervisords(self):
        """The header line is exactly supervisord's, so childutils and superlance parse it."""
        self.run_(self.inst)
        self.pool.channel(self.inst).received(b"READY\n")
        self.run_(self.prog, pid=4242)
        sent = b"".join(self.inst.transport.written).decode()
        self.assertEqual(sent,
            "ver:3.0 server:supervisor serial:2 pool:lst poolserial:2 eventname:PROCESS_STATE_STARTING "
            "len:54\nprocessname:0 groupname:web from_state:STOPPED tries:0")
        self.assertEqual(self.pool.channel(self.inst).state, ListenerState.BUSY)

    def test_busy_listener_buffers_and_ok_sends_next(self):
        """While the listener is busy events wait in the buffer; RESULT OK + READY sends the next."""
        self.run_(self.inst)
        ch = self.pool.channel(self.inst)
        ch.received(b"READY\n")
        self.run_(self.prog)
        self.assertEqual(len(self.inst.transport.written), 1)
        self.assertEqual([e.name for e in self.pool.buffer], ["PROCESS_STATE_RUNNING"])
        ch.received(b"RESULT 2\nOK")
        self.assertEqual(ch.state, ListenerState.ACKNOWLEDGED)
        ch.received(b"READY\n")
        self.assertEqual(len(self.inst.transport.written), 2)
        self.assertIn(b"eventname:PROCESS_STATE_RUNNING", self.inst.transport.written[1])
        self.assertIn(b"serial:3 pool:lst poolserial:3", self.inst.transport.written[1])

    def test_fail_resends_same_serials(self):
        """RESULT FAIL buffers the event again at the head; it is re-sent with its serials."""
        self.run_(self.inst)
        ch = self.pool.channel(self.inst)
        ch.received(b"READY\n")
        self.run_(self.prog)
        first = self.inst.transport.written[0]
        ch.received(b"RESULT 4\nFAILREADY\n")
        self.assertEqual(self.inst.transport.written[1], first)

    def test_result_split_across_reads(self):
        self.run_(self.inst)
        self.run_(self.prog)
        ch = self.pool.channel(self.inst)
        ch.received(b"REA")
        ch.received(b"DY\n")
        self.assertEqual(ch.state, ListenerState.BUSY)
        for piece in (b"RESU", b"LT 2", b"\nO", b"K"):
            ch.received(piece)
        self.assertEqual(ch.state, ListenerState.ACKNOWLEDGED)

    def test_protocol_violation_is_unknown(self):
        """Anything but READY when acknowledged, or spurious output when ready: UNKNOWN, no more events."""
        self.run_(self.inst)
        ch = self.pool.channel(self.inst)
        ch.received(b"hello there\n")
        self.assertEqual(ch.state, ListenerState.UNKNOWN)
        self.run_(self.prog)
        self.assertEqual(self.inst.transport.written, [])

    def test_overflow_drops_oldest_and_notifies(self):
        """Beyond buffer_size the oldest event goes, and EVENT_BUFFER_OVERFLOW says which."""
        other = listener("watch", events=["EVENT_BUFFER_OVERFLOW"])
        self.hub.deployAdded(other)
        for i in range(5):
            prog = FakeInstance(Deploy(f"p{i}", ["true"]))
            prog.state = S.STARTING
            self.hub.stateChanged(prog, S.STOPPED, S.STARTING)
        self.assertEqual(len(self.pool.buffer), 3)
        self.assertEqual([e.poolSerials["lst"] for e in self.pool.buffer], [2, 3, 4])
        self.assertEqual([e.serial for e in self.pool.buffer], [2, 3, 4])
        self.hub.service.reactor.advance(0)
        watch = self.hub.pools["watch"]
        self.assertEqual([e.payload for e in watch.buffer],
                         ["groupname:lst eventname:PROCESS_STATE_STARTING"] * 2)

    def test_per_pool_serials(self):
        """Each pool numbers the events it takes; the global serial is shared."""
        ticks = listener("ticks", events=["PROCESS_STATE_RUNNING"])
        self.hub.deployAdded(ticks)
        self.run_(self.prog)
        starting, running = self.pool.buffer
        self.assertEqual((starting.serial, starting.poolSerials), (0, {"lst": 0}))
        self.assertEqual((running.serial, running.poolSerials), (1, {"lst": 1, "ticks": 0}))
        self.assertEqual(self.hub.pools["ticks"].buffer, [running])

    def test_exit_while_busy_rebuffers(self):
        """A listener that dies holding an event: the event is sent again to the next one."""
        self.run_(self.inst)
        self.run_(self.prog)
        ch = self.pool.channel(self.inst)
        ch.received(b"READY\n")
        self.inst.state = S.EXITED
        self.hub.stateChanged(self.inst, S.RUNNING, S.EXITED)
        self.assertEqual([e.serial for e in self.pool.buffer], [2, 3, 4])
        self.assertEqual(self.pool.buffer[2].name, "PROCESS_STATE_EXITED")


class PayloadTests(SynchronousTestCase):
    def test_state_payload_keys(self):
        """The keys supervisord sends per state (superlance reads pid, expected, from_state)."""
        self.assertEqual(processStatePayload("cat", "cat", "RUNNING", "EXITED", pid=7, expected=False),
                         "processname:cat groupname:cat from_state:RUNNING expected:0 pid:7")
        self.assertEqual(processStatePayload("cat", "cat", "STARTING", "BACKOFF", tries=2),
                         "processname:cat groupname:cat from_state:STARTING tries:2")
        self.assertEqual(processStatePayload("cat", "cat", "STOPPING", "STOPPED", pid=7),
                         "processname:cat groupname:cat from_state:STOPPING pid:7")
        self.assertEqual(processStatePayload("cat", "cat", "BACKOFF", "FATAL"),
                         "processname:cat groupname:cat from_state:BACKOFF")

    def test_ticks_follow_the_clock(self):
        """TICK_5/60/3600 at the slice boundaries of the injected clock, with supervisord's when:."""
        service = FakeService()
        service.reactor.advance(3598)
        hub = EventHub(service)
        hub.deployAdded(listener(events=["TICK"], buffer_size=100))
        hub.started()
        service.reactor.advance(2)
        service.reactor.advance(5)
        service.reactor.pump([5] * 12)
        names = [(e.name, e.payload) for e in hub.pools["lst"].buffer]
        self.assertEqual(names[:3], [("TICK_5", "when:3600"), ("TICK_60", "when:3600"),
                                     ("TICK_3600", "when:3600")])
        self.assertEqual(names[3], ("TICK_5", "when:3605"))
        self.assertIn(("TICK_60", "when:3660"), names)
        self.assertEqual(sum(1 for n, _ in names if n == "TICK_5"), 14)


class DeclarationTests(SynchronousTestCase):
    def test_listener_is_a_deploy_with_stdin(self):
        decl = listener()
        decl.validate()
        self.assertTrue(decl.stdin)
        self.assertEqual(decl.priority, -1)

    def test_unknown_event_refused(self):
        with self.assertRaises(ConfigError) as e:
            listener(events=["PROCESS_STATE_RUNING"]).validate()
        self.assertIn("unknown event type 'PROCESS_STATE_RUNING'", str(e.exception))

    def test_no_events_refused(self):
        with self.assertRaises(ConfigError):
            listener(events=[]).validate()

    def test_bad_buffer_size_refused(self):
        with self.assertRaises(ConfigError):
            listener(buffer_size=0).validate()

    def test_in_a_host_file(self):
        """Declared in a host like a Deploy, validated with the other deploys."""
        from salvusctl.host import Host

        host = Host("h", var=scratch(self))
        host.add(Deploy("web", [sys.executable, "-c", "pass"]))
        host.add(listener(events=["PROCESS_STATE"]))
        host.validate()
        host.add(listener(events=["PROCESS_STATE"]))
        self.assertRaises(ConfigError, host.validate)


def readEvents(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


class RealListenerTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_process_state_events_reach_a_real_listener(self):
        """A listener script under the supervisor hears a program start, run and exit, with
        supervisord's payloads, and has SUPERVISOR_* in its environment."""
        out = scratch(self) + "-events"
        svc = SupervisorService(reactor, [
            listener(events=["PROCESS_STATE"], command=[sys.executable, LISTENER, out], startsecs=0.2),
            Deploy("short", [sys.executable, "-c", "import time; time.sleep(0.5)"], startsecs=0.2,
                   autorestart="never", exitcodes=[0], depends_on=["lst"]),
        ], runDir=scratch(self), reapInterval=0.2)
        svc.serverURL = "unix:///nowhere/admin.sock"
        svc.startService()
        self.addCleanup(svc.stopService)

        def exited():
            return [e for e in readEvents(out) if e["headers"]["eventname"] == "PROCESS_STATE_EXITED"]

        yield waitFor(exited, timeout=15)
        events = [e for e in readEvents(out) if "processname:0 groupname:short" in e["payload"]]
        names = [e["headers"]["eventname"] for e in events]
        self.assertEqual(names, ["PROCESS_STATE_STARTING", "PROCESS_STATE_RUNNING", "PROCESS_STATE_EXITED"])
        pid = svc.instances["short:0"].info()["pid"] or None
        running, exit_ = events[1]["payload"], events[2]["payload"]
        self.assertRegex(running, r"^processname:0 groupname:short from_state:STARTING pid:\d+$")
        self.assertRegex(exit_, r"^processname:0 groupname:short from_state:RUNNING expected:1 pid:\d+$")
        self.assertEqual(running.split("pid:")[1], exit_.split("pid:")[1])
        self.assertIsNone(pid)
        serials = [int(e["headers"]["poolserial"]) for e in readEvents(out)]
        self.assertEqual(serials, list(range(len(serials))))
        env = events[0]["env"]
        self.assertEqual(env, {"SUPERVISOR_ENABLED": "1", "SUPERVISOR_PROCESS_NAME": "0",
                               "SUPERVISOR_GROUP_NAME": "lst",
                               "SUPERVISOR_SERVER_URL": "unix:///nowhere/admin.sock"})


    @inlineCallbacks
    def test_log_and_communication_events_from_a_real_program(self):
        """Through the real output path: a program's stderr chunk is a PROCESS_LOG_STDERR event,
        its capture block a PROCESS_COMMUNICATION_STDOUT event and not a log line."""
        out = scratch(self) + "-events"
        talk = ("import sys, time\n"
                "sys.stderr.write('warn\\n'); sys.stderr.flush()\n"
                "sys.stdout.write('a <!--XSUPERVISOR:BEGIN-->hi there<!--XSUPERVISOR:END--> b\\n')\n"
                "sys.stdout.flush(); time.sleep(30)\n")
        svc = SupervisorService(reactor, [
            listener(events=["PROCESS_LOG", "PROCESS_COMMUNICATION"],
                     command=[sys.executable, LISTENER, out], startsecs=0.2),
            Deploy("talk", [sys.executable, "-c", talk], startsecs=0.2, depends_on=["lst"],
                   stderr_events_enabled=True, stdout_capture_maxbytes=1024),
        ], runDir=scratch(self), reapInterval=0.2)
        svc.startService()
        self.addCleanup(svc.stopService)
        yield waitFor(lambda: len(readEvents(out)) >= 2, timeout=15)
        got = {e["headers"]["eventname"]: e["payload"] for e in readEvents(out)}
        pid = svc.instanceInfo("talk:0")["pid"]
        self.assertEqual(got["PROCESS_LOG_STDERR"],
                         f"processname:0 groupname:talk pid:{pid} channel:stderr\nwarn\n")
        self.assertEqual(got["PROCESS_COMMUNICATION_STDOUT"],
                         f"processname:0 groupname:talk pid:{pid}\nhi there")
        yield waitFor(lambda: svc.tailLog("talk:0"), timeout=5)
        self.assertEqual(svc.tailLog("talk:0"), ["a  b"])

class OtherEventTests(SynchronousTestCase):
    def setUp(self):
        self.hub = EventHub(FakeService())
        self.hub.deployAdded(listener(events=["EVENT"], buffer_size=50))
        self.pool = self.hub.pools["lst"]

    def payloads(self):
        return [(e.name, e.payload) for e in self.pool.buffer]

    def test_remote_communication(self):
        self.hub.remote("mytype", "some data")
        self.assertEqual(self.payloads(), [("REMOTE_COMMUNICATION", "type:mytype\nsome data")])

    def test_group_events(self):
        self.hub.groupAdded("web")
        self.hub.groupRemoved("web")
        self.assertEqual(self.payloads(), [("PROCESS_GROUP_ADDED", "groupname:web\n"),
                                           ("PROCESS_GROUP_REMOVED", "groupname:web\n")])

    def test_supervisor_state_change(self):
        self.hub.started()
        self.hub.stopping()
        self.assertEqual(self.payloads(), [("SUPERVISOR_STATE_CHANGE_RUNNING", ""),
                                           ("SUPERVISOR_STATE_CHANGE_STOPPING", "")])

    def test_log_events_only_when_enabled(self):
        """PROCESS_LOG_STDOUT/STDERR per chunk, for deploys that enable them; the log keeps the data."""
        quiet = FakeInstance(Deploy("quiet", ["true"]))
        loud = FakeInstance(Deploy("loud", ["true"], stderr_events_enabled=True))
        loud.pid = 9
        self.assertEqual(self.hub.output(quiet, "stderr", b"x\n"), b"x\n")
        self.assertEqual(self.hub.output(loud, "stdout", b"out\n"), b"out\n")
        self.assertEqual(self.hub.output(loud, "stderr", b"oops\n"), b"oops\n")
        self.assertEqual(self.payloads(), [
            ("PROCESS_LOG_STDERR", "processname:0 groupname:loud pid:9 channel:stderr\noops\n")])

    def test_communication_capture(self):
        """A BEGIN…END block (even split across reads) leaves the log and becomes an event."""
        inst = FakeInstance(Deploy("talk", ["true"], stdout_capture_maxbytes=1024))
        inst.pid = 5
        kept = self.hub.output(inst, "stdout", b"before <!--XSUPERVISOR:BEGIN-->hel")
        kept += self.hub.output(inst, "stdout", b"lo<!--XSUPERVISOR:END--> after\n")
        self.assertEqual(kept, b"before  after\n")
        self.assertEqual(self.payloads(), [
            ("PROCESS_COMMUNICATION_STDOUT", "processname:0 groupname:talk pid:5\nhello")])

    def test_communication_capture_on_stderr(self):
        """stderr has its own capture mode: the block becomes PROCESS_COMMUNICATION_STDERR."""
        inst = FakeInstance(Deploy("talk", ["true"], stderr_capture_maxbytes=1024))
        inst.pid = 6
        kept = self.hub.output(inst, "stderr", b"<!--XSUPERVISOR:BEGIN-->err<!--XSUPERVISOR:END-->\n")
        self.assertEqual(kept, b"\n")
        self.assertEqual(self.payloads(), [
            ("PROCESS_COMMUNICATION_STDERR", "processname:0 groupname:talk pid:6\nerr")])

    def test_stdout_log_events_when_enabled(self):
        """stdout_events_enabled sends PROCESS_LOG_STDOUT per chunk, as supervisord does."""
        loud = FakeInstance(Deploy("loud", ["true"], stdout_events_enabled=True))
        loud.pid = 8
        self.assertEqual(self.hub.output(loud, "stdout", b"out\n"), b"out\n")
        self.assertEqual(self.payloads(), [
            ("PROCESS_LOG_STDOUT", "processname:0 groupname:loud pid:8 channel:stdout\nout\n")])

    def test_capture_off_by_default(self):
        inst = FakeInstance(Deploy("talk", ["true"]))
        data = b"<!--XSUPERVISOR:BEGIN-->x<!--XSUPERVISOR:END-->"
        self.assertEqual(self.hub.output(inst, "stdout", data), data)
        self.assertEqual(self.payloads(), [])


"""A changed deploy that a worker host publishes to the cluster rolls: the front-end's clients see
nothing.

A front-end host (tac/frontend.tac) balances the C{worker} deploy of a worker host through the
shared PostgreSQL store (C{Group(cluster_deploy="worker")}); no balancer on the worker host follows
that deploy.  The worker's host file changes one environment variable of the deploy and twistd gets
SIGHUP, as an operator applies it.  Client loops go through the front-end's balancer all the while:
not one request may fail, and afterwards each worker instance is a new process with the new
environment (read from C{/proc}).  Both hosts run in network namespaces of their own where the test
can make them (see L{tests.integration.test_cluster}).
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.helpers import REPO, LoadLoops, waitFor
from tests.integration.test_cluster import TwoHosts, _rpc
from tests.integration.test_rolling import REQUEST_TIMEOUT, _Factory

LOOPS = 4  # concurrent client loops
MAX_REQUESTS = 3000  # per loop: bounded in count as well as in time

_WORKER_TAC = """\
import os, sys
from salvusctl.admin.declare import Admin
from salvusctl.cluster import Cluster
from salvusctl.host import Host
from salvusctl.supervisor.deploy import Deploy, Probe, Ready

address = os.environ["SALVUS_ADDRESS"]
host = Host(name=os.environ["SALVUS_HOST_NAME"], store=os.environ["SALVUS_STORE"],
            var=os.environ["SALVUS_VAR"])
host.add(Deploy("worker", command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
                numprocs=2, port=int(os.environ["SALVUS_WORKER_PORT"]), cwd=@REPO@,
                env={"SALVUS_WORKER_BIND": address, "PYTHONPATH": @REPO@, "MODE": @MODE@},
                startsecs=0.2, stopwaitsecs=5,
                probe=Probe(kind="tcp", interval=2, timeout=1, host=address),
                ready=Ready("probe", interval=0.1)))
host.add(Cluster(address=address, heartbeat=0.5))
host.add(Admin(os.environ["SALVUS_ADMIN"], bootstrap_user="admin", users=os.environ["SALVUS_USERS"],
               allow_plain_http=True))
application = host.application()
"""


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [item.partition(b"=") for item in f.read().split(b"\0") if item]
    return {k.decode(): v.decode() for k, _, v in items}


@defer.inlineCallbacks
def _get(address: str, port: int) -> defer.Deferred:
    """The body of one response through the front-end, or a failure (refused, reset, not a 200)."""
    done: defer.Deferred = defer.Deferred()
    endpoint = TCP4ClientEndpoint(reactor, address, port, timeout=REQUEST_TIMEOUT)
    proto = yield endpoint.connect(_Factory(done)).addTimeout(REQUEST_TIMEOUT, reactor)
    try:
        raw = yield done.addTimeout(REQUEST_TIMEOUT, reactor)
    finally:
        if proto.transport.connected:
            proto.transport.abortConnection()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise ValueError(f"bad response {head[:60]!r}")
    return body.decode()


class ClusterRollTests(TwoHosts):
    timeout = 180

    def writeWorker(self, mode: str) -> None:
        text = _WORKER_TAC.replace("@REPO@", repr(REPO)).replace("@MODE@", repr(mode))
        with open(self.workerTac, "w") as f:
            f.write(text)

    @defer.inlineCallbacks
    def pids(self) -> defer.Deferred:
        """The worker host's RUNNING instances and their pids, from its own admin."""
        infos = yield _rpc(self.worker_reach, self.worker_admin, "supervisor.getAllProcessInfo")
        return {f"{i['group']}:{i['name']}": i["pid"] for i in infos if i["statename"] == "RUNNING"}

    @defer.inlineCallbacks
    def bothServe(self) -> defer.Deferred:
        """Whether both worker instances answer through the front-end."""
        seen = set()
        for _ in range(8):
            body = yield _get(self.front_reach, self.web)
            seen.add(body.split(" on port")[0])
        return seen == {"hello from worker:0", "hello from worker:1"}

    @defer.inlineCallbacks
    def test_hangupOnTheWorkerRollsAPublishedDeploy(self):
        """SIGHUP to the worker host after its published deploy's environment changed: zero
        failed requests through the front-end, and two new worker processes with the new
        environment."""
        self.workerTac = os.path.join(self.tmp, "worker.tac")
        self.writeWorker("one")
        ns_front = self.netns.front if self.netns else None
        ns_worker = self.netns.worker if self.netns else None
        worker = self._start(
            "worker", self.workerTac, ns_worker,
            SALVUS_STORE=self._store(self.pg_worker), SALVUS_ADDRESS=self.worker_addr,
            SALVUS_WORKER_PORT=str(self.worker_port),
            SALVUS_ADMIN=f"tcp:{self.worker_admin}:interface={self.worker_reach}",
        )
        front = self._start(
            "front", "frontend.tac", ns_front,
            SALVUS_STORE=self._store(self.pg_front), SALVUS_ADDRESS=self.front_addr,
            SALVUS_WEB_PORT=str(self.web), SALVUS_ADMIN=f"tcp:{self.front_admin}",
        )
        yield self._until(self.bothServe, "both workers answering through the front-end", front, worker)
        before = yield self.pids()
        self.assertEqual(sorted(before), ["worker:0", "worker:1"])
        self.assertEqual({_environ(pid)["MODE"] for pid in before.values()}, {"one"})

        load = LoadLoops(lambda: _get(self.front_reach, self.web), LOOPS, MAX_REQUESTS)
        bodies, failures = load.bodies, load.failures

        def reloaded() -> bool:
            return "SIGHUP: config reloaded" in worker.output.decode(errors="replace")

        @defer.inlineCallbacks
        def reload():
            yield waitFor(lambda: len(bodies) >= 20, timeout=20)
            self.writeWorker("two")
            worker.transport.signalProcess(signal.SIGHUP)
            yield waitFor(reloaded, timeout=90)
            counted = len(bodies)
            yield waitFor(lambda: len(bodies) >= counted + 20, timeout=20)  # serving after it too

        yield load.during(reload)

        log = worker.output.decode(errors="replace")
        print(f"\nrequests through the front-end during the reload: {len(bodies)} answered, "
              f"{len(failures)} failed")
        self.assertEqual(failures, [], worker.tail())
        self.assertIn("'rolled': ['worker']", log)
        self.assertIn("worker: rolling restart with the new declaration", log)
        after = yield self.pids()
        self.assertEqual(set(after), set(before))
        for name, pid in after.items():
            self.assertNotEqual(pid, before[name], name)
            self.assertEqual(_environ(pid)["MODE"], "two", name)
        self.assertEqual({b.split(" on port")[0] for b in bodies},
                         {"hello from worker:0", "hello from worker:1"})
        self.assertNotIn("Traceback", log)

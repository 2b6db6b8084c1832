"""A real Salvus host for integration tests: supervisor, balancer, monitor, alerts, backup and admin,
composed through L{salvusctl.host.Host} exactly as a C{.tac} does, on loopback ephemeral ports.

Nothing here is a fake: the deploy is a real child process (the demo HTTP worker), the balancer
proxies real TCP, the monitor samples with psutil into a real SQLite store, the admin listens on a
real socket.  Tests talk to it the way operators do: XML-RPC, HTTP pages, C{salvusctl} and
C{supervisorctl} as child processes.
"""

from __future__ import annotations

import os
import sys
import xmlrpc.client
from typing import Any

import treq
from twisted.internet import defer, reactor, utils
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from salvusctl.admin import Admin
from salvusctl.admin.users import UsersFile
from salvusctl.alerts.build import AlertRule
from salvusctl.backup.declare import Backup
from salvusctl.balancer.declare import Group, Server
from salvusctl.host import Host
from salvusctl.monitor.build import Monitor
from salvusctl.monitor.loadsource import MonitorLoadSource
from salvusctl.supervisor import Deploy
from tests.helpers import REPO, childEnv, waitFor

__all__ = ["RealHost", "OPERATOR", "VIEWER"]

OPERATOR = ("op", "operator-password-1")
VIEWER = ("view", "viewer-password-1")
SUPERVISORCTL = os.path.join(os.path.dirname(sys.executable), "supervisorctl")


def rpcCall(port: int, method: str, *args: Any, user=OPERATOR) -> defer.Deferred:
    """One XML-RPC call to a loopback admin with the stdlib client, as a real client would, in a
    thread so that the reactor serving the admin keeps running."""
    from twisted.internet import threads

    url = f"http://{user[0]}:{user[1]}@127.0.0.1:{port}/RPC2"

    def call():
        with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
            target = proxy
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args)

    return threads.deferToThread(call)


class _Hello(Resource):
    isLeaf = True

    def __init__(self, body: bytes):
        super().__init__()
        self.body = body

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return self.body


def _backendSite(body: bytes) -> Site:
    site = Site(_Hello(body))
    site.timeOut = None  # no idle timer left behind by a connection the balancer closes
    return site


class RealHost:
    """Builds, starts and stops one real host under C{base} (a fresh temporary directory).

    @ivar top: the L{salvusctl.host.HostService}.
    @ivar services: component name -> service (C{HostContext.services}).
    @ivar admin_url: C{http://127.0.0.1:PORT} of the admin's loopback listener.
    @ivar balancer_address: C{(host, port)} where the balanced service C{www} listens.
    @ivar backend_port: the in-test Twisted backend the C{www/main} group starts with.
    """

    def __init__(self, base: str, refresh: int = 0, store: str | None = None):
        self.base = base
        self.refresh = refresh
        self.var = os.path.join(base, "var")
        self.store_url = store or "sqlite:" + os.path.join(self.var, "salvus.db")
        self.data = os.path.join(base, "data")
        os.makedirs(self.data)
        with open(os.path.join(self.data, "file.txt"), "w") as f:
            f.write("precious\n")
        self.users = os.path.join(base, "admin-users")
        users = UsersFile(self.users)
        users.add(*OPERATOR, role="operator")
        users.add(*VIEWER, role="viewer")
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self.backend: Any = None
        self.top: Any = None
        self.stopped = False

    @defer.inlineCallbacks
    def start(self):
        """Start the backend and the host; fires when everything listens and the deploy runs."""
        from twisted.internet.endpoints import TCP4ServerEndpoint

        self.backend = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            _backendSite(b"hello from the twisted backend\n")
        )
        self.backend_port = self.backend.getHost().port
        host = Host(name="integ", store=self.store_url, var=self.var)
        host.add(
            Deploy(
                "web",
                command=[sys.executable, "-m", "salvusctl.demo.worker", "{port}", "{name}"],
                port="auto",
                cwd=REPO,
                env={"PYTHONPATH": REPO},
                startsecs=0.2,
                stopwaitsecs=5,
            )
        )
        host.balance(
            "www",
            listen=["tcp:0:interface=127.0.0.1"],
            groups=[Group("main", [Server(f"127.0.0.1:{self.backend_port}", name="twisted")])],
        )
        # least-load, fed by the monitor: the source is bound by the monitor's builder
        host.balance(
            "least",
            listen=["tcp:0:interface=127.0.0.1"],
            groups=[Group("main", [Server(f"127.0.0.1:{self.backend_port}", name="twisted")],
                          scheduler="leastload", scheduler_options={"source": MonitorLoadSource()})],
        )
        host.add(Monitor(interval=0.2, disk_interval=3600))
        host.add(AlertRule("rss", 1, deploy="web", name="rss-over-1mb"))
        host.add(Backup("files", destination=os.path.join(self.base, "backups"), paths={"data": self.data}))
        self.socket = os.path.join(self.var, "admin.sock")
        host.add(Admin("tcp:0:interface=127.0.0.1", f"unix:{self.socket}", users=self.users,
                       refresh=self.refresh))
        self.top = host.build(reactor)
        self.services = host.context.services
        self.store = host.context.store
        self.top.startService()
        yield self.services["store"].ready
        yield self.services["supervisor"].ready
        yield self.services["admin"].ready
        self.admin_port = next(
            p.getHost().port for p in self.services["admin"].ports if hasattr(p.getHost(), "port")
        )
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.addresses = {}
        for name, balanced in self.services["balancer"].balanced.items():
            yield balanced.listening
            address = balanced.ports[0].getHost()
            self.addresses[name] = (address.host, address.port)
        self.balancer_address = self.addresses["www"]
        yield waitFor(lambda: self.balancerHost("main", "twisted")["state"] == "up")

    @defer.inlineCallbacks
    def stop(self):
        """Stop the host, then the in-test backend, and close the test's HTTP connections."""
        if self.top is not None and not self.stopped:
            self.stopped = True
            yield self.top.stopService()
            # The supervisor made this process the reaper of orphaned descendants, which is
            # right for twistd (it exits with the host) but outlives the host in a test run:
            # orphans of later tests would become zombies here.  Give the role back.
            from salvusctl.supervisor import oscalls

            oscalls._prctl(oscalls.PR_SET_CHILD_SUBREAPER, 0)
        if self.backend is not None:
            yield self.backend.stopListening()
            self.backend = None
        yield self.pool.closeCachedConnections()

    # -- reading the real services ---------------------------------------------------------------

    def balancerHost(self, group: str, name: str, service: str = "www") -> dict[str, Any]:
        """One backend host as the real balancer reports it."""
        for host in self.services["balancer"].snapshot()["services"][service]["groups"][group]["hosts"]:
            if host["name"] == name:
                return host
        raise KeyError(name)

    def instance(self, name: str = "web:0") -> dict[str, Any]:
        return self.services["supervisor"].instanceInfo(name)

    # -- talking to it as operators do -----------------------------------------------------------

    def rpc(self, method: str, *args: Any, user=OPERATOR) -> defer.Deferred:
        """One XML-RPC call with the stdlib client, in a thread (the reactor keeps serving)."""
        return rpcCall(self.admin_port, method, *args, user=user)

    @defer.inlineCallbacks
    def get(self, path: str, user=OPERATOR):
        """GET a page of the admin; fires with (status code, body text)."""
        response = yield self.http.get(self.admin_url + path, auth=user)
        body = yield response.text()
        return response.code, body

    @defer.inlineCallbacks
    def throughBalancer(self, count: int, service: str = "www") -> defer.Deferred:
        """C{count} HTTP requests through a balanced service; fires with the bodies."""
        host, port = self.addresses[service]
        bodies = []
        for _ in range(count):
            response = yield self.http.get(f"http://{host}:{port}/")
            bodies.append((yield response.text()))
        return bodies

    def salvusctl(self, *argv: str, user=OPERATOR) -> defer.Deferred:
        """Run the C{salvusctl} console script against the host; fires with (out, err, code)."""
        env = childEnv(SALVUS_URL=self.admin_url, SALVUS_USER=user[0], SALVUS_PASSWORD=user[1],
                       HOME=self.base)
        d = utils.getProcessOutputAndValue(sys.executable, ["-m", "salvusctl.cli", *argv], env=env, path=REPO)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

    def supervisorctl(self, *argv: str, user=OPERATOR, unix: bool = False) -> defer.Deferred:
        """Run the real C{supervisorctl} against the admin's loopback HTTP listener (or its
        C{unix:} socket)."""
        url = f"unix://{self.socket}" if unix else self.admin_url
        args = ["-s", url, "-u", user[0], "-p", user[1], *argv]
        d = utils.getProcessOutputAndValue(SUPERVISORCTL, args, env=childEnv(HOME=self.base), path=self.base)
        return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))

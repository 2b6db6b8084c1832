"""What a host's C{.tac} declares: balanced services, their groups of backend servers.

Example::

    from salvusctl.balancer.declare import Balanced, Group, Server

    host.add(Balanced("web", listen=["tcp:8080"], groups=[
        Group("blue", [Server("10.0.0.1:8000"), Server("10.0.0.2:8000", weight=2)],
              scheduler="leastconns"),
        Group("green", [Server("10.0.0.3:8000")]),
    ], active="blue"))

Everything is checked by C{validate} before anything binds, so a bad config stops the host at
start with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from salvusctl.balancer.health import AgentCheck, HealthCheck
from salvusctl.errors import ConfigError

__all__ = ["Balanced", "Group", "Server", "HealthCheck", "AgentCheck", "ALL_DOWN_POLICIES",
           "parseAddress", "checkAdded"]

ALL_DOWN_POLICIES = ("refuse", "aggressive")


def parseAddress(text: str) -> tuple[str, int]:
    """C{host:port} or C{[v6]:port} → (host, port); raises L{ConfigError}."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"backend address must be 'host:port', not {text!r}")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":")
    if not host:
        raise ConfigError(f"backend address {text!r} has no host")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"backend address {text!r}: port must be a number")
    if not 0 < number < 65536:
        raise ConfigError(f"backend address {text!r}: port must be 1..65535")
    return host, number


@dataclass
class Server:
    """One backend host of a group.

    @ivar address: C{"host:port"}; the host may be a DNS name (resolved and cached with a TTL).
    @ivar tls: connect to this backend over TLS (verified against C{tls_ca}, or the system's roots).
    @ivar proxy_protocol: 0 (off), 1 or 2: send a PROXY header so the backend sees the client.
    """

    address: str
    weight: int = 1
    name: str | None = None
    maxconn: int = 0
    tls: bool = False
    tls_hostname: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = True
    proxy_protocol: int = 0
    check_port: int | None = None
    agent_port: int | None = None

    def hostPort(self) -> tuple[str, int]:
        return parseAddress(self.address)

    def key(self) -> str:
        host, port = self.hostPort()
        return self.name or f"{host}:{port}"

    def validate(self) -> None:
        self.hostPort()
        if not isinstance(self.weight, int) or isinstance(self.weight, bool) or self.weight <= 0:
            raise ConfigError(f"server {self.address}: weight must be an integer > 0, not {self.weight!r}")
        if self.maxconn < 0:
            raise ConfigError(f"server {self.address}: maxconn must be >= 0")
        if self.proxy_protocol not in (0, 1, 2):
            raise ConfigError(f"server {self.address}: proxy_protocol must be 0, 1 or 2")

    def asData(self) -> dict:
        host, port = self.hostPort()
        return {"name": self.key(), "address": host, "port": port, "weight": self.weight,
                "maxconn": self.maxconn, "tls": self.tls, "proxy_protocol": self.proxy_protocol}


@dataclass
class Group:
    """Servers that take a service's traffic together, and how they are chosen and checked."""

    name: str
    servers: list[Server] = field(default_factory=list)
    scheduler: str = "roundrobin"
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    health: HealthCheck = field(default_factory=HealthCheck)
    agent: AgentCheck | None = None
    slowstart: float = 0.0
    deploy: str | None = None
    deploy_address: str = "127.0.0.1"
    drain_timeout: float = 30.0
    cluster_deploy: str | None = None

    def validate(self, service: str, host: Any = None) -> None:
        from twisted.internet.task import Clock

        from salvusctl.balancer.schedulers import makeScheduler

        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"service {service!r}: a group needs a name")
        makeScheduler(self.scheduler, Clock(), **self.scheduler_options)
        problem = self.health.validate() if self.health is not None else None
        if problem is None and self.agent is not None:
            problem = self.agent.validate()
        if problem:
            raise ConfigError(f"service {service!r} group {self.name!r}: {problem}")
        if self.slowstart < 0:
            raise ConfigError(f"service {service!r} group {self.name!r}: slowstart must be >= 0")
        if self.deploy is not None:
            self._validateDeploy(service, host)
        if self.cluster_deploy is not None:
            self._validateClusterDeploy(service, host)
        seen = set()
        for server in self.servers:
            try:
                server.validate()
            except ConfigError as e:
                raise ConfigError(f"service {service!r} group {self.name!r}: {e.message}")
            if server.key() in seen:
                raise ConfigError(
                    f"service {service!r} group {self.name!r}: duplicate server {server.key()!r}"
                )
            seen.add(server.key())

    def _validateDeploy(self, service: str, host: Any) -> None:
        """A deploy-backed group names a deploy of this host that gives its instances ports."""
        where = f"service {service!r} group {self.name!r}"
        if not isinstance(self.deploy, str) or not self.deploy:
            raise ConfigError(f"{where}: deploy must be a deploy name, not {self.deploy!r}")
        if not isinstance(self.deploy_address, str) or not self.deploy_address:
            raise ConfigError(f"{where}: deploy_address must be an address, not {self.deploy_address!r}")
        if self.drain_timeout < 0:
            raise ConfigError(f"{where}: drain_timeout must be >= 0")
        if host is None:
            return
        from salvusctl.supervisor.deploy import Deploy

        deploys = {d.name: d for d in host.declarations("supervisor") if isinstance(d, Deploy)}
        deploy = deploys.get(self.deploy)
        if deploy is None:
            known = ", ".join(sorted(deploys)) or "none"
            raise ConfigError(f"{where}: deploy {self.deploy!r} is not declared on this host "
                              f"(deploys: {known})")
        if deploy.port is None:
            raise ConfigError(f"{where}: deploy {self.deploy!r} has no port to balance "
                              f"(give it port=N or port='auto')")


    def _validateClusterDeploy(self, service: str, host: Any) -> None:
        """A group fed by the cluster names a deploy, and its host is a cluster member."""
        where = f"service {service!r} group {self.name!r}"
        if not isinstance(self.cluster_deploy, str) or not self.cluster_deploy:
            raise ConfigError(f"{where}: cluster_deploy must be a deploy name, not {self.cluster_deploy!r}")
        if self.deploy is not None:
            raise ConfigError(f"{where}: give deploy= (this host's instances) or cluster_deploy= "
                              "(every host's), not both")
        if host is not None and not host.declarations("cluster"):
            raise ConfigError(f"{where}: cluster_deploy={self.cluster_deploy!r} needs this host to "
                              "declare Cluster(...) (see docs/cluster.md)")


@dataclass
class Balanced:
    """A balanced service: listening endpoints in front of groups of backend servers.

    @ivar listen: endpoint strings (C{tcp:8080}, C{ssl:8443:privateKey=…:certKey=…} to terminate TLS).
    @ivar active: the group taking traffic (default: the first).
    @ivar maxconn: connections the service carries at once (0 = no limit); beyond it clients wait
        in a queue of C{queue} places for up to C{queue_timeout} seconds; a full queue refuses.
    @ivar retries: other hosts tried when a connect fails or times out.
    @ivar all_down: C{"refuse"} (default: close new clients, log) or C{"aggressive"} (try the
        down hosts anyway).
    @ivar backends_file: a file of backends watched for changes (see L{salvusctl.balancer.backends}).
    @ivar dns: how backend names are resolved: C{"system"} (the reactor's resolver) or C{"names"}
        (C{twisted.names}); either way cached for C{dns_ttl} seconds.
    @ivar stop_timeout: when the host stops, seconds its open connections may go on before they
        are closed gracefully (the host's balancer stops accepting first); 0 closes them at once.
    @ivar hard_stop: seconds after which what is still open at a stop is aborted (>= stop_timeout).
    """

    name: str
    listen: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    active: str | None = None
    maxconn: int = 0
    queue: int = 0
    queue_timeout: float = 5.0
    connect_timeout: float = 5.0
    client_timeout: float = 300.0
    server_timeout: float = 300.0
    retries: int = 3
    all_down: str = "refuse"
    backends_file: str | None = None
    backends_poll: float = 2.0
    dns_ttl: float = 60.0
    dns: str = "system"
    stop_timeout: float = 30.0
    hard_stop: float = 60.0

    component = "balancer"

    def endpoints(self) -> list[str]:
        return list(self.listen)

    def validate(self, host: Any = None) -> None:
        from salvusctl.host.listenkeys import iterEndpoints

        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a balanced service needs a name")
        where = f"service {self.name!r}"
        if isinstance(self.listen, str):
            raise ConfigError(f"{where}: listen must be a list of endpoint strings")
        iterEndpoints(self.listen)
        if len(set(self.listen)) != len(self.listen):
            raise ConfigError(f"{where}: duplicate listen endpoint")
        if not self.groups and not self.backends_file:
            raise ConfigError(f"{where}: needs at least one group (or a backends_file)")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: duplicate group name")
        for group in self.groups:
            group.validate(self.name, host)
        if self.active is not None and self.active not in names:
            raise ConfigError(f"{where}: active group {self.active!r} is not declared")
        if self.dns not in ("system", "names"):
            raise ConfigError(f"{where}: dns must be 'system' (the reactor's resolver) or 'names'")
        if self.all_down not in ALL_DOWN_POLICIES:
            raise ConfigError(f"{where}: all_down must be one of {ALL_DOWN_POLICIES}, not {self.all_down!r}")
        for attr in ("maxconn", "queue", "retries"):
            if getattr(self, attr) < 0:
                raise ConfigError(f"{where}: {attr} must be >= 0")
        for attr in ("queue_timeout", "connect_timeout", "client_timeout", "server_timeout", "dns_ttl"):
            if getattr(self, attr) < 0:
                raise ConfigError(f"{where}: {attr} must be >= 0 (0 disables)")
        if not 0 <= self.stop_timeout <= self.hard_stop:
            raise ConfigError(f"{where}: need 0 <= stop_timeout <= hard_stop, not {self.stop_timeout!r} "
                              f"and {self.hard_stop!r}")
        if host is not None:
            others = [d for d in host.declarations("balancer") if d is not self and d.name == self.name]
            if others:
                raise ConfigError(f"two balanced services are named {self.name!r}")

    def activeGroup(self) -> str | None:
        return self.active or (self.groups[0].name if self.groups else None)

    def asData(self) -> dict:
        """The declared config as data, in the shape L{snapshot} uses (for diffs)."""
        return {
            "name": self.name,
            "listen": list(self.listen),
            "active": self.activeGroup(),
            "groups": {
                g.name: {"scheduler": g.scheduler, "deploy": g.deploy,
                         "cluster_deploy": g.cluster_deploy,
                         "hosts": {s.key(): s.asData() for s in g.servers}}
                for g in self.groups
            },
        }


def checkAdded(decl: Balanced, names: Any) -> None:
    """A balanced service added live: its declaration valid and its name not among C{names};
    ValueError with the one line an operator reads.  The balancer and its fake both ask here, so
    they refuse the same declarations."""
    try:
        decl.validate(None)
    except ConfigError as e:
        raise ValueError(e.message)
    if decl.name in names:
        raise ValueError(f"balanced service {decl.name!r} already exists")

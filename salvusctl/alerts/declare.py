"""The alerts' declarations (rules, e-mail and webhook notices, restarts, settings): no service
code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from salvusctl.alerts.actions import EmailAction, WebhookAction
from salvusctl.alerts.rules import Rule
from salvusctl.errors import ConfigError

__all__ = ["AlertRule", "EmailAlerts", "WebhookAlerts", "RestartAlerts", "AlertSettings", "NOTIFIERS"]


@dataclass
class AlertRule:
    """One rule: C{AlertRule("cpu", 90, seconds=60, deploy="web")}.

    Kinds: stale (s), down, fatal, flapping (starts within seconds), cpu (%), host_cpu (%),
    host_free_ram (MB), rss (MB), disk (%), threads, fds.
    """

    component: ClassVar[str] = "alerts"
    kind: str
    threshold: float | None = None
    seconds: float = 0.0
    deploy: str | None = None
    name: str | None = None
    severity: str = "warning"

    def rule(self) -> Rule:
        return Rule(self.kind, self.threshold, self.seconds, self.deploy, self.name, self.severity)

    def validate(self, host) -> None:
        self.rule()
        if self.deploy is not None and hasattr(host, "declarations"):
            deploys = [d for d in host.declarations("supervisor") if getattr(d, "name", None)]
            if deploys and self.deploy not in {d.name for d in deploys}:
                raise ConfigError(f"AlertRule({self.kind!r}, deploy={self.deploy!r}): no such deploy")


class Notifier:
    """What the notice declarations share: each makes one action (C{action(reactor)}), and is
    valid when that action can be made (its own checks raise ValueError, said here as one
    L{ConfigError} line naming the declaration)."""

    component: ClassVar[str] = "alerts"

    def validate(self, host) -> None:
        try:
            self.action(None)
        except ValueError as e:
            raise ConfigError(f"{type(self).__name__}: {e}")

    def label(self) -> str:
        """How a reload diff names it (never a secret)."""
        raise NotImplementedError

    def action(self, reactor) -> Any:
        raise NotImplementedError


@dataclass
class EmailAlerts(Notifier):
    """Mail notifications: server, sender, recipients; optional STARTTLS and login."""

    server: str
    sender: str
    recipients: list[str]
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    def validate(self, host) -> None:
        if not isinstance(self.server, str) or not self.server:
            raise ConfigError("EmailAlerts(server=…) needs the SMTP server's host name")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"EmailAlerts(port=…) must be a TCP port, not {self.port!r}")
        super().validate(host)

    def label(self) -> str:
        """How a reload diff names it (no password)."""
        return f"email:{self.server}"

    def action(self, reactor) -> EmailAction:
        return EmailAction(reactor, self.server, self.sender, self.recipients, port=self.port,
                           starttls=self.starttls, username=self.username, password=self.password)


@dataclass
class WebhookAlerts(Notifier):
    """JSON POST notifications to C{url} (with optional extra headers, e.g. a token)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        """How a reload diff names it: the URL's host only (its path or query may hold a token)."""
        return f"webhook:{urlsplit(self.url).hostname or '?'}"

    def action(self, reactor) -> WebhookAction:
        agent = None
        if reactor is not None:
            from twisted.web.client import Agent

            agent = Agent(reactor)
        return WebhookAction(agent, self.url, self.headers)


@dataclass
class RestartAlerts:
    """Restart the instance an alert of one of C{rules} names (monit's C{then restart}):
    C{RestartAlerts(["rss:web"])} with C{AlertRule("rss", 500, seconds=60, deploy="web")}.

    Once per firing: while the alert stays firing its instance is not restarted again.  Only
    rules about instances (not C{host_cpu}, C{host_free_ram}, C{disk}); the host needs a
    supervisor.
    """

    component: ClassVar[str] = "alerts"
    rules: list[str]

    def __post_init__(self) -> None:
        if isinstance(self.rules, str):
            self.rules = [self.rules]

    def validate(self, host) -> None:
        from salvusctl.alerts.rules import RULE_KINDS

        rules = self.rules
        if not isinstance(rules, list | tuple) or not rules or not all(
            isinstance(r, str) and r for r in rules
        ):
            raise ConfigError(f"RestartAlerts(rules=…) needs a list of alert rule names, not {rules!r}")
        if not hasattr(host, "declarations"):
            return
        declared = {d.rule().label: d for d in host.declarations("alerts") if isinstance(d, AlertRule)}
        for name in rules:
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none declared"
                raise ConfigError(f"RestartAlerts: no alert rule named {name!r} (rules: {known})")
            if not RULE_KINDS[declared[name].kind][2]:
                raise ConfigError(f"RestartAlerts: rule {name!r} is about the host, not an instance:"
                                  " there is nothing to restart")
        if not host.declarations("supervisor"):
            raise ConfigError("RestartAlerts restarts deploys: the host declares none")


@dataclass
class AlertSettings:
    """C{repeat_interval}: seconds within which one alert of one subject is not notified again.

    A notice that fails is retried C{retry_initial} seconds later, then at doubling intervals up
    to C{retry_max}, until it is delivered or C{expire_after} seconds have passed since it was
    queued.
    """

    component: ClassVar[str] = "alerts"
    repeat_interval: float = 3600.0
    retry_initial: float = 5.0
    retry_max: float = 300.0
    expire_after: float = 86400.0

    def validate(self, host) -> None:
        if not isinstance(self.repeat_interval, int | float) or self.repeat_interval < 0:
            raise ConfigError(
                f"AlertSettings(repeat_interval=…) must be >= 0 s, not {self.repeat_interval!r}"
            )
        for name in ("retry_initial", "retry_max", "expire_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"AlertSettings({name}=…) must be > 0 s, not {value!r}")
        if self.retry_initial > self.retry_max:
            raise ConfigError("AlertSettings(retry_initial=…) must not exceed retry_max")


#: The notification declarations: each has C{label()} and C{action(reactor)}, and the builder and
#: the reloader take every declaration of these types as one notifier.  A new kind of notice is an
#: action in L{salvusctl.alerts.actions} and a declaration added here.
NOTIFIERS = (EmailAlerts, WebhookAlerts)

"""The C{Deploy} declaration a host's C{.tac} file adds, and its validation.

Plain data: nothing here forks, binds or signals.  A deploy is I{what} to run; the instances it
expands to (C{name:0}, C{name:1} …) are run by L{salvusctl.supervisor.process}.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import shutil
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.supervisor.names import ProcessNameError, processNames

__all__ = [
    "Deploy",
    "Probe",
    "Ready",
    "READY_KINDS",
    "Backoff",
    "Flapping",
    "AUTORESTART",
    "RLIMITS",
    "LEVELS",
    "substitute",
    "signalNumber",
    "startOrder",
]

AUTORESTART = ("always", "unexpected", "never")

# rlimit names a declaration may use -> resource constant.
RLIMITS: dict[str, int] = {
    "as": resource.RLIMIT_AS,
    "nofile": resource.RLIMIT_NOFILE,
    "cpu": resource.RLIMIT_CPU,
    "nproc": resource.RLIMIT_NPROC,
    "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE,
    "data": resource.RLIMIT_DATA,
    "stack": resource.RLIMIT_STACK,
    "memlock": resource.RLIMIT_MEMLOCK,
}

LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

_TEMPLATE_KEYS = ("port", "name", "index", "deploy", "run_dir", "host", "group", "numprocs")
_TEMPLATE_RE = re.compile(r"\{(" + "|".join(_TEMPLATE_KEYS) + r")\}")


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace C{{port}}, C{{name}} … in C{text}; every other brace is left alone.

    Deliberately not C{str.format}: nginx and haproxy configs are full of braces.
    """
    return _TEMPLATE_RE.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


def signalNumber(sig: int | str) -> int:
    """C{'TERM'}, C{'SIGTERM'}, C{15} -> 15; raise ValueError for anything else."""
    if isinstance(sig, int) and not isinstance(sig, bool):
        signal.Signals(sig)
        return int(sig)
    if isinstance(sig, str):
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise ValueError(f"unknown signal {sig!r}")


@dataclass(frozen=True)
class Backoff:
    """Delay before retry N after a start that failed: C{initial * factor**(N-1)}, at most C{cap}.

    @ivar retries: how many failed starts in a row before FATAL; C{None} retries forever.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    retries: int | None = 3

    def delay(self, attempt: int) -> float:
        """The wait before retry C{attempt} (1-based)."""
        return min(self.cap, self.initial * self.factor ** max(0, attempt - 1))


@dataclass(frozen=True)
class Flapping:
    """C{restarts} restarts within C{window} seconds make the instance FATAL (reason kept)."""

    restarts: int = 10
    window: float = 60.0


@dataclass(frozen=True)
class Probe:
    """A liveness probe: C{'tcp'} connects to the instance's port, C{'command'} runs argv (exit 0 ok),
    C{'watchdog'} expects the instance to send C{WATCHDOG=1} (systemd's watchdog protocol) at least
    every C{timeout} seconds.

    Checked every C{interval} seconds once RUNNING; C{failures} consecutive failures restart the
    instance.  Until the first success the instance is RUNNING but not I{ready}: dependents and the
    balancer wait for ready.  For C{'watchdog'}, the instance finds C{NOTIFY_SOCKET} and
    C{WATCHDOG_USEC} in its environment (C{sd_watchdog_enabled(3)}); C{WATCHDOG=trigger} asks for an
    immediate restart.
    """

    kind: str = "tcp"
    command: tuple[str, ...] = ()
    interval: float = 2.0
    timeout: float = 1.0
    failures: int = 3
    host: str = "127.0.0.1"

    def validate(self) -> None:
        if self.kind not in ("tcp", "command", "watchdog"):
            raise ConfigError(f"probe kind must be 'tcp', 'command' or 'watchdog', not {self.kind!r}")
        if self.kind == "command" and not self.command:
            raise ConfigError("a command probe needs a command")
        if self.interval <= 0 or self.timeout <= 0 or self.failures < 1:
            raise ConfigError("probe interval and timeout must be > 0 and failures >= 1")


READY_KINDS = ("notify", "probe", "log")


@dataclass(frozen=True)
class Ready:
    """How an instance tells Salvus it has started, so STARTING ends on evidence, not on a timer.

    supervisord can only guess: an instance alive C{startsecs} after the spawn counts as started,
    however long it really takes to listen.  With C{Deploy(ready=...)} an instance becomes RUNNING
    the moment it says so, and a start that never says so fails after C{timeout}:

      - C{'notify'}: the systemd notification protocol.  C{NOTIFY_SOCKET} is set in the instance's
        environment and C{READY=1} from the instance (its leader or any process it started) ends
        STARTING; C{STATUS=...} is kept as the instance's status.  PostgreSQL, Redis
        (C{supervised systemd}), HAProxy (C{-Ws}) and anything that calls C{sd_notify} speak it.
      - C{'probe'}: the deploy's liveness probe answers for the first time (tried every
        C{interval} seconds while STARTING).
      - C{'log'}: a line of stdout or stderr matches the regular expression C{pattern}
        (C{"ready to accept connections"}).

    @ivar timeout: not ready this long after the spawn: the start has failed.  The instance's
        processes are stopped (stopsignal, SIGKILL after C{stopwaitsecs}) and it goes to BACKOFF
        as after an early exit, then retries or goes FATAL with the reason kept.
    """

    kind: str = "notify"
    pattern: str = ""
    timeout: float = 60.0
    interval: float = 0.1

    def validate(self, deploy: Deploy) -> None:
        if self.kind not in READY_KINDS:
            raise ConfigError(f"ready kind must be one of {', '.join(READY_KINDS)}, not {self.kind!r}")
        if self.timeout <= 0 or self.interval <= 0:
            raise ConfigError("ready timeout and interval must be > 0")
        if self.kind == "probe" and deploy.probe is None:
            raise ConfigError("ready='probe' needs a probe")
        if self.kind == "log":
            if not self.pattern:
                raise ConfigError("ready='log' needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ConfigError(f"ready pattern {self.pattern!r} is not a regular expression: {e}")


@dataclass(eq=True)
class Deploy:
    """One deploy: a command run as C{numprocs} instances, named as supervisord names processes.

    @ivar process_name: supervisord's C{process_name} template (C{%(program_name)s},
        C{%(process_num)d}, C{%(group_name)s}, C{%(numprocs)d}), or C{"supervisord"}
        (L{names.SUPERVISORD_NAMES}): the deploy's own name for one instance (C{ticker}),
        C{ticker_00} … for more, so supervisorctl, superlance and the tools written for
        supervisord find it by the name they type. None: Salvus's C{name:0} … C{name:N-1}.

    @ivar command: argv list; C{{port}}, C{{name}}, C{{index}}, C{{run_dir}} … are substituted.
    @ivar port: C{None}; an int base (instance I{i} gets C{port + i}); or C{'auto'} (a free port
        chosen once per instance and kept across restarts).
    @ivar templates: {file name in the run dir: template path or inline text}, rendered with the same
        substitutions before every start.
    @ivar depends_on: deploy names that must be RUNNING and ready before this one starts.
    @ivar ready: C{None} (RUNNING after C{startsecs}, as supervisord), a L{Ready}, or its kind
        (C{'notify'}, C{'probe'}): RUNNING when the instance says it is ready; C{startsecs} is not
        used then.
    @ivar startretries: kept for supervisord familiarity; when given it overrides C{backoff.retries}.
    @ivar max_processes: at most this many instances of the deploy alive at once (None: no limit).
    @ivar log_level / store_level: line level thresholds for the log file and for the store hook.
    @ivar store_repeat_window: a line repeated within this many seconds reaches the store once, then
        as one "repeated N more times" record (0: every line).
    @ivar log_tail_bytes: the in-memory tail of each stream holds at most this much text; older
        lines are read back from the log file.
    @ivar umask: the instance's file-creation mask (C{0o027}); None inherits Salvus's, as
        supervisord's C{umask} does.
    @ivar redirect_stderr: the instance's stderr is its stdout (one pipe, so the order of the
        lines is kept), as supervisord's C{redirect_stderr=true}.
    @ivar stdin: the instance's stdin is a pipe that C{supervisor.sendProcessStdin} writes to
        (supervisord gives every process one); False gives it C{/dev/null}, so a program that
        reads stdin sees end-of-file instead of waiting forever.
    @ivar stdout_events_enabled / stderr_events_enabled: each chunk the instance writes is also
        a C{PROCESS_LOG_STDOUT} / C{_STDERR} event for event listeners, as in supervisord.
    @ivar stdout_capture_maxbytes / stderr_capture_maxbytes: above 0, a block written between
        C{<!--XSUPERVISOR:BEGIN-->} and C{<!--XSUPERVISOR:END-->} (at most this long) is taken out
        of the log and sent as a C{PROCESS_COMMUNICATION_*} event (supervisord's capture mode).
    """

    name: str
    command: Sequence[str] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    group_id: str | None = None
    numprocs: int = 1
    port: int | str | None = None
    templates: Mapping[str, str] = field(default_factory=dict)
    priority: int = 999
    depends_on: Sequence[str] = ()
    autostart: bool = True
    autorestart: str = "unexpected"
    startsecs: float = 1.0
    startretries: int | None = -1
    exitcodes: Sequence[int] = (0,)
    backoff: Backoff = field(default_factory=Backoff)
    flapping: Flapping | None = field(default_factory=Flapping)
    stopsignal: int | str = "TERM"
    stopwaitsecs: float = 10.0
    deathsig: int | str | None = None
    probe: Probe | None = None
    ready: Ready | str | None = None
    rlimits: Mapping[str, int | tuple[int, int]] = field(default_factory=dict)
    group: str | None = None
    max_processes: int | None = None
    log_level: str = "debug"
    store_level: str = "info"
    store_repeat_window: float = 60.0
    log_tail_bytes: int = 1024 * 1024
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 10
    log_rotate_seconds: float | None = None
    umask: int | None = None
    redirect_stderr: bool = False
    stdin: bool = False
    stdout_events_enabled: bool = False
    stderr_events_enabled: bool = False
    stdout_capture_maxbytes: int = 0
    stderr_capture_maxbytes: int = 0
    process_name: str | None = None

    component = "supervisor"

    def __post_init__(self) -> None:
        self.command = tuple(self.command)
        self.depends_on = tuple(self.depends_on)
        self.exitcodes = tuple(self.exitcodes)
        self.env = dict(self.env)
        self.templates = dict(self.templates)
        self.rlimits = dict(self.rlimits)
        if isinstance(self.ready, str) and self.ready in READY_KINDS:
            self.ready = Ready(kind=self.ready)

    # -- derived values --------------------------------------------------------------------------

    @property
    def groupName(self) -> str:
        """The group this deploy belongs to (its own name when none is given)."""
        return self.group or self.name

    @property
    def retries(self) -> int | None:
        """Failed starts in a row allowed before FATAL; None for unlimited."""
        if self.startretries is None:
            return None
        if self.startretries >= 0:
            return self.startretries
        return self.backoff.retries

    @property
    def stopSignalNumber(self) -> int:
        return signalNumber(self.stopsignal)

    @property
    def deathSignalNumber(self) -> int:
        """The signal the kernel sends an instance when Salvus dies (default: the stop signal)."""
        return signalNumber(self.deathsig) if self.deathsig is not None else self.stopSignalNumber

    def instanceNames(self) -> list[str]:
        """The instances' names, in index order (what supervisorctl prints and types back)."""
        return processNames(self.name, self.numprocs, self.process_name, self.groupName)

    def instanceName(self, index: int) -> str:
        return self.instanceNames()[index]

    def fixedPorts(self) -> list[int]:
        """The TCP ports this deploy's instances are given, when fixed."""
        if isinstance(self.port, int) and not isinstance(self.port, bool):
            return [self.port + i for i in range(self.numprocs)]
        return []

    def endpoints(self) -> list[str]:
        """What the instances listen on, so the host refuses another listener on the same port."""
        return [f"tcp:{p}" for p in self.fixedPorts()]

    def spec(self) -> tuple:
        """Everything that, when changed, requires the deploy's instances to restart."""
        return tuple(
            (f.name, _freeze(getattr(self, f.name))) for f in fields(self) if f.name not in ("priority",)
        )

    # -- validation ------------------------------------------------------------------------------

    def validate(self, host: Any = None) -> None:
        """Refuse a deploy that could never run, with one clear sentence naming the deploy."""
        try:
            self._validateSelf()
            if host is not None:
                others = [d for d in host.declarations("supervisor") if isinstance(d, Deploy)]
                # A name declared twice is the second declaration's error (its line is the one
                # the operator just added); the checks across deploys see the first of each name.
                mine = next((i for i, d in enumerate(others) if d is self), None)
                if mine is not None and any(d.name == self.name for d in others[:mine]):
                    raise ConfigError(f"deploy {self.name!r} declared twice")
                firsts: dict[str, Deploy] = {}
                for d in others:
                    firsts.setdefault(d.name, d)
                validateDeploys(list(firsts.values()))
        except ConfigError as e:
            if e.message.startswith("deploy "):
                raise
            raise ConfigError(f"deploy {self.name!r}: {e.message}")

    def _checkCwd(self, pw: Any, gid: int | None) -> None:
        """The working directory must be enterable by whoever the instance runs as: a spawn
        would otherwise fail (C{chdir}: permission denied) at every start, retried until FATAL."""
        if pw is None:
            if os.geteuid() != 0 and not os.access(self.cwd, os.X_OK):
                raise ConfigError(f"working directory {self.cwd!r} cannot be entered by Salvus's user")
            return
        gids = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
        if gid is not None:
            gids.add(gid)
        blocked = _blockedDir(os.path.abspath(self.cwd), pw.pw_uid, gids)
        if blocked is not None:
            raise ConfigError(f"working directory {self.cwd!r} cannot be entered by user {self.user!r}: "
                              f"{blocked}")

    def _validateSelf(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ConfigError(f"deploy name must be letters, digits, '_', '.', '-', not {self.name!r}")
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ConfigError("missing command (an argv list of strings)")
        executable = self.command[0]
        if "{" not in executable:
            path = self.env.get("PATH", os.environ.get("PATH", os.defpath))
            if os.sep in executable:
                base = self.cwd or os.getcwd()
                full = os.path.join(base, executable)
                if not os.access(full, os.X_OK):
                    raise ConfigError(f"command {executable!r} is not an executable file")
            elif shutil.which(executable, path=path) is None:
                raise ConfigError(f"command {executable!r} not found on PATH")
        if not isinstance(self.numprocs, int) or self.numprocs < 1:
            raise ConfigError(f"numprocs must be an int >= 1, not {self.numprocs!r}")
        if self.process_name is not None and not isinstance(self.process_name, str):
            raise ConfigError(f"process_name must be a string template, not {self.process_name!r}")
        try:
            self.instanceNames()
        except ProcessNameError as e:
            raise ConfigError(str(e)) from None
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise ConfigError(f"working directory {self.cwd!r} does not exist")
        pw = None
        if self.user is not None:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise ConfigError(f"unknown user {self.user!r}")
            if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
                raise ConfigError(f"cannot run as user {self.user!r}: Salvus is not running as root")
        gid = None
        if self.group_id is not None:
            try:
                gid = grp.getgrnam(self.group_id).gr_gid
            except KeyError:
                raise ConfigError(f"unknown group {self.group_id!r}")
        if self.cwd is not None:
            self._checkCwd(pw, gid)
        if self.autorestart not in AUTORESTART:
            choices = ", ".join(AUTORESTART)
            raise ConfigError(f"autorestart must be one of {choices}, not {self.autorestart!r}")
        if self.port is not None and self.port != "auto":
            if not isinstance(self.port, int) or isinstance(self.port, bool):
                raise ConfigError(f"port must be an int, 'auto' or None, not {self.port!r}")
            if self.port < 1 or self.port + self.numprocs - 1 > 65535:
                raise ConfigError(f"ports {self.port}..{self.port + self.numprocs - 1} out of range")
        if self.probe is not None:
            self.probe.validate()
            if self.probe.kind == "tcp" and self.port is None:
                raise ConfigError("a tcp probe needs a port")
        if self.ready is not None:
            if not isinstance(self.ready, Ready):
                raise ConfigError(f"ready must be None, a Ready(...) or one of "
                                  f"{', '.join(READY_KINDS)}, not {self.ready!r}")
            self.ready.validate(self)
        for sig in (self.stopsignal, self.deathsig):
            if sig is None:
                continue
            try:
                signalNumber(sig)
            except ValueError as e:
                raise ConfigError(str(e))
        if self.startsecs < 0 or self.stopwaitsecs < 0:
            raise ConfigError("startsecs and stopwaitsecs must be >= 0")
        if self.backoff.initial < 0 or self.backoff.cap < self.backoff.initial or self.backoff.factor < 1:
            raise ConfigError("backoff needs 0 <= initial <= cap and factor >= 1")
        if self.flapping is not None and (self.flapping.restarts < 1 or self.flapping.window <= 0):
            raise ConfigError("flapping needs restarts >= 1 and window > 0")
        for key, value in self.rlimits.items():
            if key not in RLIMITS:
                raise ConfigError(f"unknown rlimit {key!r} (known: {', '.join(sorted(RLIMITS))})")
            pair = value if isinstance(value, tuple) else (value, value)
            if (len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                raise ConfigError(f"rlimit {key!r} must be an int or a (soft, hard) pair")
            _checkRlimit(key, *pair)
        for level in (self.log_level, self.store_level):
            if level not in LEVELS:
                raise ConfigError(f"unknown log level {level!r} (known: {', '.join(LEVELS)})")
        if self.store_repeat_window < 0 or self.log_tail_bytes < 0:
            raise ConfigError("store_repeat_window and log_tail_bytes must be >= 0")
        if self.umask is not None and (not isinstance(self.umask, int) or isinstance(self.umask, bool)
                                       or not 0 <= self.umask <= 0o777):
            raise ConfigError(f"umask must be an int from 0 to 0o777 (0o022), not {self.umask!r}")
        for size in ("stdout_capture_maxbytes", "stderr_capture_maxbytes"):
            value = getattr(self, size)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{size} must be an int >= 0, not {value!r}")
        for flag in ("redirect_stderr", "stdin", "stdout_events_enabled", "stderr_events_enabled"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, not {getattr(self, flag)!r}")
        if self.max_processes is not None and self.max_processes < 1:
            raise ConfigError("max_processes must be >= 1")
        for dest, source in self.templates.items():
            if os.sep in dest or dest in ("", ".", ".."):
                raise ConfigError(f"template name {dest!r} must be a plain file name")
            if "\n" not in source and source.startswith(os.sep) and not os.path.isfile(source):
                raise ConfigError(f"template file {source!r} does not exist")
        if self.name in self.depends_on:
            raise ConfigError("depends on itself")


def _blockedDir(path: str, uid: int, gids: set[int]) -> str | None:
    """Why C{uid} (in groups C{gids}) cannot enter C{path}, or None when it can.

    The owner, group and other search bits of the directory and each of its parents, as the
    kernel checks them for a C{chdir} (ACLs aside).
    """
    if uid == 0:
        return None
    parts = path.split(os.sep)
    for i in range(1, len(parts) + 1):
        current = os.sep + os.path.join(*parts[1:i]) if i > 1 else os.sep
        try:
            st = os.stat(current)
        except OSError as e:
            return f"{current}: {e.strerror}"
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            owner = _name(pwd.getpwuid, st.st_uid)
            group = _name(grp.getgrgid, st.st_gid)
            return f"{current} is {stat.filemode(st.st_mode)} {owner}:{group}"
    return None


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _nrOpen() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _checkRlimit(key: str, soft: int, hard: int) -> None:
    """Refuse what C{setrlimit} would refuse at every spawn: negative values (other than
    C{resource.RLIM_INFINITY}), a soft limit above the hard one, a hard limit above the current
    one when Salvus is not root, and open files above the kernel's C{fs.nr_open}."""
    infinity = resource.RLIM_INFINITY

    def value(v: int) -> float:
        return float("inf") if v == infinity else v

    for v in (soft, hard):
        if v < 0 and v != infinity:
            raise ConfigError(f"rlimit {key!r}: {v} is negative (resource.RLIM_INFINITY for no limit)")
    if value(soft) > value(hard):
        raise ConfigError(f"rlimit {key!r}: soft limit {soft} is above the hard limit {hard}")
    if os.geteuid() != 0:
        _, current = resource.getrlimit(RLIMITS[key])
        if value(hard) > value(current):
            raise ConfigError(f"rlimit {key!r}: hard limit {hard} is above Salvus's own ({current}); "
                              f"only root may raise it")
    if key == "nofile":
        most = _nrOpen()
        if most is not None and value(hard) > most:
            raise ConfigError(f"rlimit 'nofile': hard limit {hard} is above the kernel's maximum "
                              f"(fs.nr_open = {most})")


def validateDeploys(deploys: Sequence[Deploy]) -> None:
    """Checks across deploys: unique names (of deploys and of instances), known dependencies,
    no cycle, no port clash."""
    byName: dict[str, Deploy] = {}
    for d in deploys:
        if d.name in byName:
            raise ConfigError(f"deploy {d.name!r} declared twice")
        byName[d.name] = d
    for d in deploys:
        for dep in d.depends_on:
            if dep not in byName:
                raise ConfigError(f"deploy {d.name!r} depends on unknown deploy {dep!r}")
    startOrder(deploys)
    owner: dict[int, str] = {}
    for d in deploys:
        for p in d.fixedPorts():
            if p in owner:
                raise ConfigError(f"deploy {d.name!r}: port {p} clashes with deploy {owner[p]!r}")
            owner[p] = d.name
    named: dict[str, str] = {}
    for d in deploys:
        try:
            names = d.instanceNames()
        except ProcessNameError:
            continue  # that deploy's own validate() says why
        for n in names:
            if n in named:
                raise ConfigError(f"deploy {d.name!r}: instance name {n!r} is also deploy {named[n]!r}'s")
            named[n] = d.name


def startOrder(deploys: Sequence[Deploy]) -> list[list[Deploy]]:
    """Deploys in waves: each wave depends only on earlier ones; within a wave, by priority.

    Raise L{ConfigError} naming the cycle when there is one.
    """
    byName = {d.name: d for d in deploys}
    depth: dict[str, int] = {}
    visiting: list[str] = []

    def visit(name: str) -> int:
        if name in depth:
            return depth[name]
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            raise ConfigError("dependency cycle: " + " -> ".join(cycle))
        visiting.append(name)
        deps = [dep for dep in byName[name].depends_on if dep in byName]
        level = 1 + max((visit(dep) for dep in deps), default=-1)
        visiting.pop()
        depth[name] = level
        return level

    for d in deploys:
        visit(d.name)
    waves: dict[int, list[Deploy]] = {}
    for d in deploys:
        waves.setdefault(depth[d.name], []).append(d)
    return [sorted(waves[k], key=lambda d: (d.priority, d.name)) for k in sorted(waves)]


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value

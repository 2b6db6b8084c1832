"""C{salvusctl}: control a Salvus host over its admin's XML-RPC.

Quiet by default (actions print nothing when they succeed), C{-v} for more; one line per error on
stderr; exit codes scripts can rely on (see L{ExitCode}).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import datetime
import enum
import getpass
import http.client
import io
import os
import socket
import ssl
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from salvusctl.admin import shapes
from salvusctl.admin.faults import Faults
from salvusctl.cli.client import ClientError, FingerprintMismatch, connect, resolveURL

__all__ = ["main", "parseArgs", "ExitCode", "CONFIG_FILE"]

CONFIG_FILE = "~/.salvusctl.conf"
DEMO_CONF = os.path.join("var", "salvusctl.conf")  # what the demo host writes (salvusctl.demo.banner)
DEFAULT_TIMEOUT = 30.0
# A rolling restart answers when its last batch is ready: one call for the whole deploy.
RESTART_TIMEOUT = 600.0


class ExitCode(enum.IntEnum):
    """What C{salvusctl} exits with; stable across releases."""

    OK = 0
    FAILED = 1  # the host refused or the action failed
    USAGE = 2  # bad command line
    NOT_RUNNING = 3  # status: something is not RUNNING; diff: config and running differ
    UNREACHABLE = 4  # no connection (refused, no socket, TLS failure, timeout)
    AUTH = 5  # wrong credentials, rate limited, or the role may not do this
    NO_SUCH_NAME = 6  # no such process, group, service or host
    NO_SERVICE = 7  # the host runs no such service (e.g. no balancer)


class CLIError(Exception):
    """One line for stderr and the exit code; C{fault_code} when the host answered a Fault."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED, fault_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.fault_code = fault_code


_FAULT_EXIT = {
    Faults.BAD_NAME: ExitCode.NO_SUCH_NAME,
    Faults.PERMISSION_DENIED: ExitCode.AUTH,
    Faults.NO_SERVICE: ExitCode.NO_SERVICE,
    Faults.INCORRECT_PARAMETERS: ExitCode.USAGE,
    Faults.BAD_ARGUMENTS: ExitCode.USAGE,
}


class Output:
    """Where the CLI writes: results to stdout, one-line errors to stderr, extra with -v."""

    def __init__(self, verbosity: int, out: TextIO, err: TextIO):
        self.verbosity = verbosity
        self.out = out
        self.err = err

    def result(self, text: str) -> None:
        self.out.write(text + "\n")

    def info(self, text: str) -> None:
        if self.verbosity > 0:
            self.out.write(text + "\n")

    def error(self, text: str) -> None:
        self.err.write("salvusctl: " + text.replace("\n", " ") + "\n")


# -- connection settings ---------------------------------------------------------------------------


def _settings(args: argparse.Namespace, env: dict[str, str], stdin: TextIO | None = None) -> dict[str, Any]:
    """URL and credentials: options, then environment, then the config file; a user without a
    password is asked for one on a terminal (as curl -u and supervisorctl do)."""
    path = args.config or env.get("SALVUS_CONFIG") or CONFIG_FILE
    if path.startswith("~/"):
        path = os.path.join(env.get("HOME") or os.path.expanduser("~"), path[2:])
    conf: dict[str, str] = {}
    if os.path.exists(path):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError) as e:
            raise CLIError(f"cannot read {path}: {str(e).splitlines()[0]}", ExitCode.USAGE)
        if parser.has_section("salvusctl"):
            conf = dict(parser.items("salvusctl"))
    elif args.config:
        raise CLIError(f"no such config file {path}", ExitCode.USAGE)

    def pick(option: str, env_name: str, key: str) -> str | None:
        value = getattr(args, option)
        if value is None:
            value = env.get(env_name)
        if value is None:
            value = conf.get(key)
        return value

    url = pick("url", "SALVUS_URL", "url")
    if not url and not args.config:
        demo = _demoConf()
        if demo is not None:
            conf = demo
            url = pick("url", "SALVUS_URL", "url")
    if not url:
        raise CLIError(
            f"no admin URL: use --url, SALVUS_URL or url= in {CONFIG_FILE} "
            f"(or run from the directory whose {DEMO_CONF} the demo host wrote)",
            ExitCode.USAGE,
        )
    url = resolveURL(url)
    user = pick("user", "SALVUS_USER", "user")
    password = pick("password", "SALVUS_PASSWORD", "password")
    if user and password is None:
        password = _askPassword(user, url, stdin)
    return {
        "url": url,
        "user": user,
        "password": password,
        "cacert": pick("cacert", "SALVUS_CACERT", "cacert"),
        "fingerprint": pick("fingerprint", "SALVUS_FINGERPRINT", "fingerprint"),
    }


def _demoConf() -> dict[str, str] | None:
    """The settings the demo host wrote in C{./var/salvusctl.conf}, when no URL is given at all.

    So a bare C{salvusctl status} after C{make run} reaches the demo host over its unix socket as
    the user the host created.  Without that file, a C{./var/admin.sock} alone gives the URL (and
    the host then says a user is needed).
    """
    cwd = os.getcwd()
    path = os.path.join(cwd, DEMO_CONF)
    if not os.path.exists(path):
        sock = os.path.join(cwd, "var", "admin.sock")
        return {"url": "unix://" + sock} if os.path.exists(sock) else None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read {path}: {str(e).splitlines()[0]}", ExitCode.USAGE)
    if not parser.has_section("salvusctl"):
        raise CLIError(f"{path}: no [salvusctl] section", ExitCode.USAGE)
    return dict(parser.items("salvusctl"))


def _askPassword(user: str, url: str, stdin: TextIO | None) -> str:
    """The password for C{user}, typed on the terminal; an error naming the other ways without one."""
    if stdin is None or not _isatty(stdin):
        raise CLIError(
            f"no password for {user}: use -p, SALVUS_PASSWORD or password= in {CONFIG_FILE} "
            "(or run on a terminal to be asked)",
            ExitCode.USAGE,
        )
    try:
        return getpass.getpass(f"password for {user} at {url}: ")
    except EOFError:
        raise CLIError(f"no password for {user}", ExitCode.USAGE)


class Remote:
    """Calls on the host, turning every transport or fault problem into one L{CLIError}."""

    def __init__(self, settings: dict[str, Any], timeout: float):
        self.settings = settings
        try:
            self.proxy = connect(timeout=timeout, **settings)
        except ClientError as e:
            raise CLIError(str(e), ExitCode.USAGE)

    def close(self) -> None:
        """Close the connection to the host (it is kept alive between calls)."""
        try:
            self.proxy("close")()
        except Exception:
            pass

    def __call__(self, method: str, *params: Any) -> Any:
        target = self.proxy
        for part in method.split("."):
            target = getattr(target, part)
        url = self.settings["url"]
        try:
            return target(*params)
        except xmlrpc.client.Fault as f:
            raise CLIError(_faultText(f), _FAULT_EXIT.get(f.faultCode, ExitCode.FAILED), f.faultCode)
        except xmlrpc.client.ProtocolError as e:
            if e.errcode == 401:
                raise CLIError(f"{url}: authentication failed (check user and password)", ExitCode.AUTH)
            if e.errcode == 429:
                raise CLIError(
                    f"{url}: too many failed logins from this address; wait a minute", ExitCode.AUTH
                )
            raise CLIError(f"{url}: HTTP {e.errcode} {e.errmsg}", ExitCode.FAILED)
        except FingerprintMismatch as e:
            raise CLIError(f"{url}: {e.args[0]}", ExitCode.UNREACHABLE)
        except ssl.SSLCertVerificationError as e:
            raise CLIError(
                f"{url}: certificate not trusted ({e.verify_message}); use --cacert or --fingerprint",
                ExitCode.UNREACHABLE,
            )
        except ssl.SSLError as e:
            raise CLIError(f"{url}: TLS error: {e.reason or e}", ExitCode.UNREACHABLE)
        except FileNotFoundError:
            if url.startswith("unix:"):
                raise CLIError(f"{url}: no such socket (is the host running?)", ExitCode.UNREACHABLE)
            raise CLIError(f"{url}: connection refused (is the host running?)", ExitCode.UNREACHABLE)
        except ConnectionRefusedError:
            raise CLIError(f"{url}: connection refused (is the host running?)", ExitCode.UNREACHABLE)
        except TimeoutError:
            raise CLIError(f"{url}: timed out", ExitCode.UNREACHABLE)
        except socket.gaierror as e:
            raise CLIError(f"{url}: {e.strerror}", ExitCode.UNREACHABLE)
        except (OSError, http.client.HTTPException) as e:
            raise CLIError(f"{url}: {type(e).__name__}: {e}", ExitCode.UNREACHABLE)


_FAULT_WORDS = {
    Faults.BAD_NAME: "no such name",
    Faults.BAD_SIGNAL: "bad signal",
    Faults.NO_FILE: "no log file",
    Faults.SPAWN_ERROR: "spawn error",
    Faults.ABNORMAL_TERMINATION: "abnormal termination",
    Faults.ALREADY_STARTED: "already started",
    Faults.NOT_RUNNING: "not running",
    Faults.UNKNOWN_METHOD: "unknown method (is this a Salvus host?)",
}


def _faultText(fault: xmlrpc.client.Fault) -> str:
    """One readable line: the detail, then what kind of fault it was when that adds anything."""
    name, sep, rest = fault.faultString.partition(": ")
    if not (sep and name.isupper()):
        rest = fault.faultString if not name.isupper() else ""
    words = _FAULT_WORDS.get(fault.faultCode)
    if words and rest:
        return f"{rest}: {words}"
    return rest or words or fault.faultString


# -- tables ----------------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[Any]], out: Output) -> None:
    if not rows:
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        out.result("  ".join(cells).rstrip())


def _bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _namespec(info: dict[str, Any]) -> str:
    return f"{info['group']}:{info['name']}" if info["group"] != info["name"] else info["name"]


# -- commands --------------------------------------------------------------------------------------


def cmdStatus(remote: Remote, args, out: Output) -> int:
    infos = remote("supervisor.getAllProcessInfo")
    if args.names:
        wanted = []
        for name in args.names:
            matched = [
                i
                for i in infos
                if _namespec(i) == name
                or (name.endswith(":*") and i["group"] == name[:-2])
                or (name == i["group"] and sum(1 for j in infos if j["group"] == name) == 1)
            ]
            if not matched:
                raise CLIError(f"{name}: no such process", ExitCode.NO_SUCH_NAME)
            wanted += [m for m in matched if m not in wanted]
        infos = wanted
    _table([(_namespec(i), i["statename"], i["description"]) for i in infos], out)
    return ExitCode.OK if all(i["statename"] == "RUNNING" for i in infos) else ExitCode.NOT_RUNNING


def _act(remote: Remote, verb: str, name: str, out: Output) -> int:
    """start or stop one namespec; prints per-instance results with -v, failures always."""
    past = {"start": "started", "stop": "stopped"}[verb]
    if name == "all":
        results = remote(f"supervisor.{verb}AllProcesses")
    else:
        result = remote(f"supervisor.{verb}Process", name)
        if result is True:
            out.info(f"{name}: {past}")
            return ExitCode.OK
        results = result
    code = ExitCode.OK
    for r in results:
        spec = f"{r['group']}:{r['name']}" if r["group"] != r["name"] else r["name"]
        if r["status"] == Faults.SUCCESS:
            out.info(f"{spec}: {past}")
        else:
            out.error(f"{spec}: {_faultText(xmlrpc.client.Fault(r['status'], r['description']))}")
            code = ExitCode.FAILED
    return code


def cmdStartStop(remote: Remote, args, out: Output) -> int:
    code = ExitCode.OK
    for name in args.names:
        try:
            result = _act(remote, args.command, name, out)
        except CLIError as e:
            if args.command == "start" and "already started" in str(e):
                out.info(f"{name}: already started")
                continue
            if args.command == "stop" and "not running" in str(e):
                out.info(f"{name}: not running")
                continue
            raise
        code = max(code, result)
    return code


def _restartOne(remote: Remote, name: str, out: Output) -> int:
    """The plain restart of one namespec: stop it (if running), then start it."""
    try:
        _act(remote, "stop", name, out)
    except CLIError as e:
        if "not running" not in str(e):
            raise
    return _act(remote, "start", name, out)


def _rolling(remote: Remote, name: str, batch: int) -> list[str] | None:
    """Rolling restart of C{all}, C{DEPLOY:*} or C{GROUP:*}; None when C{name} is one instance
    (or the host has no rolling verbs) and the plain restart applies."""
    try:
        if name == "all":
            return remote("salvus.restartAll", batch)
        if not name.endswith(":*"):
            return None
        target = name[:-2]
        try:
            return remote("salvus.restartGroup", target, batch)
        except CLIError as e:
            if e.fault_code != Faults.BAD_NAME:
                raise
        try:
            return remote("salvus.restartDeploy", target, batch)
        except CLIError as e:
            if e.fault_code == Faults.BAD_NAME:
                raise CLIError(f"{target}: no such deploy or group", ExitCode.NO_SUCH_NAME, e.fault_code)
            raise
    except CLIError as e:
        if e.fault_code == Faults.UNKNOWN_METHOD:
            return None  # not a Salvus host (or an older one): stop, then start
        raise


def cmdRestart(remote: Remote, args, out: Output) -> int:
    """C{restart}: C{all}, C{DEPLOY:*} and C{GROUP:*} roll through the instances, C{--batch} at a
    time, each batch ready before the next is drained and stopped (a balanced deploy keeps
    serving); one instance, or anything with C{--no-rolling}, is stopped and then started."""
    if args.batch < 1:
        raise CLIError(f"--batch must be at least 1, not {args.batch}", ExitCode.USAGE)
    code = ExitCode.OK
    for name in args.names:
        deploys = None if args.no_rolling else _rolling(remote, name, args.batch)
        if deploys is None:
            code = max(code, _restartOne(remote, name, out))
            continue
        for deploy in deploys:
            out.info(f"{deploy}:*: restarted ({args.batch} at a time)")
    return code


def _tailNames(remote: Remote, name: str) -> list[str]:
    """The instances C{tail NAME} reads: C{GROUP:*} is every instance of the group (what the host
    suggests for a group of several), anything else the one name as given."""
    if not name.endswith(":*"):
        return [name]
    group = name[:-2]
    names = [_namespec(i) for i in remote("supervisor.getAllProcessInfo") if i["group"] == group]
    if not names:
        raise CLIError(f"{group}: no such group", ExitCode.NO_SUCH_NAME)
    return names


def cmdTail(remote: Remote, args, out: Output) -> int:
    """C{tail [-f] NAME|GROUP:* [stdout|stderr]}: several instances print under C{==> NAME <==}
    headers, as tail(1) does for several files."""
    method = "Stderr" if args.stream == "stderr" else "Stdout"
    names = _tailNames(remote, args.name)
    shown: list[str | None] = [None]

    def write(name: str, text: str) -> None:
        if not text:
            return
        if len(names) > 1 and shown[0] != name:
            out.out.write(("\n" if shown[0] is not None else "") + f"==> {name} <==\n")
        shown[0] = name
        out.out.write(text)
        out.out.flush()

    if not args.follow:
        for name in names:
            write(name, remote(f"supervisor.readProcess{method}Log", name, -args.bytes, 0))
        return ExitCode.OK
    offsets = {}
    for name in names:
        text, offsets[name], overflow = remote(f"supervisor.tailProcess{method}Log", name, 0, args.bytes)
        write(name, text)
    polls = 0
    try:
        while args.polls is None or polls < args.polls:
            time.sleep(args.interval)
            polls += 1
            for name in names:
                # supervisord's tail call returns the *last* N bytes; read from our offset instead
                text = remote(f"supervisor.readProcess{method}Log", name, offsets[name], 65536)
                offsets[name] += len(text.encode("utf-8"))
                write(name, text)
    except KeyboardInterrupt:
        pass
    return ExitCode.OK


def _hostSpec(spec: str | Sequence[str], parts: int = 3) -> list[str]:
    """SERVICE/GROUP/HOST (or SERVICE/GROUP) from one word with slashes, separate words
    (C{drain web workers worker:0}, as the README writes it) or any mix of the two."""
    words = [spec] if isinstance(spec, str) else list(spec)
    pieces = [piece for word in words for piece in word.split("/")]
    if len(pieces) != parts or not all(pieces):
        shape = "SERVICE/GROUP/HOST" if parts == 3 else "SERVICE/GROUP"
        shown = " ".join(words)
        raise CLIError(f"bad target {shown!r}: expected {shape} (or {shape.replace('/', ' ')})",
                       ExitCode.USAGE)
    return pieces


def _target(spec: Sequence[str]) -> str:
    """The target as one word, for messages."""
    return "/".join(piece for word in spec for piece in word.split("/"))


def cmdBalancer(remote: Remote, args, out: Output) -> int:
    action = args.action
    if action == "show":
        snapshot = remote("salvus.balancerSnapshot")
        rows = [("HOST", "STATE", "WEIGHT", "CONNS", "TOTAL", "IN", "OUT", "FAULTS")]
        for service, group, host in shapes.balancerHosts(snapshot):
            state = host.get("state", "?")
            if state == "up" and host.get("healthy") is False:
                state = "up (failing)"
            rows.append(
                (
                    f"{service['name']}/{group['name']}/{host.get('name')}",
                    state,
                    host.get("weight", ""),
                    shapes.hostOpen(host),
                    shapes.hostTotal(host),
                    _bytes(host.get("bytes_in")),
                    _bytes(host.get("bytes_out")),
                    host.get("faults", 0),
                )
            )
        _table(rows, out)
        return ExitCode.OK
    if action in ("up", "down", "drain"):
        remote("salvus.balancerSetState", *_hostSpec(args.target), action)
        out.info(f"{_target(args.target)}: {action}")
    elif action == "weight":
        remote("salvus.balancerSetWeight", *_hostSpec(args.target), args.weight)
        out.info(f"{_target(args.target)}: weight {args.weight}")
    elif action == "remove":
        remote("salvus.balancerRemoveHost", *_hostSpec(args.target))
        out.info(f"{_target(args.target)}: removed")
    elif action == "add":
        service, group = _hostSpec(args.target, 2)
        address, _, port = args.address.rpartition(":")
        if not address or not port.isdigit():
            raise CLIError(f"bad address {args.address!r}: expected HOST:PORT", ExitCode.USAGE)
        remote(
            "salvus.balancerAddHost",
            service,
            group,
            address.strip("[]"),
            int(port),
            args.weight,
            args.name or "",
        )
        out.info(f"{_target(args.target)}: added {args.address}")
    elif action == "scheduler":
        remote("salvus.balancerSetScheduler", *_hostSpec(args.target, 2), args.scheduler)
        out.info(f"{_target(args.target)}: scheduler {args.scheduler}")
    elif action == "retry":
        remote("salvus.balancerRetryHost", *_hostSpec(args.target))
        out.info(f"{_target(args.target)}: retried")
    elif action == "remove-all":
        count = remote("salvus.balancerRemoveAllHosts", *_hostSpec(args.target, 2))
        out.info(f"{_target(args.target)}: removed {count} hosts")
    elif action == "add-group":
        remote("salvus.balancerAddGroup", *_hostSpec(args.target, 2), args.scheduler)
        out.info(f"{_target(args.target)}: added")
    elif action == "remove-group":
        remote("salvus.balancerRemoveGroup", *_hostSpec(args.target, 2))
        out.info(f"{_target(args.target)}: removed")
    elif action == "add-service":
        remote("salvus.balancerAddService", args.service, list(args.listen))
        out.info(f"{args.service}: added")
    elif action == "remove-service":
        remote("salvus.balancerRemoveService", args.service)
        out.info(f"{args.service}: removed")
    return ExitCode.OK


def _when(timestamp: Any) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmdMonitor(remote: Remote, args, out: Output) -> int:
    if args.action == "top":
        latest = remote("salvus.monitorLatest")
        rows = [("NAME", "CPU%", "RSS", "SAMPLED (UTC)")]
        ordered = sorted(latest.items(), key=lambda kv: -(shapes.sampleCpu(kv[1]) or 0.0))
        for name, sample in ordered:
            cpu = shapes.sampleCpu(sample)
            rows.append(
                (
                    name,
                    "-" if cpu is None else f"{cpu:.1f}",
                    _bytes(shapes.sampleRss(sample)),
                    _when(shapes.sampleTime(sample)),
                )
            )
        _table(rows, out)
        return ExitCode.OK
    samples = remote("salvus.monitorHistory", args.name, -abs(args.since), 0)
    if not samples:
        known = _monitoredNames(remote)
        if args.name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise CLIError(f"{args.name}: no such instance (known: {listed})", ExitCode.NO_SUCH_NAME)
    rows = [("TIME (UTC)", "CPU%", "RSS")]
    for s in samples:
        rows.append(
            (
                _when(shapes.sampleTime(s)),
                f"{shapes.sampleCpu(s) or 0.0:.1f}",
                _bytes(shapes.sampleRss(s)),
            )
        )
    _table(rows, out)
    return ExitCode.OK


def _monitoredNames(remote: Remote) -> set[str]:
    """Every name C{monitor history} knows: the instances sampled and those the supervisor runs."""
    names = set(remote("salvus.monitorLatest"))
    try:
        names.update(_namespec(i) for i in remote("supervisor.getAllProcessInfo"))
    except CLIError as e:
        if e.code != ExitCode.NO_SERVICE and e.fault_code != Faults.UNKNOWN_METHOD:
            raise
    return names


def cmdAlerts(remote: Remote, args, out: Output) -> int:
    alerts = remote("salvus.alerts", bool(args.all))
    rows = [("SINCE (UTC)", "SEVERITY", "ALERT", "SUBJECT", "MESSAGE")]
    for a in alerts:
        rows.append(
            (
                _when(shapes.alertSince(a)),
                a.get("severity", ""),
                shapes.alertName(a),
                a.get("subject", ""),
                ("(cleared) " if a.get("cleared") else "") + str(a.get("message", "")),
            )
        )
    if len(rows) > 1 or out.verbosity:
        _table(rows, out)
    try:
        notices = remote("salvus.alertNotifications", False)
    except CLIError as e:
        if e.code != ExitCode.NO_SERVICE and e.fault_code != Faults.UNKNOWN_METHOD:
            raise
        notices = []
    if notices:
        # A notice that did not reach its receiver is as important as the alert itself.
        table = [("QUEUED (UTC)", "STATE", "ATTEMPTS", "ACTION", "NOTICE", "NEXT TRY", "LAST ERROR")]
        for n in notices:
            table.append((_when(n.get("created_at")), n.get("state", ""), n.get("attempts", 0),
                          n.get("action", ""), n.get("title", ""),
                          "-" if n.get("state") == "expired" else _when(n.get("next_at")),
                          n.get("last_error") or ""))
        out.result("")
        out.result("notifications not delivered:")
        _table(table, out)
        expired = sum(1 for n in notices if n.get("state") == "expired")
        out.error(f"{len(notices)} alert notifications not delivered ({expired} given up)")
        return ExitCode.FAILED
    return ExitCode.OK


def _printDiff(diff: dict[str, Any], out: Output, always: bool) -> bool:
    differs = False
    for service, changes in sorted(diff.items()):
        for kind, sign in (("added", "+"), ("changed", "~"), ("removed", "-")):
            for name in changes.get(kind, []):
                differs = True
                note = ", restart needed" if changes.get("restart") else ""
                if kind == "changed" and name in changes.get("rolled", ()):
                    note += ", rolled one instance at a time"
                line = f"{sign} {service} {name} ({kind}{note})"
                out.result(line) if always else out.info(line)
        if changes.get("restart") and changes.get("reason"):
            line = f"  {service}: restart needed: {changes['reason']}"
            out.result(line) if always else out.info(line)
        if changes.get("note"):
            line = f"  {service}: {changes['note']}"
            out.result(line) if always else out.info(line)
        if changes.get("failed"):
            out.error(f"{service}: not applied: {changes['failed']}")
    return differs


def cmdDiff(remote: Remote, args, out: Output) -> int:
    differs = _printDiff(remote("salvus.diff"), out, always=True)
    return ExitCode.NOT_RUNNING if differs else ExitCode.OK


def cmdReconcile(remote: Remote, args, out: Output) -> int:
    """Exit FAILED when a service could not apply its part: what runs is not what the file says."""
    applied = remote("salvus.reconcile")
    _printDiff(applied, out, always=False)
    failed = any(changes.get("failed") for changes in applied.values())
    return ExitCode.FAILED if failed else ExitCode.OK


def cmdCluster(remote: Remote, args, out: Output) -> int:
    """C{cluster hosts|send|deliver|clients|ping|messages}: the hosts sharing this host's store,
    the messages between them and to their clients (docs/cluster.md)."""
    import json

    if args.action == "hosts":
        hosts = remote("salvus.cluster.hosts")
        rows = [("NAME", "STATE", "ADDRESS", "LAST HEARTBEAT", "VERSION", "ADMIN")]
        for h in hosts:
            rows.append((h.get("name"), h.get("state"), h.get("address") or "-",
                         f"{float(h.get('age') or 0):.1f}s ago", h.get("version") or "-",
                         h.get("admin_url") or "-"))
        _table(rows, out)
        stale = next((h for h in hosts if h.get("stale")), None)
        if stale is not None:
            # Every state above is as of the last read: a host shown up may have stopped since.
            out.error(f"stale view: {stale.get('stale_reason') or 'not read just now'}; these states are"
                      f" {float(stale.get('view_age') or 0):.1f}s old")
            return ExitCode.NOT_RUNNING
        down = [h.get("name") for h in hosts if h.get("state") == "down"]
        return ExitCode.NOT_RUNNING if down else ExitCode.OK
    if args.action == "send":
        body: Any = None
        if args.body is not None:
            try:
                body = json.loads(args.body)
            except ValueError as e:
                raise CLIError(f"the message body must be JSON: {e}", ExitCode.USAGE)
        message_id = remote("salvus.cluster.send", args.host, args.kind, body)
        out.info(f"message {message_id} queued for {args.host}")
        return ExitCode.OK
    if args.action == "deliver":
        try:
            body = json.loads(args.body)
        except ValueError as e:
            raise CLIError(f"the message body must be JSON: {e}", ExitCode.USAGE)
        r = remote("salvus.cluster.deliver", args.client, body)
        out.result(f"message {r.get('id')} for {args.client} sent to {r.get('instance')}@{r.get('host')}"
                 f" (connection {r.get('serial')}) by {r.get('path')}")
        return ExitCode.OK
    if args.action == "clients":
        rows = [("CLIENT", "HOST", "INSTANCE", "SERIAL", "SINCE (UTC)")]
        for c in remote("salvus.cluster.clients", args.host or "", args.limit):
            rows.append((c.get("client"), c.get("host"), c.get("instance"), c.get("serial"),
                         _when(c.get("since"))))
        _table(rows, out)
        return ExitCode.OK
    if args.action == "ping":
        targets = list(args.hosts)
        if not targets:
            targets = [h["name"] for h in remote("salvus.cluster.hosts") if h.get("state") == "up"]
        failed = 0
        for host in targets:
            try:
                rtt = remote("salvus.cluster.ping", host, float(args.wait))
            except CLIError as e:
                if e.code in (ExitCode.UNREACHABLE, ExitCode.AUTH, ExitCode.NO_SERVICE, ExitCode.USAGE):
                    raise
                out.error(str(e))
                failed += 1
                continue
            out.result(f"pong from {host} in {float(rtt) * 1000:.1f} ms")
        return ExitCode.FAILED if failed else ExitCode.OK
    messages = remote("salvus.cluster.messages", args.host or "", args.kind or "", args.limit)
    from salvusctl.cluster.domain import deliveriesText

    rows = [("ID", "SENT (UTC)", "FROM", "TO", "KIND", "BODY", "DELIVERIES")]
    for m in messages:
        deliveries = deliveriesText(m)
        text = str(m.get("body", ""))
        rows.append((m.get("id"), _when(m.get("created")), m.get("sender"), m.get("recipient"),
                     m.get("kind"), text if len(text) <= 60 else text[:57] + "...", deliveries))
    if len(rows) > 1 or out.verbosity:
        _table(rows, out)
    return ExitCode.OK


def cmdUser(args, out: Output, env: dict[str, str], stdin: TextIO) -> int:
    from salvusctl.admin.users import UsersFile, UsersFileError, randomPassword

    path = args.file or env.get("SALVUS_USERS") or os.path.join("var", "admin-users")
    users = UsersFile(path)

    def password() -> str:
        if args.random:
            return randomPassword()  # printed once the file holds it, not before
        if args.password_stdin:
            value = stdin.readline().rstrip("\r\n")
        else:
            if not _isatty(stdin):
                raise CLIError("no terminal to ask for the password on: use --password-stdin or --random",
                               ExitCode.USAGE)
            try:
                value = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("again: ") != value:
                    raise CLIError("passwords differ", ExitCode.USAGE)
            except EOFError:
                raise CLIError("no password given", ExitCode.USAGE)
        if not value:
            raise CLIError("empty password", ExitCode.USAGE)
        return value

    try:
        if args.action in ("add", "passwd"):
            # refuse before asking for (or generating and printing) a password that cannot be used
            exists = users.get(args.name) is not None
            if args.action == "add" and exists:
                raise CLIError(f"user {args.name!r} already exists in {users.path} "
                               f"(salvusctl user passwd {args.name} sets a new password)")
            if args.action == "passwd" and not exists:
                raise CLIError(f"no user {args.name!r} in {users.path} (salvusctl user add {args.name})")
        if args.action == "add":
            value = password()
            users.add(args.name, value, args.role or "operator")
            if args.random:
                out.result(value)
            out.info(f"added {args.name} to {users.path}")
        elif args.action == "passwd":
            value = password()
            users.passwd(args.name, value, args.role)
            if args.random:
                out.result(value)
            out.info(f"changed {args.name} in {users.path}")
        elif args.action == "remove":
            users.remove(args.name)
            out.info(f"removed {args.name} from {users.path}")
        else:
            for user in users.users().values():
                out.result(f"{user.name}  {user.role}")
    except UsersFileError as e:
        raise CLIError(str(e), ExitCode.FAILED)
    return ExitCode.OK


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- argument parsing ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Errors as one L{CLIError} line naming the subcommand (C{salvusctl: balancer: …}), never
    argparse's usage-and-exit."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        raise CLIError(f"{command}: {message}" if command else message, ExitCode.USAGE)


def makeParser() -> argparse.ArgumentParser:
    parser = _Parser(prog="salvusctl", description="Control a Salvus host over its admin XML-RPC.")
    parser.add_argument(
        "-s",
        "--url",
        help="admin URL: https://HOST:PORT, http://127.0.0.1:PORT, unix:///PATH (env SALVUS_URL)",
    )
    parser.add_argument("-u", "--user", help="user name (env SALVUS_USER)")
    parser.add_argument("-p", "--password", help="password (env SALVUS_PASSWORD)")
    parser.add_argument("--cacert", help="trust this CA/certificate file for https (env SALVUS_CACERT)")
    parser.add_argument("--fingerprint", help="pin the server certificate's SHA-256 fingerprint")
    parser.add_argument("-c", "--config", help=f"settings file (default {CONFIG_FILE})")
    parser.add_argument(
        "--timeout", type=float, default=None,
        help=f"seconds per call (default {DEFAULT_TIMEOUT:g}; {RESTART_TIMEOUT:g} for restart)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say more (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("status", help="state of every instance (or the named ones)")
    p.add_argument("names", nargs="*", metavar="NAME")
    for verb in ("start", "stop", "restart"):
        p = sub.add_parser(verb, help=f"{verb} NAME, GROUP:* or all")
        p.add_argument("names", nargs="+", metavar="NAME")
        if verb == "restart":
            p.add_argument("--batch", type=int, default=1,
                           help="instances restarted at once in a rolling restart (default 1)")
            p.add_argument("--no-rolling", action="store_true",
                           help="stop every instance, then start them all (the old way)")
    p = sub.add_parser("tail", help="an instance's output (GROUP:* for every instance of a group)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--bytes", type=int, default=1600, help="how many bytes from the end")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--polls", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("name", metavar="NAME|GROUP:*")
    p.add_argument("stream", nargs="?", default="stdout", choices=("stdout", "stderr"))

    p = sub.add_parser("balancer", help="show or change the balancer")
    bsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    bsub.required = True
    bsub.add_parser("show", help="services, groups and hosts with counters")
    # a target is SERVICE/GROUP/HOST or the same words apart (drain web workers worker:0)
    for action in ("up", "down", "drain", "remove", "retry"):
        b = bsub.add_parser(action, help=f"{action} SERVICE/GROUP/HOST")
        b.add_argument("target", nargs="+", metavar="SERVICE/GROUP/HOST")
    for action in ("remove-all", "remove-group"):
        b = bsub.add_parser(action, help=f"{action} SERVICE/GROUP")
        b.add_argument("target", nargs="+", metavar="SERVICE/GROUP")
    b = bsub.add_parser("add-group", help="add-group SERVICE/GROUP [--scheduler NAME]")
    b.add_argument("target", nargs="+", metavar="SERVICE/GROUP")
    b.add_argument("--scheduler", default="roundrobin")
    b = bsub.add_parser("add-service", help="add-service SERVICE ENDPOINT…")
    b.add_argument("service", metavar="SERVICE")
    b.add_argument("listen", nargs="+", metavar="ENDPOINT")
    b = bsub.add_parser("remove-service", help="remove-service SERVICE")
    b.add_argument("service", metavar="SERVICE")
    b = bsub.add_parser("weight", help="weight SERVICE/GROUP/HOST N")
    b.add_argument("target", nargs="+", metavar="SERVICE/GROUP/HOST")
    b.add_argument("weight", type=int)
    b = bsub.add_parser("add", help="add SERVICE/GROUP ADDRESS:PORT")
    b.add_argument("target", nargs="+", metavar="SERVICE/GROUP")
    b.add_argument("address", metavar="ADDRESS:PORT")
    b.add_argument("--weight", type=int, default=1)
    b.add_argument("--name", default=None)
    b = bsub.add_parser("scheduler", help="scheduler SERVICE/GROUP NAME")
    b.add_argument("target", nargs="+", metavar="SERVICE/GROUP")
    b.add_argument("scheduler")

    p = sub.add_parser("monitor", help="resource samples")
    msub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    msub.add_parser("top", help="latest sample of every instance, busiest first")
    m = msub.add_parser("history", help="history NAME")
    m.add_argument("name", metavar="NAME")
    m.add_argument("--since", type=float, default=3600.0, help="seconds back (default 3600)")

    p = sub.add_parser("cluster", help="the hosts sharing this host's store, and messages to them")
    csub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    csub.add_parser("hosts", help="every host with its state (exit 3 when one is down)")
    c = csub.add_parser("send", help="send HOST|'*' KIND [JSON], e.g. send w1 deploy.restart "
                                     "'{\"deploy\": \"web\"}'")
    c.add_argument("host", metavar="HOST")
    c.add_argument("kind", metavar="KIND")
    c.add_argument("body", nargs="?", default=None, metavar="JSON")
    c = csub.add_parser("deliver", help="deliver CLIENT JSON: to a client wherever it is connected"
                                        " (refused when it is not)")
    c.add_argument("client", metavar="CLIENT_ID")
    c.add_argument("body", metavar="JSON")
    c = csub.add_parser("clients", help="the connected clients and the host and instance of each")
    c.add_argument("--host", default=None, help="only this host's clients")
    c.add_argument("-n", "--limit", type=int, default=1000)
    c = csub.add_parser("ping", help="ping [HOST…]: each host (default every host up) answers pong")
    c.add_argument("hosts", nargs="*", metavar="HOST")
    c.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each pong (default 10)")
    c = csub.add_parser("messages", help="the newest messages and their deliveries")
    c.add_argument("--host", default=None, help="only messages from, to or broadcast to this host")
    c.add_argument("--kind", default=None, help="only this kind")
    c.add_argument("-n", "--limit", type=int, default=20)

    p = sub.add_parser("alerts", help="active alerts")
    p.add_argument("--all", action="store_true", help="include cleared alerts")
    sub.add_parser("diff", help="declared config vs running (exit 3 when they differ)")
    sub.add_parser("reconcile", help="make what runs match the config")

    # backup and restore hand their arguments (-h included) to salvusctl.backup.cli's parsers
    p = sub.add_parser("backup", help="backup run|status|list|log|verify (see salvusctl backup -h)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("restore", help="restore [RUN] [--dry-run] [--backup NAME]", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("import-supervisord", help="write a host file (.tac) for a supervisord.conf "
                                                  "on stdout, warnings on stderr")
    p.add_argument("file", metavar="SUPERVISORD.CONF")
    p.add_argument("--var", default="var", help="the host's state directory (default ./var)")

    p = sub.add_parser("user", help="manage the local admin users file")
    usub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    usub.required = True
    for action, text in (
        ("add", "add NAME: a new user (prompts, or --password-stdin, or --random)"),
        ("passwd", "passwd NAME: a new password (and --role) for a user"),
        ("remove", "remove NAME"),
        ("list", "every user and its role"),
    ):
        u = usub.add_parser(action, help=text)
        if action != "list":
            u.add_argument("name", metavar="NAME")
        u.add_argument("--file", help="users file (env SALVUS_USERS, default var/admin-users)")
        if action in ("add", "passwd"):
            u.add_argument("--role", choices=("viewer", "operator"))
            u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
            u.add_argument("--random", action="store_true", help="generate a password and print it")
    return parser


def cmdBackup(remote: Remote, args, out: Output) -> int:
    """C{backup …} and C{restore …}: the backup package's own commands over this connection.

    L{backupMain} and L{restoreMain} print their results and map the backup's faults to their
    exit codes; a transport or authentication problem keeps the code every command uses.
    """
    from salvusctl.backup.cli import backupMain, restoreMain

    problems: list[CLIError] = []

    def call(method: str, *params: Any) -> Any:
        try:
            return remote(method, *params)
        except CLIError as e:
            if e.fault_code == Faults.UNKNOWN_METHOD:
                problems.append(CLIError("this host runs no backup service", ExitCode.NO_SERVICE))
            elif e.code in (ExitCode.UNREACHABLE, ExitCode.AUTH, ExitCode.NO_SERVICE):
                problems.append(CLIError(str(e), e.code))
            raise

    main = backupMain if args.command == "backup" else restoreMain
    printed = io.StringIO()
    code = main(list(args.rest), call, printed)
    if problems:
        raise problems.pop(0)  # not kept in a local: no cycle that keeps the connection open
    # the backup package's own error lines ("error: …", "salvusctl backup: …") go to stderr,
    # prefixed like every other error; its results stay on stdout
    for line in printed.getvalue().splitlines():
        for prefix in ("error: ", f"salvusctl {args.command}: "):
            if line.startswith(prefix):
                out.error(f"{args.command}: {line[len(prefix):]}")
                break
        else:
            out.result(line)
    return code


def _backupHelp(args: argparse.Namespace, out: TextIO) -> int:
    """C{backup -h}/C{restore -h}: the backup package's own help, with no host to talk to."""
    from salvusctl.backup.cli import backupMain, restoreMain

    def call(method: str, *params: Any) -> Any:
        raise CLIError(f"{args.command} -h called {method}")  # pragma: no cover (help makes no call)

    main = backupMain if args.command == "backup" else restoreMain
    with contextlib.redirect_stdout(out):
        try:
            main(list(args.rest), call, out)
        except SystemExit:
            pass
    return ExitCode.OK


_REMOTE: dict[str, Callable[[Remote, argparse.Namespace, Output], int]] = {
    "backup": cmdBackup,
    "restore": cmdBackup,
    "status": cmdStatus,
    "start": cmdStartStop,
    "stop": cmdStartStop,
    "restart": cmdRestart,
    "tail": cmdTail,
    "balancer": cmdBalancer,
    "monitor": cmdMonitor,
    "alerts": cmdAlerts,
    "cluster": cmdCluster,
    "diff": cmdDiff,
    "reconcile": cmdReconcile,
}


def parseArgs(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line exactly as L{run} does, without running it.

    Raises L{CLIError} (USAGE) for a bad one and C{SystemExit} for C{-h}.  C{backup} and
    C{restore} keep their arguments in C{args.rest} for the backup package's own parsers.  The
    docs test parses every command the README gives with it, so the README cannot drift.
    """
    args, extra = makeParser().parse_known_args(list(argv))
    if args.command in ("backup", "restore"):
        # argparse leaves options that come first after the command (restore --dry-run) to
        # the caller: they belong to the backup command's own parser.
        args.rest = extra + list(args.rest)
    elif extra:
        raise CLIError(f"{args.command}: unrecognized arguments: {' '.join(extra)}", ExitCode.USAGE)
    return args


def run(argv: Sequence[str], env: dict[str, str], out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """The whole CLI as a function (what tests call in-process)."""
    output = Output(0, out, err)
    try:
        if not argv:
            raise CLIError("no command given (salvusctl -h lists them)", ExitCode.USAGE)
        try:
            with contextlib.redirect_stdout(out):
                args = parseArgs(argv)
        except SystemExit:  # -h/--help: argparse printed the help (to out)
            return ExitCode.OK
        if args.command in ("backup", "restore") and ("-h" in args.rest or "--help" in args.rest):
            return _backupHelp(args, out)
        output.verbosity = args.verbose
        if args.command == "user":
            return int(cmdUser(args, output, env, stdin))
        if args.command == "import-supervisord":
            from salvusctl.cli.importsupervisord import importMain

            return importMain([args.file, "--var", args.var], env, out, err)
        timeout = args.timeout
        if timeout is None:
            timeout = RESTART_TIMEOUT if args.command == "restart" else DEFAULT_TIMEOUT
        remote = Remote(_settings(args, env, stdin), timeout)
        try:
            return int(_REMOTE[args.command](remote, args, output))
        finally:
            remote.close()
    except CLIError as e:
        output.error(str(e))
        return int(e.code)
    except KeyboardInterrupt:
        return ExitCode.FAILED


def main(argv: Sequence[str] | None = None) -> None:
    """The C{salvusctl} console script.

    A reader that closes the pipe early (C{salvusctl status | head -1}) is not an error of ours:
    the rest of the output is dropped without a traceback and the exit status is the one a shell
    gives a process killed by SIGPIPE (141), as C{cat} or C{ls} would.
    """
    try:
        code = run(sys.argv[1:] if argv is None else argv, dict(os.environ), sys.stdout, sys.stderr,
                   sys.stdin)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = 128 + 13
    raise SystemExit(code)

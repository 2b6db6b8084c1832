"""C{salvusctl import-supervisord FILE > host.tac}: a supervisord.conf as a Salvus host file.

The config is read with supervisord's own rules (L{salvusctl.supervisor.supervisordconf}); each
program becomes a C{Deploy}, each C{[group:]} the deploys' C{group=}, the HTTP servers the
C{Admin}'s listeners.  Whatever Salvus does differently, or does not do, is one warning line on
stderr naming the C{file:line} it comes from: the host file is what runs, the warnings are what to
read before it does.  The mapping table is in docs/supervisor.md ("Moving from supervisord").
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from salvusctl.supervisor.supervisordconf import (
    AUTO,
    ProgramConf,
    ServerConf,
    SupervisordConf,
    SupervisordConfError,
    Where,
    readSupervisordConf,
)

__all__ = ["convert", "importMain", "salvusNamespecs"]

# supervisord's [supervisord] options, and how a Salvus host gets the same (None: nothing to say
# when the value is supervisord's default).
_DAEMON_DEFAULTS = {
    "logfile": "supervisord.log",
    "logfile_maxbytes": "50MB",
    "logfile_backups": "10",
    "loglevel": "info",
    "pidfile": "supervisord.pid",
    "nodaemon": "false",
    "silent": "false",
    "minfds": "1024",
    "minprocs": "200",
    "umask": "022",
    "identifier": "supervisor",
    "nocleanup": "false",
    "strip_ansi": "false",
}
_DAEMON_NOTES = {
    "logfile": "the host log is twistd's: run twistd with --logfile={value}",
    "logfile_maxbytes": "twistd rotates its log every 1 MB (Twisted's LogFile), not at this size",
    "logfile_backups": "twistd keeps every rotated log file; prune them with logrotate",
    "loglevel": "twistd logs at info; the instances' own levels are Deploy(log_level=, store_level=)",
    "pidfile": "run twistd with --pidfile={value}",
    "nodaemon": "twistd runs in the foreground with -n, as the command line in the host file says",
    "silent": "twistd -n writes its log to stdout; use --logfile to keep it off the terminal",
    "minfds": "Salvus does not raise its own open-file limit: set Deploy(rlimits={{'nofile': {value}}}) "
    "or LimitNOFILE= in the unit that starts twistd",
    "minprocs": "Salvus does not raise its own process limit: set Deploy(rlimits={{'nproc': {value}}}) "
    "or LimitNPROC=",
    "umask": "run twistd with --umask={value}",
    "user": "run twistd as root with --uid={value} (or as that user)",
    "directory": "run twistd with --rundir={value}",
    "identifier": "not used: supervisor.getIdentification answers Salvus's own",
    "childlogdir": "Salvus keeps every instance's log under var/log/supervisor "
    "(SupervisorSettings(log_dir=...))",
    "nocleanup": "Salvus keeps no AUTO log files to clean up",
    "strip_ansi": "not supported: the logs keep what the program wrote",
}
_SERVER_OPTIONS = {
    "inet_http_server": ("port", "username", "password"),
    "unix_http_server": ("file", "chmod", "chown", "username", "password"),
}
# The process_name keys a Deploy expands itself (others: Salvus's names, and a warning).
_NAME_KEYS = {"program_name", "process_num", "group_name", "numprocs"}
# [program:x] options this converter maps; anything else is named as not supported.
_MAPPED = {
    "command",
    "process_name",
    "numprocs",
    "numprocs_start",
    "priority",
    "autostart",
    "autorestart",
    "startsecs",
    "startretries",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "user",
    "redirect_stderr",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "environment",
    "directory",
    "umask",
    "events",
    "buffer_size",
    "serverurl",
}
_UNSUPPORTED = {
    "stdout_capture_maxbytes": "not supported: PROCESS_COMMUNICATION events need an event listener",
    "stderr_capture_maxbytes": "not supported: PROCESS_COMMUNICATION events need an event listener",
    "stdout_events_enabled": "not supported: PROCESS_LOG events need an event listener",
    "stderr_events_enabled": "not supported: PROCESS_LOG events need an event listener",
    "stdout_syslog": "not supported: Salvus keeps logs in files and the store, not syslog",
    "stderr_syslog": "not supported: Salvus keeps logs in files and the store, not syslog",
    "result_handler": "not supported",
}
_SUPERVISOR_RPC = "supervisor.rpcinterface:make_main_rpcinterface"


class _Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, where: Where | None, text: str) -> None:
        self.lines.append(f"{where}: {text}" if where is not None else text)


def salvusNamespecs(deploy: Any) -> list[str]:
    """What C{supervisorctl status} prints for a deploy's instances on a Salvus host: the
    instance names through the admin's own process struct, so the converter's name warnings
    follow Salvus's naming as it is."""
    from salvusctl.admin.supervisorrpc import processStruct

    out = []
    for name in deploy.instanceNames():
        struct = processStruct({"name": name, "group": deploy.groupName})
        group, short = struct["group"], struct["name"]
        out.append(short if short == group else f"{group}:{short}")
    return out


def _perProcess(prog: ProgramConf, option: str, values: list[Any], warn: _Warnings) -> Any:
    """One value for all instances: the shared one, a C{{index}} template, or instance 0's (warned)."""
    if all(v == values[0] for v in values):
        return values[0]
    templated = prog.templated.get(option)
    if templated is not None and prog.numprocs_start == 0:

        def render(value: Any, i: int) -> Any:
            if isinstance(value, dict):
                return {k: render(v, i) for k, v in value.items()}
            return value.replace("{index}", str(i)) if isinstance(value, str) else value

        if all(render(templated, i) == v for i, v in enumerate(values)):
            return templated
    warn(
        prog.at(option),
        f"[{prog.section}] {option}: differs per process in a way Salvus cannot "
        f"template ({{index}} counts from 0, for %(process_num)s only); every instance "
        f"gets process {prog.processes[0].num}'s value",
    )
    return values[0]


def _asked(option: str, value: str) -> bool:
    """Whether an unsupported option asks for something (C{stdout_events_enabled=false} does not)."""
    text = value.strip().lower()
    if option.endswith(("_events_enabled", "_syslog")):
        return text not in ("false", "no", "off", "0")
    if option.endswith("_capture_maxbytes"):
        return text not in ("0", "0kb", "0mb", "0gb")
    return True


def _deployArgs(
    conf: SupervisordConf, prog: ProgramConf, warn: _Warnings, maxbytesDefault: int
) -> dict[str, Any]:
    procs = prog.processes
    section = prog.section
    kwargs: dict[str, Any] = {}
    command = _perProcess(prog, "command", [p.command for p in procs], warn)
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise SupervisordConfError(
            f"[{section}] command: can't parse command {command!r}: {e}", prog.at("command")
        )
    if not argv:
        raise SupervisordConfError(f"[{section}] command is empty", prog.at("command"))
    kwargs["command"] = argv
    if prog.numprocs != 1:
        kwargs["numprocs"] = prog.numprocs
    if prog.kind == "program" and set(re.findall(r"%\((\w+)\)", prog.process_name)) <= _NAME_KEYS:
        # supervisord's template as written, so the host's processes keep their names.
        kwargs["process_name"] = prog.process_name
    directory = _perProcess(prog, "directory", [p.directory for p in procs], warn)
    if directory is not None:
        kwargs["cwd"] = directory
    env = dict(conf.environment)
    env.update(_perProcess(prog, "environment", [p.environment for p in procs], warn))
    if env:
        kwargs["env"] = env
    if prog.user is not None:
        kwargs["user"] = prog.user
        if not {"HOME", "USER", "LOGNAME", "SHELL"} <= set(env):
            warn(
                prog.at("user"),
                f"[{section}] user={prog.user}: Salvus also sets HOME, USER, LOGNAME and "
                "SHELL to that user's (supervisord keeps its own); set them in environment= "
                "to keep other values",
            )
    if prog.group != prog.name:
        kwargs["group"] = prog.group
    if prog.priority != 999:
        kwargs["priority"] = prog.priority
    if not prog.autostart:
        kwargs["autostart"] = False
    if prog.autorestart != "unexpected":
        kwargs["autorestart"] = prog.autorestart
    if prog.startsecs != 1:
        kwargs["startsecs"] = prog.startsecs
    if prog.startretries != 3:
        kwargs["startretries"] = prog.startretries
    if "startretries" in prog.options:
        warn(
            prog.at("startretries"),
            f"[{section}] startretries: Salvus waits 1, 2, 4 … s (at most 60) "
            "between retries, supervisord 1, 2, 3 … s",
        )
    if prog.exitcodes != (0,):
        kwargs["exitcodes"] = list(prog.exitcodes)
    if prog.stopsignal != "TERM":
        kwargs["stopsignal"] = prog.stopsignal
    if prog.stopwaitsecs != 10:
        kwargs["stopwaitsecs"] = prog.stopwaitsecs
    for option in ("stopasgroup", "killasgroup"):
        if option in prog.options and not getattr(prog, option):
            warn(
                prog.at(option),
                f"[{section}] {option}=false: Salvus always signals the whole process "
                "group (and what escaped it), as supervisord does with true",
            )
    if prog.umask is not None:
        kwargs["umask"] = prog.umask
    if prog.redirect_stderr:
        kwargs["redirect_stderr"] = True
    # logs: one rotation setting for both streams; the file names are Salvus's own
    maxbytes = prog.logfile_maxbytes["stdout"]
    backups = prog.logfile_backups["stdout"]
    if maxbytes != maxbytesDefault:
        kwargs["log_max_bytes"] = maxbytes
    if backups != 10:
        kwargs["log_backups"] = backups
    for stream in ("stderr",):
        for option, value, chosen in (
            ("logfile_maxbytes", prog.logfile_maxbytes[stream], maxbytes),
            ("logfile_backups", prog.logfile_backups[stream], backups),
        ):
            if f"{stream}_{option}" in prog.options and value != chosen and not prog.redirect_stderr:
                warn(
                    prog.at(f"{stream}_{option}"),
                    f"[{section}] {stream}_{option}={value}: Salvus rotates "
                    f"both streams alike, at the stdout setting ({chosen})",
                )
    for stream in ("stdout", "stderr"):
        option = f"{stream}_logfile"
        value = getattr(procs[0], option)
        if option not in prog.options or value == AUTO or (stream == "stderr" and prog.redirect_stderr):
            continue
        if value is None:
            warn(
                prog.at(option),
                f"[{section}] {option}=NONE: Salvus keeps the {stream} log anyway "
                "(rotated; Deploy(log_level=) filters it)",
            )
        else:
            warn(
                prog.at(option),
                f"[{section}] {option}={prog.options[option]}: Salvus writes the {stream} log "
                "under its log_dir (var/log/supervisor), not to this path",
            )
    if prog.redirect_stderr and prog.options.get("stderr_logfile", "").lower() not in (
        "",
        "auto",
        "none",
        "off",
    ):
        warn(
            prog.at("stderr_logfile"),
            f"[{section}] stderr_logfile: ignored with redirect_stderr=true (as supervisord does)",
        )
    if prog.numprocs_start != 0:
        warn(
            prog.at("numprocs_start"),
            f"[{section}] numprocs_start={prog.numprocs_start}: Salvus numbers instances from 0",
        )
    if "serverurl" in prog.options and prog.options["serverurl"].strip().upper() != "AUTO":
        warn(prog.at("serverurl"), f"[{section}] serverurl: not supported; SUPERVISOR_SERVER_URL is not set")
    for option, text in _UNSUPPORTED.items():
        if option in prog.options and _asked(option, prog.options[option]):
            warn(prog.at(option), f"[{section}] {option}: {text}")
    for option in prog.options:
        if option not in _MAPPED and option not in _UNSUPPORTED:
            warn(
                prog.at(option),
                f"[{section}] {option}: not a supervisord option; ignored (supervisord ignores it too)",
            )
    # supervisord's behaviour where Salvus's defaults differ
    kwargs["flapping"] = None  # supervisord has no flapping limit; restarts go on as it would
    kwargs["stdin"] = True  # supervisord gives every process a stdin pipe (supervisorctl fg)
    return kwargs


def _call(func: str, args: Sequence[Any], kwargs: Mapping[str, Any], raw: Mapping[str, str] = {}) -> str:
    parts = [repr(a) for a in args]
    for key, value in kwargs.items():
        text = raw.get(key) or (f"0o{value:03o}" if key == "umask" else repr(value))
        parts.append(f"{key}={text}")
    one = f"host.add({func}({', '.join(parts)}))"
    if len(one) <= 100:
        return one
    return f"host.add({func}(\n" + "".join(f"    {p},\n" for p in parts) + "))"


def _listener(server: ServerConf, warn: _Warnings) -> tuple[str, bool]:
    """The Admin endpoint for one supervisord HTTP server, and whether it is plain HTTP beyond
    loopback."""
    if server.kind == "unix":
        if server.chmod & 0o077:
            warn(
                server.where.get("chmod"),
                f"[{server.section}] chmod={server.chmod:o}: Salvus creates "
                "its admin socket 0600 (its owner only); others log in over it",
            )
        if server.chown:
            warn(
                server.where.get("chown"),
                f"[{server.section}] chown={server.chown}: not supported; the "
                "socket belongs to the user twistd runs as",
            )
        return "unix:" + server.file.replace(":", "\\:"), False
    host = server.host
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        interface = "127.0.0.1" if host == "localhost" else host
        kind = "tcp6" if ":" in interface else "tcp"
        return f"{kind}:{server.port}:interface={interface.replace(':', chr(92) + ':')}", False
    text = "all interfaces" if not host else host
    warn(
        server.where.get("port"),
        f"[{server.section}] port={server.host or '*'}:{server.port}: plain HTTP on "
        f"{text}, kept with allow_plain_http=True; prefer ssl:{server.port} "
        "(supervisorctl speaks plain HTTP only)",
    )
    if not host:
        return f"tcp:{server.port}", True
    kind = "tcp6" if ":" in host else "tcp"
    return f"{kind}:{server.port}:interface={host.replace(':', chr(92) + ':')}", True


def convert(
    conf: SupervisordConf,
    source: str,
    var: str = "var",
    eventListeners: bool = True,
) -> tuple[str, list[str]]:
    """The host file for C{conf}, and the warning lines (each naming the file:line it is about).

    @param source: the config's path as the user gave it (written into the file's header).
    @param eventListeners: C{[eventlistener:]} sections become C{EventListener} declarations;
        False writes each one out as a comment (and a warning).
    """
    from salvusctl.supervisor.deploy import Deploy

    warn = _Warnings()
    for text in conf.warnings:
        warn(None, f"{conf.path}: {text}")
    for name, where in sorted(conf.env_used.items(), key=lambda kv: (kv[1].file, kv[1].line or 0)):
        warn(
            where,
            f"%(ENV_{name})s: expanded now, into the host file; supervisord reads the "
            "environment again at each start and reread",
        )
    twistd = ["twistd"]
    daemon = conf.supervisord
    if daemon.get("nodaemon", "false").lower() in ("true", "yes", "on", "1"):
        twistd.append("-n")
    for option, value in daemon.items():
        where = conf.supervisord_where.get(option)
        if option == "environment":
            continue
        if option in ("logfile", "pidfile", "umask", "user", "directory"):
            flag = {
                "logfile": "--logfile",
                "pidfile": "--pidfile",
                "umask": "--umask",
                "user": "--uid",
                "directory": "--rundir",
            }[option]
            twistd.append(f"{flag}={value}")
        note = _DAEMON_NOTES.get(option)
        if note is None:
            warn(where, f"[supervisord] {option}: not a supervisord option; ignored")
            continue
        if option == "nodaemon":
            continue  # the command line in the header says it
        if (
            option in ("minfds", "minprocs", "loglevel", "silent", "nocleanup", "strip_ansi", "identifier")
            and value.strip().lower() == _DAEMON_DEFAULTS[option]
        ):
            continue
        warn(where, f"[supervisord] {option}={value}: {note.format(value=value)}")
    twistd += ["salvus", "--config", "host.tac"]

    sections = dict(conf.sections)
    lines_out: list[str] = []
    imports = {"from salvusctl.host import Host"}
    groups = {g.name: g for g in conf.groups}
    for g in conf.groups:
        if "priority" in g.where:
            warn(
                g.where["priority"],
                f"[group:{g.name}] priority={g.priority}: Salvus orders deploys by "
                "their own priority= (and depends_on=), not by group",
            )
        for option in g.where:
            if option not in ("", "programs", "priority"):
                warn(g.where[option], f"[group:{g.name}] {option}: not a supervisord option; ignored")
    order = sorted(
        conf.programs,
        key=lambda p: (
            groups[p.group].priority if p.group in groups else p.priority,
            p.group,
            p.priority,
            p.name,
        ),
    )
    for prog in order:
        header = f"# [{prog.section}] {prog.at()}"
        if prog.kind == "fcgi-program":
            warn(
                prog.at(),
                f"[{prog.section}]: not supported (Salvus does not pass a listening socket "
                "to its instances); written out as a comment",
            )
            lines_out += ["", header + ": not converted, Salvus has no fcgi-program"] + [
                f"#   {k} = {v}" for k, v in prog.options.items()
            ]
            continue
        if prog.kind == "eventlistener" and not eventListeners:
            warn(
                prog.at(), f"[{prog.section}]: not converted (event listeners off); written out as a comment"
            )
            lines_out += ["", header + ": not converted"] + [
                f"#   {k} = {v}" for k, v in prog.options.items()
            ]
            continue
        kwargs = _deployArgs(conf, prog, warn, 50 * 1024 * 1024)
        declaration, cls = "Deploy", Deploy
        if prog.kind == "eventlistener":
            from salvusctl.supervisor.eventlistener import EventListener
            from salvusctl.supervisor.events import EVENT_TYPES

            del kwargs["stdin"]  # a listener's stdin is always a pipe: its events arrive there
            for event in prog.events:
                if event not in EVENT_TYPES:
                    warn(
                        prog.at("events"),
                        f"[{prog.section}] events: {event} is not an event Salvus sends; left out",
                    )
            kwargs["events"] = [e for e in prog.events if e in EVENT_TYPES]
            if prog.buffer_size != 10:
                kwargs["buffer_size"] = prog.buffer_size
            declaration, cls = "EventListener", EventListener
            imports.add("from salvusctl.supervisor.eventlistener import EventListener")
        else:
            imports.add("from salvusctl.supervisor.declare import Deploy")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prog.name):
            warn(
                prog.at(),
                f"[{prog.section}]: Salvus refuses this name (letters, digits, '_', '.', '-' "
                "only): rename the section, or the host will not start",
            )
        expected = [p.namespec for p in prog.processes]
        try:
            theirs = salvusNamespecs(cls(prog.name, **kwargs))
        except Exception:  # a name Salvus refuses is the host's validate() error, with its line
            theirs = expected
        if theirs != expected:
            warn(
                prog.at("process_name") if "process_name" in prog.options else prog.at(),
                f"[{prog.section}]: supervisorctl names the processes {', '.join(theirs)} "
                f"(supervisord: {', '.join(expected)})",
            )
        lines_out += ["", header, _call(declaration, [prog.name], kwargs)]

    listeners: list[str] = []
    plain = False
    users: list[str] = []
    for server in conf.servers:
        endpoint, isPlain = _listener(server, warn)
        listeners.append(endpoint)
        plain = plain or isPlain
        for option in server.where:
            if option and option not in _SERVER_OPTIONS[f"{server.kind}_http_server"]:
                warn(server.where[option], f"[{server.section}] {option}: not a supervisord option; ignored")
        if server.username is not None:
            users.append(server.username)
            warn(
                server.where.get("password") or server.where.get(""),
                f"[{server.section}] username={server.username}: the password is not carried over: run "
                f"`salvusctl user add {server.username} --role operator --file {var}/admin-users` before "
                "the first start (else the host makes it with a random password and prints it once)",
            )
        else:
            warn(
                server.where.get(""),
                f"[{server.section}]: no username: supervisord lets anyone who can "
                "reach it in; Salvus asks for a user (the host makes 'admin' with a "
                "random password at the first start and prints it once)",
            )
    admin = []
    if listeners:
        imports.add("from salvusctl.admin.declare import Admin")
        kwargs: dict[str, Any] = {"users": None, "bootstrap_user": users[0] if users else "admin"}
        raw = {"users": 'os.path.join(var, "admin-users")'}
        if plain:
            kwargs["allow_plain_http"] = True
        admin = [
            "",
            "# " + ", ".join(f"[{s.section}] {s.where['']}" for s in conf.servers),
            _call("Admin", listeners, kwargs, raw),
        ]

    for section, where in sections.items():
        kind = section.split(":", 1)[0]
        if kind in (
            "supervisord",
            "program",
            "eventlistener",
            "fcgi-program",
            "group",
            "include",
            "inet_http_server",
            "unix_http_server",
            "supervisorctl",
            "ctlplugin",
        ):
            continue
        if kind == "rpcinterface":
            factory = conf.raw[section].get("supervisor.rpcinterface_factory", "").strip()
            if section == "rpcinterface:supervisor" and factory == _SUPERVISOR_RPC:
                continue
            warn(where, f"[{section}]: not supported: Salvus's XML-RPC namespaces are its own")
            continue
        warn(where, f"[{section}]: not a supervisord section; ignored")

    head = [
        f"# Converted from {source} by `salvusctl import-supervisord`.",
        "# Files read: " + ", ".join(conf.files),
        f"# Run it as: {' '.join(shlex.quote(a) for a in twistd)}",
        "# (the converter's warnings, on stderr, list what Salvus does differently).",
    ]
    body = (
        head
        + ["", "import os", ""]
        + sorted(imports)
        + [
            "",
            f'var = os.environ.get("SALVUS_VAR", {var!r})',
            'host = Host(store="sqlite:" + os.path.join(var, "salvus.db"), var=var)',
        ]
        + lines_out
        + admin
        + ["", "application = host.application()", ""]
    )
    return "\n".join(body), warn.lines


def importMain(argv: Sequence[str], env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """C{salvusctl import-supervisord [--var DIR] FILE}: the host file on C{out}, warnings on C{err};
    exit 0, or 1 with one line when supervisord itself would refuse the file."""
    parser = argparse.ArgumentParser(
        prog="salvusctl import-supervisord",
        description="Write a Salvus host file (.tac) for a supervisord.conf.",
    )
    parser.add_argument("file", metavar="SUPERVISORD.CONF")
    parser.add_argument(
        "--var",
        default="var",
        help="the host's state directory (default ./var; env SALVUS_VAR overrides it when the host starts)",
    )
    args = parser.parse_args(list(argv))
    try:
        conf = readSupervisordConf(args.file, env)
        text, warnings = convert(conf, args.file, args.var)
    except SupervisordConfError as e:
        err.write(f"salvusctl: import-supervisord: {e}\n")
        return 1
    out.write(text)
    for line in warnings:
        err.write(f"warning: {line}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(importMain(sys.argv[1:], os.environ, sys.stdout, sys.stderr))

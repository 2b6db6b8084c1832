"""Read a supervisord.conf the way supervisord 4 reads it, into plain records.

What C{salvusctl import-supervisord} converts from.  supervisord's own reader lives in its
C{options.py}, mixed with forking, logging and servers, and is not a dependency of Salvus; this
module follows the same rules with the standard library only, and its results are tested against
C{supervisor.options.ServerOptions} on the same files:

  - C{configparser.RawConfigParser} with C{;} and C{#} inline comments and C{strict=False} (a
    section or option given twice: the last one wins);
  - C{[include] files=} is a space-separated list of globs relative to the including file, each
    glob's matches read in sorted order; a glob that matches nothing is a warning, not an error;
  - C{%(here)s} is the directory of the file the option was written in; C{%(ENV_X)s} is the
    environment at reading time plus the C{[supervisord]} section's C{environment=}, and inside a
    program its own C{environment=}; C{%(program_name)s}, C{%(group_name)s},
    C{%(host_node_name)s}, C{%(process_num)s} and C{%(numprocs)s} as supervisord gives them;
  - one L{ProcessConf} per process: C{numprocs} from C{numprocs_start}, C{process_name} expanded.

Nothing here starts, binds or checks users: a record says what supervisord would run.  Every
option keeps the C{file:line} it was written at (L{Where}), so a converter can name it.
"""

from __future__ import annotations

import configparser
import glob
import os
import platform
import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SupervisordConfError",
    "Where",
    "ProcessConf",
    "ProgramConf",
    "GroupConf",
    "ServerConf",
    "SupervisordConf",
    "readSupervisordConf",
    "AUTO",
    "IndexMarker",
    "boolean",
    "byteSize",
    "signalName",
    "autoRestart",
]

AUTO = "AUTO"  # supervisord's automatic child log file (a name in childlogdir)


class SupervisordConfError(ValueError):
    """A config supervisord itself would refuse; C{where} names the file and line when known."""

    def __init__(self, message: str, where: Where | None = None):
        super().__init__(f"{where}: {message}" if where is not None else message)
        self.where = where


@dataclass(frozen=True)
class Where:
    """Where an option or a section was written."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


# -- supervisord's value types (supervisor/datatypes.py), as the functions below mirror them ------

_TRUTHY = ("yes", "true", "on", "1")
_FALSY = ("no", "false", "off", "0")


def boolean(value: str) -> bool:
    s = str(value).lower()
    if s in _TRUTHY:
        return True
    if s in _FALSY:
        return False
    raise ValueError(f"not a valid boolean value: {value!r}")


def integer(value: Any) -> int:
    return int(value)


def byteSize(value: str) -> int:
    """C{50MB} -> 52428800 (KB, MB, GB, case-insensitive; a bare number is bytes)."""
    v = str(value).lower()
    for suffix, mult in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3)):
        if v.endswith(suffix):
            return int(v[:-2]) * mult
    return int(v)


def octal(value: str) -> int:
    try:
        return int(value, 8)
    except (TypeError, ValueError):
        raise ValueError(f"{value} can not be converted to an octal type")


def signalName(value: str) -> str:
    """C{term}, C{SIGTERM}, C{15} -> C{'TERM'}."""
    try:
        num = int(value)
    except (TypeError, ValueError):
        name = str(value).strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            num = int(signal.Signals[name])
        except KeyError:
            raise ValueError(f"value {value!r} is not a valid signal name")
    try:
        return signal.Signals(num).name[3:]
    except ValueError:
        raise ValueError(f"value {value!r} is not a valid signal number")


def autoRestart(value: str) -> str:
    """supervisord's C{autorestart} -> C{'always'}, C{'never'} or C{'unexpected'}."""
    v = str(value).lower()
    if v in _TRUTHY:
        return "always"
    if v in _FALSY:
        return "never"
    if v == "unexpected":
        return "unexpected"
    raise ValueError(f"invalid 'autorestart' value {v!r}")


def exitCodes(value: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(v) for v in value.split(",")) if value else ()
    except ValueError:
        raise ValueError(f"not a valid list of exit codes: {value!r}")
    if any(not 0 <= c <= 255 for c in codes):
        raise ValueError(f"not a valid list of exit codes: {value!r}")
    return codes


def listOfStrings(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",")] if value else []


def keyValuePairs(value: str) -> dict[str, str]:
    """C{A="1",B=two} -> {'A': '1', 'B': 'two'}: supervisord's shlex-based reading."""
    lexer = shlex.shlex(str(value))
    lexer.wordchars += "/.+-():"
    tokens = list(lexer)
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        kv = tokens[i : i + 3]
        if len(kv) != 3 or kv[1] != "=":
            raise ValueError(f"Unexpected end of key/value pairs in value '{value}'")
        out[kv[0]] = kv[2].strip("'\"")
        i += 4
    return out


def logfileName(value: Any) -> str | None:
    """C{none}/C{off} -> None, C{auto} -> L{AUTO}, C{syslog} -> C{'syslog'}, else the path."""
    if value is AUTO:
        return AUTO
    v = str(value)
    if v.lower() in ("none", "off"):
        return None
    if v.lower() == "auto":
        return AUTO
    if v.lower() == "syslog":
        return "syslog"
    return os.path.expanduser(v)


def inetAddress(value: str) -> tuple[str, int]:
    host = ""
    text = value
    if ":" in text:
        host, text = text.rsplit(":", 1)
        if not text:
            raise ValueError(f"no port number specified in {value!r}")
        host = host.lower()
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"not a valid port number: {value!r}")
    if not 0 < port <= 65535:
        raise ValueError(f"{port} is not a valid port number")
    if host == "*":
        host = ""
    return host, port


def processOrGroupName(name: str) -> str:
    s = str(name).strip()
    for ch in " :/":
        if ch in s:
            raise ValueError(f"Invalid name: {name!r} because of character: {ch!r}")
    return s


class IndexMarker(int):
    """A process number that prints as Salvus's C{{index}}: expanding an option with it shows
    whether C{%(process_num)s} can become a per-instance template (C{%(process_num)02d} cannot:
    it formats the number, not the text)."""

    def __str__(self) -> str:
        return "{index}"

    __repr__ = __str__


def expand(text: str, expansions: Mapping[str, Any], name: str) -> str:
    """supervisord's C{%(name)s} expansion: Python's C{%} operator over a mapping."""
    try:
        return text % expansions
    except KeyError as e:
        available = ", ".join(sorted(expansions))
        raise ValueError(
            f"Format string {text!r} for {name!r} contains names ({e}) which cannot be "
            f"expanded. Available names: {available}"
        )
    except Exception as e:
        raise ValueError(f"Format string {text!r} for {name!r} is badly formatted: {e}")


# -- the records ----------------------------------------------------------------------------------


@dataclass
class ProcessConf:
    """One process as supervisord runs it: its names, and the options that may differ per process."""

    name: str
    group: str
    program: str
    num: int
    command: str
    directory: str | None
    environment: dict[str, str]
    stdout_logfile: str | None
    stderr_logfile: str | None

    @property
    def namespec(self) -> str:
        """What C{supervisorctl status} prints: C{name}, or C{group:name} when they differ."""
        return self.name if self.name == self.group else f"{self.group}:{self.name}"


@dataclass
class ProgramConf:
    """A C{[program:x]} (or C{[eventlistener:x]}, C{[fcgi-program:x]}) section.

    @ivar options: the raw option values as written (keys lower-case), for what the typed
        fields do not cover.
    @ivar where: option -> where it was written; C{''} is the section header.
    @ivar templated: for C{command}, C{directory} and C{environment}: the value with
        C{%(process_num)s} left as C{{index}} (L{IndexMarker}), when the option uses it.
    """

    kind: str
    name: str
    group: str
    options: dict[str, str]
    where: dict[str, Where]
    priority: int
    autostart: bool
    autorestart: str
    startsecs: int
    startretries: int
    stopsignal: str
    stopwaitsecs: int
    stopasgroup: bool
    killasgroup: bool
    exitcodes: tuple[int, ...]
    redirect_stderr: bool
    numprocs: int
    numprocs_start: int
    user: str | None
    umask: int | None
    process_name: str
    logfile_maxbytes: dict[str, int]
    logfile_backups: dict[str, int]
    processes: list[ProcessConf]
    templated: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    buffer_size: int = 10

    @property
    def section(self) -> str:
        return f"{self.kind}:{self.name}"

    def at(self, option: str = "") -> Where:
        """Where C{option} was written, else the section header."""
        return self.where.get(option) or self.where[""]


@dataclass
class GroupConf:
    name: str
    programs: list[str]
    priority: int
    where: dict[str, Where]


@dataclass
class ServerConf:
    """An C{[inet_http_server]} or C{[unix_http_server]}: C{host}/C{port} or C{file}."""

    kind: str  # 'inet' | 'unix'
    section: str
    where: dict[str, Where]
    host: str = ""
    port: int = 0
    file: str = ""
    chmod: int = 0o700
    chown: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class SupervisordConf:
    """Everything supervisord would read from one config file and its includes.

    @ivar files: the main file, then each included file in reading order.
    @ivar supervisord: the C{[supervisord]} section's raw options.
    @ivar environment: its C{environment=}, expanded (every program inherits it).
    @ivar sections: every section name -> where its header is.
    @ivar warnings: what supervisord itself warns about while reading (an include that matches
        nothing, an AUTO log without rollover …).
    """

    path: str
    files: list[str]
    supervisord: dict[str, str]
    supervisord_where: dict[str, Where]
    environment: dict[str, str]
    programs: list[ProgramConf]
    groups: list[GroupConf]
    servers: list[ServerConf]
    sections: dict[str, Where]
    raw: dict[str, dict[str, str]]
    warnings: list[str]
    env_used: dict[str, Where]

    def processes(self) -> list[ProcessConf]:
        """Every process of every C{[program:]} and C{[eventlistener:]}."""
        return [p for prog in self.programs for p in prog.processes]


# -- reading --------------------------------------------------------------------------------------

_OPTION_RE = re.compile(r"^([^=:\s][^=:]*?)\s*[=:]")
_SECTION_RE = re.compile(r"^\[(?P<header>.+)\]")


def _lineNumbers(
    path: str, text: str, sections: dict[str, Where], options: dict[tuple[str, str], Where]
) -> None:
    """Where each section header and option of C{text} is (a later one wins, as in the parser)."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line[0] in " \t" or line.lstrip()[0] in "#;":
            continue
        m = _SECTION_RE.match(line.strip())
        if m:
            current = m.group("header")
            sections[current] = Where(path, number)
            continue
        m = _OPTION_RE.match(line)
        if m and current is not None:
            options[(current, m.group(1).strip().lower())] = Where(path, number)


class _Reader:
    def __init__(self, path: str, environ: Mapping[str, str], hostname: str):
        self.path = os.path.abspath(path)
        self.here = os.path.dirname(self.path)
        self.hostname = hostname
        self.env_expansions = {f"ENV_{k}": v for k, v in environ.items()}
        self.environ = dict(environ)
        self.parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
        self.sectionWhere: dict[str, Where] = {}
        self.optionWhere: dict[tuple[str, str], Where] = {}
        self.files: list[str] = []
        self.warnings: list[str] = []
        self.env_used: dict[str, Where] = {}

    def where(self, section: str, option: str = "") -> Where:
        if option:
            w = self.optionWhere.get((section, option))
            if w is not None:
                return w
        return self.sectionWhere.get(section, Where(self.path))

    def _readFile(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SupervisordConfError(f"could not read config file {path}: {e}")
        try:
            self.parser.read_string(text, source=path)
        except configparser.Error as e:
            raise SupervisordConfError(str(e).replace("\n", " "), Where(path))
        _lineNumbers(path, text, self.sectionWhere, self.optionWhere)
        self.files.append(path)

    def _expandHere(self, here: str) -> None:
        for section in self.parser.sections():
            for key, value in self.parser.items(section):
                if "%(here)s" in value:
                    self.parser.set(section, key, value.replace("%(here)s", here))

    def _noteEnv(self, text: str, where: Where) -> None:
        for name in re.findall(r"%\(ENV_([^)]*)\)", text):
            self.env_used.setdefault(name, where)

    def get(
        self,
        section: str,
        option: str,
        default: Any = None,
        expansions: Mapping[str, Any] = (),
        do_expand: bool = True,
    ) -> Any:
        """supervisord's C{saneget}: the value, expanded over the environment and C{expansions}."""
        if self.parser.has_option(section, option):
            value = self.parser.get(section, option)
        else:
            return (
                default
                if not isinstance(default, str) or not do_expand
                else self._expand(default, section, option, expansions)
            )
        if not do_expand:
            return value
        return self._expand(value, section, option, expansions)

    def _expand(self, value: str, section: str, option: str, expansions: Mapping[str, Any]) -> str:
        combined = dict(self.env_expansions)
        combined.update(expansions)
        self._noteEnv(value, self.where(section, option))
        try:
            return expand(value, combined, f"{section}.{option}")
        except ValueError as e:
            raise SupervisordConfError(str(e), self.where(section, option))

    def typed(self, section: str, option: str, convert, default: Any, expansions: Mapping[str, Any] = ()):
        raw = self.get(section, option, default, expansions)
        try:
            return convert(raw)
        except (ValueError, TypeError) as e:
            raise SupervisordConfError(f"[{section}] {option}: {e}", self.where(section, option))

    def read(self) -> SupervisordConf:
        self._readFile(self.path)
        expansions = {"here": self.here, "host_node_name": self.hostname, **self.env_expansions}
        if self.parser.has_section("include"):
            self._expandHere(self.here)
            if not self.parser.has_option("include", "files"):
                raise SupervisordConfError(
                    ".ini file has [include] section, but no files setting", self.where("include")
                )
            raw = self.parser.get("include", "files")
            self._noteEnv(raw, self.where("include", "files"))
            try:
                patterns = expand(raw, expansions, "include.files").split()
            except ValueError as e:
                raise SupervisordConfError(str(e), self.where("include", "files"))
            for pattern in patterns:
                pattern = os.path.join(self.here, pattern)
                names = glob.glob(pattern)
                if not names:
                    self.warnings.append(f'No file matches via include "{pattern}"')
                    continue
                for name in sorted(names):
                    self._readFile(name)
                    self._expandHere(os.path.abspath(os.path.dirname(name)))
        if not self.parser.has_section("supervisord"):
            raise SupervisordConfError(".ini file does not include supervisord section", Where(self.path))
        common = {"here": self.here}
        env_str = self.get("supervisord", "environment", "", common)
        try:
            environment = keyValuePairs(expand(env_str, expansions, "environment"))
        except ValueError as e:
            raise SupervisordConfError(str(e), self.where("supervisord", "environment"))
        for k, v in environment.items():
            self.env_expansions[f"ENV_{k}"] = v
        programs, groups = self._programs()
        servers = self._servers()
        return SupervisordConf(
            path=self.path,
            files=self.files,
            supervisord=dict(self.parser.items("supervisord")),
            supervisord_where={k: self.where("supervisord", k) for k, _ in self.parser.items("supervisord")},
            environment=environment,
            programs=programs,
            groups=groups,
            servers=servers,
            sections={s: self.where(s) for s in self.parser.sections()},
            raw={s: dict(self.parser.items(s)) for s in self.parser.sections()},
            warnings=self.warnings,
            env_used=self.env_used,
        )

    def _programs(self) -> tuple[list[ProgramConf], list[GroupConf]]:
        sections = self.parser.sections()
        groups: list[GroupConf] = []
        grouped: dict[str, str] = {}
        for section in sections:
            if not section.startswith("group:"):
                continue
            name = self._name(section)
            programs = listOfStrings(self.get(section, "programs", None, {"here": self.here}))
            priority = self.typed(section, "priority", integer, 999, {"here": self.here})
            for program in programs:
                target = f"program:{program}"
                if target not in sections:
                    if f"fcgi-program:{program}" in sections:
                        target = f"fcgi-program:{program}"
                    else:
                        raise SupervisordConfError(
                            f"[{section}] names unknown program or fcgi-program {program}",
                            self.where(section, "programs"),
                        )
                grouped[target] = name
            groups.append(
                GroupConf(
                    name,
                    programs,
                    priority,
                    {
                        "": self.where(section),
                        **{k: self.where(section, k) for k, _ in self.parser.items(section)},
                    },
                )
            )
        out: list[ProgramConf] = []
        for section in sections:
            kind = section.partition(":")[0]
            if kind not in ("program", "eventlistener", "fcgi-program"):
                continue
            name = self._name(section)
            out.append(self._program(section, kind, name, grouped.get(section, name)))
        return out, groups

    def _name(self, section: str) -> str:
        try:
            return processOrGroupName(section.split(":", 1)[1])
        except ValueError as e:
            raise SupervisordConfError(str(e), self.where(section))

    def _program(self, section: str, kind: str, name: str, group: str) -> ProgramConf:
        common: dict[str, Any] = {
            "here": self.here,
            "program_name": name,
            "host_node_name": self.hostname,
            "group_name": group,
        }
        t = self.typed

        def where(option: str) -> Where:
            return self.where(section, option)

        priority = t(section, "priority", integer, 999, common)  # a pool's own default is -1
        autostart = t(section, "autostart", boolean, "true", common)
        autorestart = t(section, "autorestart", autoRestart, "unexpected", common)
        startsecs = t(section, "startsecs", integer, 1, common)
        startretries = t(section, "startretries", integer, 3, common)
        stopsignal = t(section, "stopsignal", signalName, "TERM", common)
        stopwaitsecs = t(section, "stopwaitsecs", integer, 10, common)
        stopasgroup = t(section, "stopasgroup", boolean, "false", common)
        killasgroup = t(section, "killasgroup", boolean, str(stopasgroup), common)
        exitcodes = t(section, "exitcodes", exitCodes, "0", common)
        redirect_stderr = t(section, "redirect_stderr", boolean, "false", common)
        numprocs = t(section, "numprocs", integer, 1, common)
        numprocs_start = t(section, "numprocs_start", integer, 0, common)
        user = self.get(section, "user", None, common)
        umask = t(section, "umask", octal, None, common) if self.parser.has_option(section, "umask") else None
        maxbytes = {
            s: t(section, f"{s}_logfile_maxbytes", byteSize, "50MB", common) for s in ("stdout", "stderr")
        }
        backups = {s: t(section, f"{s}_logfile_backups", integer, 10, common) for s in ("stdout", "stderr")}
        raw_name = self.get(section, "process_name", "%(program_name)s", do_expand=False)
        try:
            process_name = processOrGroupName(raw_name)
        except ValueError as e:
            raise SupervisordConfError(str(e), where("process_name"))
        if kind == "eventlistener" and redirect_stderr:
            raise SupervisordConfError(
                f"[{section}] section sets redirect_stderr=true but this is not "
                "allowed because it will interfere with the eventlistener protocol",
                where("redirect_stderr"),
            )
        if numprocs > 1 and "%(process_num)" not in process_name:
            raise SupervisordConfError(
                "%(process_num) must be present within process_name when numprocs > 1",
                where("process_name")
                if self.parser.has_option(section, "process_name")
                else where("numprocs"),
            )
        if stopasgroup and not killasgroup:
            raise SupervisordConfError(
                "Cannot set stopasgroup=true and killasgroup=false", where("killasgroup")
            )
        if not self.parser.has_option(section, "command"):
            raise SupervisordConfError(f"program section {section} does not specify a command", where(""))
        env_str = self.get(section, "environment", "", do_expand=False)
        processes = []
        expansions = common
        for num in range(numprocs_start, numprocs_start + numprocs):
            processes.append(
                self._process(section, name, group, num, numprocs, expansions, env_str, process_name)
            )
        templated = self._templated(section, name, group, numprocs, env_str)
        events: list[str] = []
        buffer_size = 10
        if kind == "eventlistener":
            buffer_size = t(section, "buffer_size", integer, 10, {"here": self.here})
            if buffer_size < 1:
                raise SupervisordConfError(
                    f"[{section}] section sets invalid buffer_size ({buffer_size})", where("buffer_size")
                )
            events = sorted(
                {e.upper() for e in listOfStrings(self.get(section, "events", "", {"here": self.here}))}
            )
            if not events:
                raise SupervisordConfError(f'[{section}] section requires an "events" line', where(""))
        return ProgramConf(
            kind=kind,
            name=name,
            group=group,
            options=dict(self.parser.items(section)),
            where={"": self.where(section), **{k: where(k) for k, _ in self.parser.items(section)}},
            priority=priority,
            autostart=autostart,
            autorestart=autorestart,
            startsecs=startsecs,
            startretries=startretries,
            stopsignal=stopsignal,
            stopwaitsecs=stopwaitsecs,
            stopasgroup=stopasgroup,
            killasgroup=killasgroup,
            exitcodes=exitcodes,
            redirect_stderr=redirect_stderr,
            numprocs=numprocs,
            numprocs_start=numprocs_start,
            user=user,
            umask=umask,
            process_name=process_name,
            logfile_maxbytes=maxbytes,
            logfile_backups=backups,
            processes=processes,
            templated=templated,
            events=events,
            buffer_size=buffer_size,
        )

    def _process(
        self,
        section: str,
        program: str,
        group: str,
        num: Any,
        numprocs: int,
        expansions: dict[str, Any],
        env_str: str,
        process_name: str,
    ) -> ProcessConf:
        # One dict updated in place from process to process, as supervisord's own loop does.
        expansions.update({"process_num": num, "numprocs": numprocs})
        expansions.update(self.env_expansions)
        try:
            environment = keyValuePairs(expand(env_str, expansions, "environment"))
        except ValueError as e:
            raise SupervisordConfError(str(e), self.where(section, "environment"))
        self._noteEnv(env_str, self.where(section, "environment"))
        for k, v in environment.items():
            expansions[f"ENV_{k}"] = v
        directory = self.get(section, "directory", None, expansions)
        logfiles: dict[str, str | None] = {}
        for stream in ("stdout", "stderr"):
            key = f"{stream}_logfile"
            value = self.get(section, key, None, expansions)
            if value is not None:
                try:
                    value = expand(value, expansions, key)
                except ValueError as e:
                    raise SupervisordConfError(str(e), self.where(section, key))
            logfiles[stream] = logfileName(AUTO if value is None else value)
        if self.typed(section, "redirect_stderr", boolean, "false", expansions):
            logfiles["stderr"] = None
        command = self.get(section, "command", None, expansions)
        try:
            name = expand(process_name, expansions, "process_name")
        except ValueError as e:
            raise SupervisordConfError(str(e), self.where(section, "process_name"))
        return ProcessConf(
            name=name,
            group=group,
            program=program,
            num=int(num),
            command=command,
            directory=directory,
            environment=environment,
            stdout_logfile=logfiles["stdout"],
            stderr_logfile=logfiles["stderr"],
        )

    def _templated(
        self, section: str, program: str, group: str, numprocs: int, env_str: str
    ) -> dict[str, Any]:
        """C{command}, C{directory} and C{environment} expanded with C{process_num} as C{{index}}."""
        saved = dict(self.env_used)
        expansions: dict[str, Any] = {
            "here": self.here,
            "program_name": program,
            "host_node_name": self.hostname,
            "group_name": group,
        }
        try:
            proc = self._process(
                section, program, group, IndexMarker(0), numprocs, expansions, env_str, "%(program_name)s"
            )
        except SupervisordConfError:
            return {}
        finally:
            self.env_used = saved
        return {"command": proc.command, "directory": proc.directory, "environment": proc.environment}

    def _servers(self) -> list[ServerConf]:
        out = []
        for section in self.parser.sections():
            kind = section.split(":", 1)[0]
            if kind not in ("inet_http_server", "unix_http_server"):
                continue
            wheres = {
                "": self.where(section),
                **{k: self.where(section, k) for k, _ in self.parser.items(section)},
            }
            username = self.get(section, "username", None)
            password = self.get(section, "password", None)
            if (username is None) != (password is None):
                raise SupervisordConfError(
                    f"Section [{section}] contains incomplete authentication: If a username or a password "
                    "is specified, both the username and password must be specified",
                    wheres[""],
                )
            if kind == "inet_http_server":
                port = self.get(section, "port", None)
                if port is None:
                    raise SupervisordConfError(f"section [{section}] has no port value", wheres[""])
                try:
                    host, number = inetAddress(port)
                except ValueError as e:
                    raise SupervisordConfError(str(e), wheres.get("port"))
                out.append(
                    ServerConf(
                        "inet", section, wheres, host=host, port=number, username=username, password=password
                    )
                )
            else:
                sfile = self.get(section, "file", None, {"here": self.here})
                if sfile is None:
                    raise SupervisordConfError(f"section [{section}] has no file value", wheres[""])
                chmod = self.typed(section, "chmod", octal, "0700")
                out.append(
                    ServerConf(
                        "unix",
                        section,
                        wheres,
                        file=os.path.normpath(os.path.abspath(os.path.expanduser(sfile.strip()))),
                        chmod=chmod,
                        chown=self.get(section, "chown", None),
                        username=username,
                        password=password,
                    )
                )
        return out


def readSupervisordConf(
    path: str, environ: Mapping[str, str], hostname: str | None = None
) -> SupervisordConf:
    """Read C{path} (and what it includes) as supervisord would with C{environ} as its environment.

    @raise SupervisordConfError: for what supervisord itself refuses, naming the file and line.
    """
    return _Reader(path, environ, hostname if hostname is not None else platform.node()).read()

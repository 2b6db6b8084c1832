"""The supervisord.conf reader reads what supervisord itself reads.

Each config is read twice: by L{readSupervisordConf} and by supervisord's own
C{supervisor.options.ServerOptions} (the installed supervisor package, a test dependency only),
and every process's names, command, directory, environment and options must agree — so the
converter starts from exactly what supervisord would run.
"""

from __future__ import annotations

import os
import pwd

from supervisor import datatypes
from supervisor.options import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.supervisor.supervisordconf import AUTO, SupervisordConfError, readSupervisordConf
from tests.supervisor import supervisordconfs


def _logfile(value):
    if value is datatypes.Automatic:
        return AUTO
    return value


def _restart(value):
    return {
        datatypes.RestartUnconditionally: "always",
        datatypes.RestartWhenExitUnexpected: "unexpected",
        False: "never",
    }[value]


def theirs(path: str) -> tuple[list[dict], list[dict]]:
    """supervisord's own reading: one dict per process, one per HTTP server."""
    options = ServerOptions()
    options.configfile = path
    options.process_config(do_usage=False)
    processes = []
    for group in options.process_group_configs:
        for p in group.process_configs:
            processes.append(
                {
                    "group": group.name,
                    "name": p.name,
                    "command": p.command,
                    "directory": p.directory,
                    "environment": p.environment,
                    "priority": p.priority,
                    "autostart": p.autostart,
                    "autorestart": _restart(p.autorestart),
                    "startsecs": p.startsecs,
                    "startretries": p.startretries,
                    "stopsignal": p.stopsignal,
                    "stopwaitsecs": p.stopwaitsecs,
                    "stopasgroup": p.stopasgroup,
                    "killasgroup": p.killasgroup,
                    "exitcodes": tuple(p.exitcodes),
                    "redirect_stderr": p.redirect_stderr,
                    "uid": p.uid,
                    "umask": p.umask,
                    "stdout_logfile": _logfile(p.stdout_logfile),
                    "stderr_logfile": _logfile(p.stderr_logfile),
                    "maxbytes": (p.stdout_logfile_maxbytes, p.stderr_logfile_maxbytes),
                    "backups": (p.stdout_logfile_backups, p.stderr_logfile_backups),
                }
            )
    servers = []
    for c in options.configroot.supervisord.server_configs:
        servers.append(
            {
                "file": c.get("file"),
                "host": c.get("host"),
                "port": c.get("port"),
                "username": c["username"],
                "password": c["password"],
                "chmod": c.get("chmod"),
            }
        )
    return processes, servers


def ours(path: str) -> tuple[list[dict], list[dict]]:
    import signal

    conf = readSupervisordConf(path, dict(os.environ))
    processes = []
    for prog in conf.programs:
        for p in prog.processes:
            env = dict(conf.environment)
            env.update(p.environment)
            processes.append(
                {
                    "group": p.group,
                    "name": p.name,
                    "command": p.command,
                    "directory": p.directory,
                    "environment": env,
                    "priority": prog.priority,
                    "autostart": prog.autostart,
                    "autorestart": prog.autorestart,
                    "startsecs": prog.startsecs,
                    "startretries": prog.startretries,
                    "stopsignal": int(signal.Signals["SIG" + prog.stopsignal]),
                    "stopwaitsecs": prog.stopwaitsecs,
                    "stopasgroup": prog.stopasgroup,
                    "killasgroup": prog.killasgroup,
                    "exitcodes": prog.exitcodes,
                    "redirect_stderr": prog.redirect_stderr,
                    "uid": pwd.getpwnam(prog.user).pw_uid if prog.user else None,
                    "umask": prog.umask,
                    "stdout_logfile": p.stdout_logfile,
                    "stderr_logfile": p.stderr_logfile,
                    "maxbytes": (prog.logfile_maxbytes["stdout"], prog.logfile_maxbytes["stderr"]),
                    "backups": (prog.logfile_backups["stdout"], prog.logfile_backups["stderr"]),
                }
            )
    servers = []
    for s in conf.servers:
        servers.append(
            {
                "file": s.file or None,
                "host": s.host if s.kind == "inet" else None,
                "port": s.port if s.kind == "inet" else None,
                "username": s.username,
                "password": s.password,
                "chmod": s.chmod if s.kind == "unix" else None,
            }
        )
    return processes, servers


def _key(d):
    return (d["group"], d["name"])


class ReaderMatchesSupervisordTests(SynchronousTestCase):
    maxDiff = None

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        for name, value in supervisordconfs.MULTI_ENV.items():
            old = os.environ.get(name)
            os.environ[name] = value
            self.addCleanup(
                lambda n=name, o=old: os.environ.pop(n) if o is None else os.environ.__setitem__(n, o)
            )

    def assertSameReading(self, path):
        mine, their = ours(path), theirs(path)
        self.assertEqual(sorted(mine[0], key=_key), sorted(their[0], key=_key))
        self.assertEqual(sorted(mine[1], key=str), sorted(their[1], key=str))
        return mine

    def test_sample(self):
        """supervisord's own sample config: no program, one unix server."""
        processes, servers = self.assertSameReading(supervisordconfs.sample(self.base))
        self.assertEqual(processes, [])
        self.assertEqual([s["file"] for s in servers], [os.path.join(self.base, "supervisor.sock")])

    def test_sampleWithItsProgram(self):
        """The sample's own commented [program:] example, switched on."""
        processes, _ = self.assertSameReading(supervisordconfs.sampleProgram(self.base))
        self.assertEqual([p["name"] for p in processes], ["theprogramname"])

    def test_programsGroupsIncludesAndEnvironment(self):
        """numprocs with process_name, [group:], include globs (one given through %(ENV_X)s),
        %(here)s of the included file, environment= from [supervisord] and from the program."""
        path = supervisordconfs.multi(self.base, os.path.join(self.base, "s.sock"))
        processes, _ = self.assertSameReading(path)
        names = sorted((p["group"], p["name"]) for p in processes)
        self.assertEqual(
            names,
            [
                ("listener", "listener"),
                ("pool", "pool-0"),
                ("pool", "pool-1"),
                ("ticker", "ticker"),
                ("web", "api_00"),
                ("web", "api_01"),
                ("web", "api_02"),
                ("web", "worker"),
            ],
        )
        api = [p for p in processes if p["name"] == "api_01"][0]
        self.assertEqual(api["environment"]["HERE"], os.path.join(self.base, "conf.d"))
        self.assertEqual(api["stdout_logfile"], os.path.join(self.base, "conf.d", "api-1.log"))
        ticker = [p for p in processes if p["name"] == "ticker"][0]
        self.assertIn("ticker token-42 hello", ticker["command"])

    def test_optionLines(self):
        """Every option keeps the file and line it was written at, includes too."""
        path = supervisordconfs.multi(self.base, os.path.join(self.base, "s.sock"))
        conf = readSupervisordConf(path, dict(os.environ))
        api = [p for p in conf.programs if p.name == "api"][0]
        self.assertEqual(str(api.at("numprocs")), os.path.join(self.base, "conf.d", "api.conf") + ":3")
        self.assertEqual(str(api.at()), os.path.join(self.base, "conf.d", "api.conf") + ":1")
        self.assertEqual(
            conf.files,
            [
                path,
                os.path.join(self.base, "conf.d", "api.conf"),
                os.path.join(self.base, "conf.d", "worker.conf"),
                os.path.join(self.base, "extra.ini"),
            ],
        )

    def test_unknownEnvironmentVariable(self):
        """%(ENV_NOPE)s is refused, as supervisord refuses it, naming the file and line."""
        path = os.path.join(self.base, "bad.conf")
        with open(path, "w") as f:
            f.write("[supervisord]\n\n[program:x]\ncommand=/bin/cat %(ENV_IMPORT_NOPE)s\n")
        with self.assertRaises(SupervisordConfError) as e:
            readSupervisordConf(path, {})
        self.assertTrue(str(e.exception).startswith(f"{path}:4: "), str(e.exception))
        self.assertIn("ENV_IMPORT_NOPE", str(e.exception))
        self.assertRaises(ValueError, theirs, path)

    def test_numprocsNeedsProcessNum(self):
        """numprocs > 1 with a process_name that does not vary: refused, as supervisord does."""
        path = os.path.join(self.base, "bad.conf")
        with open(path, "w") as f:
            f.write("[supervisord]\n[program:x]\ncommand=/bin/cat\nnumprocs=2\n")
        with self.assertRaises(SupervisordConfError) as e:
            readSupervisordConf(path, {})
        self.assertIn(f"{path}:4: %(process_num) must be present", str(e.exception))
        self.assertRaises(ValueError, theirs, path)

    def test_includeMatchingNothingWarns(self):
        """An include glob that matches nothing is a warning (supervisord's words), not an error."""
        path = os.path.join(self.base, "s.conf")
        with open(path, "w") as f:
            f.write("[supervisord]\n[include]\nfiles=nothing/*.conf\n")
        conf = readSupervisordConf(path, {})
        self.assertEqual(conf.warnings, [f'No file matches via include "{self.base}/nothing/*.conf"'])

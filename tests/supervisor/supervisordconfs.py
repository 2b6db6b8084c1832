"""supervisord configs the reader and the converter are tested on, written into a directory.

C{sample}: supervisord's own sample (C{echo_supervisord_conf}, from the installed supervisor
package), its paths moved into the test's directory.  C{sampleProgram}: the same with its
commented C{[program:theprogramname]} example switched on (the options that can run here).
C{multi}: programs, numprocs with a process_name template, a group, include globs over two files,
C{%(ENV_X)s} from the environment and from C{[supervisord] environment=}, C{%(here)s} in an
included file, and an event listener.
"""

from __future__ import annotations

import os
import subprocess
import sys

ECHO_CONF = os.path.join(os.path.dirname(sys.executable), "echo_supervisord_conf")

# the sample's commented program options that run on any machine (user=chrism and the like do not)
_SAMPLE_PROGRAM_KEYS = (
    "command",
    "process_name",
    "numprocs",
    "priority",
    "autostart",
    "startsecs",
    "startretries",
    "autorestart",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "redirect_stderr",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
)


def sampleText(base: str) -> str:
    """echo_supervisord_conf's output with /tmp/supervisor* paths moved under C{base}."""
    text = subprocess.run([ECHO_CONF], check=True, capture_output=True, text=True).stdout
    return text.replace("/tmp/supervisor", os.path.join(base, "supervisor"))


def sample(base: str) -> str:
    path = os.path.join(base, "supervisord.conf")
    with open(path, "w") as f:
        f.write(sampleText(base))
    return path


def sampleProgram(base: str) -> str:
    """The sample with C{[program:theprogramname]} (C{command=/bin/cat}) enabled."""
    out = []
    inside = False
    for line in sampleText(base).splitlines():
        if line.startswith(";[program:"):
            inside = True
            out.append(line[1:])
            continue
        if inside and line.startswith(";["):
            inside = False
        if inside and line.startswith(";"):
            key = line[1:].split("=", 1)[0].strip()
            if key in _SAMPLE_PROGRAM_KEYS:
                line = line[1:]
        out.append(line)
    path = os.path.join(base, "supervisord.conf")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return path


CHILD = "import signal, sys; print(sys.argv[1:], flush=True); signal.pause()"


def multi(base: str, sock: str) -> str:
    """The multi-feature config; C{sock} is where its unix server listens (kept short)."""
    os.makedirs(os.path.join(base, "conf.d"), exist_ok=True)
    os.makedirs(os.path.join(base, "logs"), exist_ok=True)
    py = sys.executable
    main = os.path.join(base, "supervisord.conf")
    with open(main, "w") as f:
        f.write(f"""\
[unix_http_server]
file={sock}   ; a short path: unix sockets have a length limit
username = op
password = operator-password-1

[supervisord]
logfile=%(here)s/logs/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s/logs
nodaemon=true
environment=APP_MODE="prod",GREETING=hello

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

[include]
files = conf.d/*.conf %(ENV_IMPORT_EXTRA)s

[program:ticker]
command={py} -c "{CHILD}" %(program_name)s %(ENV_IMPORT_TOKEN)s %(ENV_GREETING)s
directory=%(here)s
stopsignal=INT
startsecs=0

[group:web]
programs=api,worker
priority=5
""")
    with open(os.path.join(base, "conf.d", "api.conf"), "w") as f:
        f.write(f"""\
[program:api]
command={py} -c "{CHILD}" slot=%(process_num)s
numprocs=3
process_name=%(program_name)s_%(process_num)02d
environment=SLOT="%(process_num)s",HERE="%(here)s"
stdout_logfile=%(here)s/api-%(process_num)s.log
autorestart=true
startsecs=0
""")
    with open(os.path.join(base, "conf.d", "worker.conf"), "w") as f:
        f.write(f"""\
[program:worker]
command={py} -c "{CHILD}" worker
startsecs=0
exitcodes=0,2
stopwaitsecs=5

[program:pool]
command={py} -c "{CHILD}" pool
numprocs=2
process_name=pool-%(process_num)d
startsecs=0
""")
    with open(os.path.join(base, "extra.ini"), "w") as f:
        f.write(f"""\
[eventlistener:listener]
command={py} -c "import sys; sys.stdout.write('READY\\\\n'); sys.stdout.flush(); sys.stdin.read()"
events=PROCESS_STATE_EXITED,TICK_60
""")
    return main


MULTI_ENV = {"IMPORT_EXTRA": "extra.ini", "IMPORT_TOKEN": "token-42"}

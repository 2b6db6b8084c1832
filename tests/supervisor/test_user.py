"""C{Deploy(user=...)}: the instance lives as that user, with that user's HOME, USER, LOGNAME and
SHELL, in a run directory it can write; and what would fail at every spawn (a working directory
the user cannot enter, an impossible rlimit) is refused at validation, at the host file's line.

Real child processes, run as C{nobody} (the tests run as root here; they skip otherwise).
"""

from __future__ import annotations

import os
import pwd
import tempfile
import textwrap

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from salvusctl.errors import ConfigError
from salvusctl.host.loading import loadHost
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.service import SupervisorService
from tests.helpers import waitFor
from tests.supervisor import scratch
from tests.supervisor.test_spawnoptions import _nobodysPython

REPORT = ("import os\n"
          "print('env', os.environ['HOME'], os.environ['USER'], os.environ['LOGNAME'], "
          "os.environ['SHELL'], flush=True)\n"
          "print('uid', os.getuid(), flush=True)\n"
          "path = os.path.join(os.environ['SALVUS_RUN_DIR'], 'pid')\n"
          "open(path, 'w').write(str(os.getpid()))\n"
          "print('wrote', path, flush=True)\n")


class UserTests(TestCase):
    timeout = 60
    fast = True
    helper = True

    def service(self, *deploys) -> SupervisorService:
        runDir = scratch(self)
        os.chmod(os.path.dirname(runDir), 0o755)  # as var/run is; mkdtemp makes it root's only
        svc = SupervisorService(reactor, list(deploys), runDir=runDir, reapInterval=0.2,
                                fastSpawn=self.fast, spawnHelper=self.helper)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        svc.startService()
        return svc

    @inlineCallbacks
    def test_environment_and_run_dir_are_the_users(self):
        """HOME, USER, LOGNAME and SHELL are nobody's, and SALVUS_RUN_DIR is writable by it."""
        python = _nobodysPython(self)
        pw = pwd.getpwnam("nobody")
        svc = self.service(Deploy("u", [python, "-c", REPORT], user="nobody", startsecs=0,
                                  autorestart="never"))
        yield waitFor(lambda: len(svc.tailLog("u:0")) >= 3 or svc.tailLog("u:0", 5, "stderr"), timeout=20)
        self.assertEqual(svc.tailLog("u:0", 5, "stderr"), [])
        lines = svc.tailLog("u:0")
        self.assertEqual(lines[0], f"env {pw.pw_dir} nobody nobody {pw.pw_shell}")
        self.assertEqual(lines[1], f"uid {pw.pw_uid}")
        runDir = svc.instances["u:0"].runDir
        self.assertEqual(lines[2], f"wrote {os.path.join(runDir, 'pid')}")
        st = os.stat(runDir)
        self.assertEqual((st.st_uid, st.st_gid), (pw.pw_uid, pw.pw_gid))

    @inlineCallbacks
    def test_deploy_env_wins(self):
        """A HOME the deploy sets itself is kept."""
        python = _nobodysPython(self)
        svc = self.service(Deploy("u", [python, "-c", "import os; print(os.environ['HOME'], flush=True)"],
                                  user="nobody", env={"HOME": "/srv/home"}, startsecs=0,
                                  autorestart="never"))
        yield waitFor(lambda: svc.tailLog("u:0"), timeout=20)
        self.assertEqual(svc.tailLog("u:0"), ["/srv/home"])


class ForkPathUserTests(UserTests):
    fast = False


class SetprivPathUserTests(UserTests):
    helper = False


class UserValidationTests(TestCase):
    """Refused at validation, one line with the host file and line, instead of a spawn error
    retried until FATAL."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to declare user='nobody'")
        self.dir = tempfile.mkdtemp(prefix="salvus-user-test-")  # 0700, root's
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, True))

    def hostError(self, declaration: str) -> ConfigError:
        path = os.path.join(self.dir, "host.tac")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                from salvusctl.host import Host
                from salvusctl.supervisor.deploy import Deploy
                host = Host("a", store="sqlite:{self.dir}/x.db", var="{self.dir}/var")
                host.add({declaration})
                """))
        host = loadHost(path)
        error = self.assertRaises(ConfigError, host.validate)
        self.assertEqual((error.filename, error.lineno), (path, 4), str(error))
        self.assertTrue(str(error).startswith(f"{path}:4: deploy 'w': "), str(error))
        return error

    def test_cwd_the_user_cannot_enter(self):
        inner = os.path.join(self.dir, "inner")
        os.makedirs(inner, mode=0o755)
        error = self.hostError(f"Deploy('w', ['/bin/true'], user='nobody', cwd={inner!r})")
        self.assertIn(f"working directory {inner!r} cannot be entered by user 'nobody': "
                      f"{self.dir} is drwx------ root:root", str(error))

    def test_cwd_the_user_can_enter(self):
        os.chmod(self.dir, 0o755)
        Deploy("w", ["/bin/true"], user="nobody", cwd=self.dir).validate()

    def test_root_enters_anything(self):
        Deploy("w", ["/bin/true"], cwd=self.dir).validate()

    def test_soft_above_hard(self):
        error = self.hostError("Deploy('w', ['/bin/true'], rlimits={'nofile': (4096, 1024)})")
        self.assertIn("rlimit 'nofile': soft limit 4096 is above the hard limit 1024", str(error))

    def test_negative(self):
        error = self.hostError("Deploy('w', ['/bin/true'], rlimits={'core': -5})")
        self.assertIn("rlimit 'core': -5 is negative", str(error))

    def test_nofile_above_the_kernel(self):
        with open("/proc/sys/fs/nr_open") as f:
            most = int(f.read())
        error = self.hostError(f"Deploy('w', ['/bin/true'], rlimits={{'nofile': {most + 1}}})")
        self.assertIn(f"above the kernel's maximum (fs.nr_open = {most})", str(error))

    def test_good_limits_pass(self):
        Deploy("w", ["/bin/true"], rlimits={"nofile": (1024, 4096), "core": -1, "as": 2 << 30}).validate()

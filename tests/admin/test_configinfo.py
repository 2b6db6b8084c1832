"""C{supervisor.getAllConfigInfo} answers every key supervisord 4.3 answers, with Salvus's values:
tools written against supervisord (Ansible's module, dashboards) index rows by those keys."""

from __future__ import annotations

import inspect
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.configinfo import CONFIG_INFO_KEYS, configInfo
from salvusctl.supervisor.deploy import Deploy
from tests.admin.helpers import HarnessTestCase


def _supervisordKeys() -> set[str]:
    """The keys supervisord's own getAllConfigInfo builds, read from its installed source."""
    from supervisor import rpcinterface

    source = inspect.getsource(rpcinterface.SupervisorNamespaceRPCInterface.getAllConfigInfo)
    return set(re.findall(r"'(\w+)':\s*(?:int\()?(?:pconfig|gconfig|inuse)", source))


class ConfigInfoKeysTests(SynchronousTestCase):
    def test_sameKeysAsSupervisord(self):
        """Every key of supervisord's rows, no more and no fewer."""
        self.assertEqual(set(CONFIG_INFO_KEYS), _supervisordKeys())
        self.assertEqual(len(CONFIG_INFO_KEYS), len(set(CONFIG_INFO_KEYS)))

    def test_valuesFromTheDeploy(self):
        """Each value is the deploy's setting in supervisord's spelling (ints, 'none', 'auto')."""
        deploy = Deploy("web", command=["python", "-m", "http.server", "8000"], cwd="/srv",
                        user=str(os.getuid()), priority=5, autostart=False, startsecs=3,
                        startretries=7, exitcodes=(0, 2), stopsignal="INT", stopwaitsecs=4,
                        redirect_stderr=True, log_max_bytes=1024, log_backups=2)
        row = configInfo(deploy, "web", "web", True, "/var/log/web.out", "")
        self.assertEqual(set(row), set(CONFIG_INFO_KEYS))
        self.assertEqual(row["command"], "python -m http.server 8000")
        self.assertEqual(row["directory"], "/srv")
        self.assertEqual(row["uid"], os.getuid())
        self.assertEqual((row["group_prio"], row["process_prio"]), (5, 5))
        self.assertIs(row["autostart"], False)
        self.assertEqual((row["startsecs"], row["startretries"]), (3, 7))
        self.assertEqual(row["exitcodes"], [0, 2])
        self.assertEqual((row["stopsignal"], row["stopwaitsecs"]), (2, 4))
        self.assertIs(row["redirect_stderr"], True)
        self.assertEqual((row["stdout_logfile"], row["stderr_logfile"]), ("/var/log/web.out", "none"))
        self.assertEqual((row["stdout_logfile_maxbytes"], row["stdout_logfile_backups"]), (1024, 2))
        self.assertEqual(row["serverurl"], "none")
        bare = configInfo(Deploy("w", command=["true"]), "w", "w", False)
        self.assertEqual((bare["directory"], bare["uid"]), ("none", "none"))


class ConfigInfoRPCTests(HarnessTestCase):
    def test_everyRowHasEveryKey(self):
        rows = self.call("supervisor.getAllConfigInfo")
        self.assertTrue(rows)
        for row in rows:
            self.assertEqual(set(row), set(CONFIG_INFO_KEYS), row)

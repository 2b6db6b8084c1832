"""After `make run`, the README's bare `salvusctl status` reaches the demo host, and the host says
how: a real `twistd -n salvus` in a temporary directory, then the venv's real `salvusctl` run from
that directory with no URL, no user and no config of its own.
"""

from __future__ import annotations

import os
import re
import stat
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from salvusctl.demo.banner import bannerLines
from tests.demohost import DemoHost
from tests.helpers import childEnv

SALVUSCTL = os.path.join(os.path.dirname(sys.executable), "salvusctl")


class BannerLinesTests(SynchronousTestCase):
    def test_first_start_names_urls_password_file_and_command(self):
        lines = bannerLines(["http://127.0.0.1:8080/"], ["https://127.0.0.1:8443/"], "admin",
                            "/x/var/salvusctl.conf", True, "/x/var/admin/admin.crt", "AB:CD",
                            ".venv/bin/salvusctl status")
        self.assertEqual(lines, [
            "salvus demo: up",
            "salvus demo: open http://127.0.0.1:8080/  (the balanced demo workers)",
            "salvus demo: open https://127.0.0.1:8443/  (the admin pages, user admin)",
            "salvus demo: admin certificate /x/var/admin/admin.crt (SHA-256 AB:CD)",
            "salvus demo: the admin password is in /x/var/salvusctl.conf (password = …, mode 0600)",
            "salvus demo: next, try: .venv/bin/salvusctl status",
        ])

    def test_no_password_file_says_how_to_set_one(self):
        lines = bannerLines([], [], "admin", None, False, None, None, "salvusctl status")
        self.assertIn("salvus demo: the admin password was written at first start to "
                      "var/admin/admin.password; `salvusctl user passwd admin` sets a new one", lines)


class BareSalvusctlTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_bare_salvusctl_status_and_restart_reach_the_demo_host(self):
        demo = DemoHost(self)
        yield demo.start(patience=40)
        tmp, web, admin = demo.tmp, demo.web, demo.admin
        text = demo.proto.output.decode(errors="replace")
        self.assertIn(f"salvus demo: open http://127.0.0.1:{web}/  (the balanced demo workers)", text)
        self.assertIn(f"salvus demo: open https://127.0.0.1:{admin}/  (the admin pages, user admin)", text)
        conf = os.path.join(tmp, "var", "salvusctl.conf")
        self.assertIn(f"salvus demo: the admin password is in {conf} (password = …, mode 0600)", text)
        self.assertEqual(stat.S_IMODE(os.stat(conf).st_mode), 0o600)
        password = demo.password()
        self.assertNotIn(password, text)
        with open(conf) as f:
            self.assertIn(f"password = {password}\n", f.read())
        command = re.search(r"salvus demo: next, try: (.+)", text).group(1).split()
        self.assertEqual(command, [SALVUSCTL, "status"])
        # The banner comes after the listeners: the admin's socket is there when it is printed.
        self.assertTrue(os.path.exists(os.path.join(tmp, "var", "admin.sock")))

        # The CLI's own environment: no SALVUS_* settings and a HOME without ~/.salvusctl.conf.
        cli_env = {k: v for k, v in childEnv(HOME=tmp).items() if not k.startswith("SALVUS_")}
        deadline = reactor.seconds() + 40
        while True:
            out, err, code = yield getProcessOutputAndValue(command[0], command[1:], env=cli_env, path=tmp)
            if code == 0 or reactor.seconds() > deadline:
                break
            self.assertEqual(code, 3, (out, err))  # reached, a worker still STARTING
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((code, err), (0, b""), out)
        self.assertEqual(len(re.findall(rb"^worker:\d\s+RUNNING", out, re.M)), 2, out)
        # The README's next line, bare as well: a rolling restart of the demo's workers.
        out, err, code = yield getProcessOutputAndValue(command[0], ["restart", "worker:*"], env=cli_env,
                                                        path=tmp)
        self.assertEqual((code, err), (0, b""), out)

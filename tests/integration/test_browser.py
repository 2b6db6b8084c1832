"""The admin's pages on a real host, in a real headless Chromium (Playwright, Debian's chromium).

An operator stops and starts the deploy's real child process and drains a real balancer backend by
clicking; the pages reload themselves (no JavaScript) until the state shows.  Screenshots go to
test-artifacts/integration/.
"""

from __future__ import annotations

import os

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.admin.test_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, _missing
from tests.integration.helpers import OPERATOR, RealHost

ARTIFACTS = os.path.join(ROOT, "test-artifacts", "integration")


def browse(base: str, artifacts: str) -> dict:
    """The browser session (blocking; runs in a thread while the reactor serves the host)."""
    from playwright.sync_api import expect, sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                http_credentials={"username": OPERATOR[0], "password": OPERATOR[1]},
                viewport={"width": 1200, "height": 800},
            )
            page = context.new_page()
            page.goto(base + "/deploys")
            state = page.locator("#inst-web-0 .state")
            expect(state).to_have_text("RUNNING")
            page.screenshot(path=os.path.join(artifacts, "deploys-running.png"), full_page=True)
            page.locator("#inst-web-0 button", has_text="stop").click()
            expect(page.locator(".flash")).to_contain_text("stop web:0")
            expect(state).to_have_text("STOPPED", timeout=15000)
            seen["stopped"] = state.inner_text()
            page.screenshot(path=os.path.join(artifacts, "deploys-stopped.png"), full_page=True)
            page.locator("#inst-web-0 button", has_text="start").click()
            expect(state).to_have_text("RUNNING", timeout=15000)
            seen["started"] = state.inner_text()

            page.click("header >> text=Balancer")
            page.locator("#host-www-main-twisted button", has_text="drain").click()
            expect(page.locator(".flash")).to_contain_text("drain")
            page.screenshot(path=os.path.join(artifacts, "balancer.png"), full_page=True)
            page.click("header >> text=Backups")
            expect(page.locator("table.backups")).to_contain_text("files")
            page.screenshot(path=os.path.join(artifacts, "backups.png"), full_page=True)
            context.close()
        finally:
            browser.close()
    return seen


class BrowserTests(TestCase):
    timeout = 120
    skip = _missing()

    @defer.inlineCallbacks
    def test_operatorClicksOnARealHost(self):
        """Stop, start and drain by clicking change the real child process and balancer."""
        host = RealHost(os.path.abspath(self.mktemp()), refresh=1)
        self.addCleanup(host.stop)
        yield host.start()
        os.makedirs(ARTIFACTS, exist_ok=True)
        pid = host.instance()["pid"]
        seen = yield threads.deferToThread(browse, host.admin_url, ARTIFACTS)
        self.assertEqual((seen["stopped"], seen["started"]), ("STOPPED", "RUNNING"))
        self.assertNotEqual(host.instance()["pid"], pid)
        self.assertEqual(host.balancerHost("main", "twisted")["admin"], "drain")
        for name in ("deploys-running", "deploys-stopped", "balancer", "backups"):
            self.assertGreater(os.path.getsize(os.path.join(ARTIFACTS, name + ".png")), 1000)

"""The pages in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Logs in with basic auth, stops a deploy by clicking its button, and watches its state change as
the page refreshes itself (no JavaScript on the pages).  Screenshots go to test-artifacts/admin/.
The browser runs in a worker thread; the admin serves from the test's reactor meanwhile.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from salvusctl.admin.build import AdminService
from salvusctl.admin.declare import Admin
from salvusctl.admin.state import AdminState
from salvusctl.testing import FakeAlerts, FakeBalancer, FakeMonitor, FakeSupervisor
from tests.admin.helpers import OP, VIEW, tempDir, writeUsers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(ROOT, "test-artifacts", "admin")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browse(base: str, artifacts: str) -> dict:
    """The browser session (blocking; runs in a thread).  Returns what it saw."""
    from playwright.sync_api import expect, sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            anonymous = browser.new_context()
            # without credentials a headless browser cannot prompt: ask like a browser would
            seen["anonymous"] = anonymous.request.get(base + "/").status
            anonymous.close()

            context = browser.new_context(
                http_credentials={"username": OP[0], "password": OP[1]},
                viewport={"width": 1200, "height": 800},
            )
            page = context.new_page()
            response = page.goto(base + "/")
            seen["overview"] = response.status
            seen["headers"] = response.headers
            page.screenshot(path=os.path.join(artifacts, "overview.png"), full_page=True)

            page.click("header >> text=Deploys")
            state = page.locator("#inst-web-0 .state")
            expect(state).to_have_text("RUNNING")
            page.screenshot(path=os.path.join(artifacts, "deploys-before.png"), full_page=True)

            page.locator("#inst-web-0 button", has_text="stop").click()
            expect(page.locator(".flash")).to_contain_text("stop web:0: requested")
            seen["after_click"] = state.inner_text()
            page.screenshot(path=os.path.join(artifacts, "deploys-stopping.png"), full_page=True)
            # the page reloads itself every second; the fake takes 1.5 s to stop
            expect(state).to_have_text("STOPPED", timeout=15000)
            seen["final"] = state.inner_text()
            page.screenshot(path=os.path.join(artifacts, "deploys-stopped.png"), full_page=True)

            page.click("#inst-web-1 a")
            expect(page.locator("svg.chart")).to_have_count(2)
            page.screenshot(path=os.path.join(artifacts, "instance.png"), full_page=True)
            page.click("header >> text=Balancer")
            page.locator("#host-www-web-127-0-0-1-8000 button", has_text="drain").click()
            expect(page.locator(".flash")).to_contain_text("drain")
            page.screenshot(path=os.path.join(artifacts, "balancer.png"), full_page=True)
            context.close()

            viewer = browser.new_context(http_credentials={"username": VIEW[0], "password": VIEW[1]})
            vpage = viewer.new_page()
            vpage.goto(base + "/deploys")
            seen["viewer_buttons"] = vpage.locator("button").count()
            viewer.close()
        finally:
            browser.close()
    return seen


def _missing() -> str | None:
    """Why this machine cannot run the browser test (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs Playwright from PyPI (pip install playwright; the system chromium is used)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"needs {CHROMIUM} (apt-get install chromium)"
    return None


class BrowserTests(TestCase):
    timeout = 120
    skip = _missing()

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        users = os.path.join(self.tmp, "users")
        writeUsers(users)
        self.supervisor = FakeSupervisor({"web": 2, "worker": 1}, clock=reactor, stop_delay=1.5)
        monitor = FakeMonitor(self.supervisor)
        now = reactor.seconds()
        for i in range(30):
            monitor.record("web:1", now - 1800 + i * 60, 20 + (i % 7) * 5, 60_000_000 + i * 500_000)
        alerts = FakeAlerts()
        alerts.fire("rss-high", "web:1", "resident memory above 50 MiB", now - 120)
        self.balancer = FakeBalancer()
        services = {
            "supervisor": self.supervisor,
            "balancer": self.balancer,
            "monitor": monitor,
            "alerts": alerts,
        }
        state = AdminState(services=services, clock=reactor, host_name="browserhost")
        admin = Admin("tcp:0:interface=127.0.0.1", users=users, refresh=1, project_url="https://example.org/")
        self.service = AdminService(reactor, [admin], state, self.tmp)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.ready
        self.base = f"http://127.0.0.1:{ports[0].getHost().port}"
        os.makedirs(ARTIFACTS, exist_ok=True)

    @defer.inlineCallbacks
    def test_stopByClicking(self):
        """An operator logs in, clicks stop, and sees STOPPING then STOPPED as the page refreshes."""
        seen = yield threads.deferToThread(browse, self.base, ARTIFACTS)
        self.assertEqual(seen["anonymous"], 401)
        self.assertEqual(seen["overview"], 200)
        self.assertEqual(seen["headers"]["x-frame-options"], "DENY")
        self.assertRegex(seen["after_click"], re.compile("STOPPING|STOPPED"))
        self.assertEqual(seen["final"], "STOPPED")
        self.assertEqual(self.supervisor.instanceInfo("web:0")["state"], "STOPPED")
        self.assertEqual(
            self.balancer.services["www"]["groups"]["web"]["hosts"]["127.0.0.1:8000"]["state"], "drain"
        )
        self.assertEqual(seen["viewer_buttons"], 0)
        for name in (
            "overview",
            "deploys-before",
            "deploys-stopping",
            "deploys-stopped",
            "instance",
            "balancer",
        ):
            self.assertGreater(os.path.getsize(os.path.join(ARTIFACTS, name + ".png")), 1000)

"""The server-rendered pages, driven in memory with StubTreq (real HTTP parsing, no socket)."""

from __future__ import annotations

import os
import re
from urllib.parse import urlencode

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.charts import lineChart
from salvusctl.admin.state import AdminOptions
from tests.admin.helpers import OP, VIEW, Harness, tempDir

FORM = {b"Content-Type": [b"application/x-www-form-urlencoded"]}


class PageTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempDir(self)
        os.makedirs(self.tmp, exist_ok=True)
        self.h = Harness(self.tmp, options=AdminOptions(refresh=7, project_url="https://example.org/proj"))
        now = self.h.clock.seconds()
        for i in range(10):
            self.h.monitor.record("web:0", now - 600 + i * 60, 5.0 + i, 40_000_000 + i * 2_000_000)
        self.h.alerts.fire("cpu-high", "web:0", "cpu above 75%", now - 100)

    def get(self, path, user=OP):
        response, body = self.h.request(self, "GET", path, user=user)
        return response, body.decode()

    def post(self, path, fields, user=OP, headers=None):
        all_headers = dict(FORM)
        all_headers.update(headers or {})
        return self.h.request(
            self, "POST", path, user=user, headers=all_headers, data=urlencode(fields).encode()
        )

    def token(self, user=OP):
        _, body = self.get("/deploys", user=user)
        return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)

    def test_overview(self):
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertIn("3 / 3", body)  # instances running
        self.assertIn("2 / 2", body)  # backends up
        self.assertIn("cpu-high", body)
        self.assertIn('<meta http-equiv="refresh" content="7">', body)
        self.assertIn('href="https://example.org/proj"', body)
        self.assertNotIn("<script", body)

    def test_deploysTable(self):
        self.h.supervisor.emit("web:0", "serving on 8000")
        response, body = self.get("/deploys")
        self.assertIn('id="inst-web-0"', body)
        self.assertIn("14.0%", body)  # the latest cpu sample of web:0
        self.assertIn("55.3 MiB", body)
        self.assertIn('action="/deploys/web%3A0/stop"', body)
        self.assertIn("<code>serving on 8000", body)  # the last line of output

    def test_viewerSeesNoButtons(self):
        _, body = self.get("/deploys", user=VIEW)
        self.assertNotIn("<form", body)
        self.assertIn("view (viewer)", body)

    def test_stopByForm(self):
        """A POST with the token stops the instance and redirects back with a message."""
        response, _ = self.post("/deploys/web:0/stop", {"csrf": self.token()})
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertTrue(location.startswith("/deploys?msg="), location)
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "STOPPED")
        _, body = self.get(location)
        self.assertIn("stop web:0: requested", body)
        response, _ = self.post("/deploys/web:0/start", {"csrf": self.token()})
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "RUNNING")
        pid = self.h.supervisor.instanceInfo("web:1")["pid"]
        self.post("/deploys/web:1/restart", {"csrf": self.token(), "back": "/instance/web%3A1"})
        self.assertNotEqual(self.h.supervisor.instanceInfo("web:1")["pid"], pid)

    def test_deployRestartButtonIsRolling(self):
        """The deploy-level restart button restarts one instance at a time (drained first in a
        balanced deploy), never the whole deploy at once."""
        _, body = self.get("/deploys")
        self.assertIn('action="/deploys/web%3A%2A/restart"', body)
        self.assertIn("2 of 2 running", body)
        events = []
        self.h.supervisor.addObserver(lambda name, old, new, info: events.append((name, new.name)))
        response, _ = self.post("/deploys/web%3A%2A/restart", {"csrf": self.token()})
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        _, body = self.get(location)
        self.assertIn("restart web:*: rolling restart requested", body)
        self.assertEqual(
            [e for e in events if e[1] in ("STOPPED", "RUNNING")],
            [("web:0", "STOPPED"), ("web:0", "RUNNING"), ("web:1", "STOPPED"), ("web:1", "RUNNING")],
        )
        response, _ = self.post("/deploys/ghost%3A%2A/restart", {"csrf": self.token()})
        _, body = self.get(response.headers.getRawHeaders(b"location")[0].decode())
        self.assertIn("no group", body)
        response, _ = self.post("/deploys/web%3A%2A/restart", {})
        self.assertEqual(response.code, 403)

    def test_noOpenRedirect(self):
        """The form's `back` field only ever sends the browser to one of our own pages."""
        for back, expected in [
            ("/instance/web%3A0", "/instance/web%3A0?"),
            ("//evil.example/x", "/deploys?"),
            ("/\\evil.example", "/deploys?"),
            ("https://evil.example/", "/deploys?"),
            ("/", "/deploys?"),
        ]:
            self.h.supervisor.startInstance("web:0")
            response, _ = self.post("/deploys/web:0/stop", {"csrf": self.token(), "back": back})
            location = response.headers.getRawHeaders(b"location")[0].decode()
            self.assertTrue(location.startswith(expected), (back, location))

    def test_actionFaultShownAsMessage(self):
        response, _ = self.post("/deploys/web:0/start", {"csrf": self.token()})
        location = response.headers.getRawHeaders(b"location")[0].decode()
        _, body = self.get(location)
        self.assertIn("ALREADY_STARTED", body)
        self.assertIn('class="flash error"', body)

    def test_csrf(self):
        """No token, a wrong token, another user's token, or a foreign Origin: 403, nothing done."""
        for fields, headers in [
            ({}, {}),
            ({"csrf": "0" * 64}, {}),
            ({"csrf": self.token()}, {b"Origin": [b"https://evil.example"]}),
            ({"csrf": self.token()}, {b"Origin": [b"null"]}),
            ({"csrf": self.token()}, {b"Origin": [b"https://localhost"]}),  # scheme compared
            ({"csrf": self.token()}, {b"Origin": [b"http://localhost:8080"]}),  # port compared
            ({"csrf": self.token()}, {b"Referer": [b"https://evil.example/page"]}),
        ]:
            response, body = self.post("/deploys/web:0/stop", fields, headers=headers)
            self.assertEqual(response.code, 403, body)
        response, body = self.h.request(
            self, "POST", "/deploys/web:0/stop?csrf=" + self.token(), headers=dict(FORM), data=b"x=1"
        )
        self.assertEqual(response.code, 403, body)  # the token is never read from the query string
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "RUNNING")
        response, _ = self.post(
            "/deploys/web:0/stop", {"csrf": self.token()}, headers={b"Origin": [b"http://localhost"]}
        )
        self.assertEqual(response.code, 303)

    def test_csrfTokenChangesWithThePassword(self):
        """A password change makes the forms' old token stale."""
        before = self.token()
        self.h.users.passwd(OP[0], OP[1])
        self.assertNotEqual(self.token(), before)
        response, _ = self.post("/deploys/web:0/stop", {"csrf": before})
        self.assertEqual(response.code, 403)

    def test_viewerCannotPost(self):
        response, body = self.post("/deploys/web:0/stop", {"csrf": self.token(OP)}, user=VIEW)
        self.assertEqual(response.code, 403)
        self.assertIn(b"operator", body)
        self.assertEqual(self.h.supervisor.instanceInfo("web:0")["state"], "RUNNING")

    def test_instanceHistory(self):
        self.h.supervisor.emit("web:0", "serving on 8000")
        response, body = self.get("/instance/web:0")
        self.assertEqual(response.code, 200)
        self.assertEqual(body.count("<svg"), 2)
        self.assertIn("10 samples", body)
        self.assertIn("<polyline", body)
        self.assertIn("serving on 8000", body)
        _, body = self.get("/instance/web:0?minutes=5")
        self.assertIn("last 5 minutes, 5 samples", body)
        response, body = self.get("/instance/ghost:9")
        self.assertEqual(response.code, 404)

    def test_balancerControls(self):
        _, body = self.get("/balancer")
        self.assertIn("127.0.0.1:8000", body)
        self.assertIn("roundrobin", body)
        token = self.token()
        fields = {"csrf": token, "service": "www", "group": "web", "host": "127.0.0.1:8000"}
        response, _ = self.post("/balancer/state", {**fields, "state": "drain"})
        self.assertEqual(response.code, 303)
        hosts = self.h.balancer.services["www"]["groups"]["web"]["hosts"]
        self.assertEqual(hosts["127.0.0.1:8000"]["state"], "drain")
        self.post("/balancer/state", {**fields, "state": "down"})
        self.assertEqual(hosts["127.0.0.1:8000"]["state"], "maint")
        self.post("/balancer/weight", {**fields, "weight": "9"})
        self.assertEqual(hosts["127.0.0.1:8000"]["weight"], 9)
        response, _ = self.post("/balancer/weight", {**fields, "weight": "lots"})
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertIn("err=1", location)
        response, _ = self.post("/balancer/state", {**fields, "host": "nope", "state": "up"})
        self.assertIn("err=1", response.headers.getRawHeaders(b"location")[0].decode())

    def test_alertsPage(self):
        _, body = self.get("/alerts")
        self.assertIn("cpu above 75%", body)

    def test_escaping(self):
        """Names from services are escaped (an instance name cannot inject markup)."""
        self.h.alerts.fire("<script>x</script>", "s", "m", 0)
        _, body = self.get("/alerts")
        self.assertNotIn("<script>x", body)
        self.assertIn("&lt;script&gt;", body)

    def test_missingServices(self):
        h = Harness(self.tmp, services={})
        for path in ("/", "/deploys", "/balancer", "/alerts"):
            response, body = h.request(self, "GET", path)
            self.assertEqual(response.code, 200, path)
        _, body = h.request(self, "GET", "/balancer")
        self.assertIn(b"This host runs no balancer", body)

    def test_unknownRoute(self):
        response, body = self.get("/nope")
        self.assertEqual(response.code, 404)


class ChartTests(SynchronousTestCase):
    def test_chart(self):
        svg = lineChart([(0, 1.0), (60, 3.0), (120, 2.0)], "CPU %")
        self.assertTrue(svg.startswith("<svg"))
        self.assertEqual(svg.count("<polyline"), 1)
        self.assertIn("3.0", svg)

    def test_tooFewPoints(self):
        self.assertIn("not enough samples", lineChart([(0, 1.0)], "x"))
        self.assertIn("not enough samples", lineChart([], "x"))

    def test_flatLine(self):
        self.assertIn("<polyline", lineChart([(0, 0.0), (1, 0.0)], "x"))


class LogtailTests(SynchronousTestCase):
    def test_unknownInstanceOrStream(self):
        h = Harness(tempDir(self))
        response, body = h.request(self, "GET", "/logtail/ghost:1")
        self.assertEqual(response.code, 404)
        self.assertIn(b"BAD_NAME", body)
        response, body = h.request(self, "GET", "/logtail/web:0/journal")
        self.assertEqual(response.code, 404)

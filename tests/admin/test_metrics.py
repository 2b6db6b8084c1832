"""/metrics: the Prometheus text format, parsed back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.admin.helpers import VIEW, Harness, HarnessTestCase


class MetricsTests(HarnessTestCase):
    def scrape(self, harness=None):
        h = harness or self.h
        response, body = h.request(self, "GET", "/metrics", user=VIEW)
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
        )
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def test_monitorDroppedRows(self):
        """The monitor's dropped-rows total is a counter."""
        self.h.monitor.dropped_rows = 7
        m = self.scrape()
        self.assertEqual(m[("salvus_monitor_dropped_rows_total", ())], 7)

    def test_figures(self):
        self.h.monitor.record("web:0", 1.0, 12.5, 123456789)
        host = self.h.balancer.services["www"]["groups"]["web"]["hosts"]["127.0.0.1:8000"]
        host.update(active=3, total=5_000_000_000, bytes_in=10, bytes_out=2**40, faults=2)
        self.h.supervisor.stopInstance("web:1")
        self.h.alerts.fire("a", "b", "c", 0)
        m = self.scrape()
        self.assertEqual(m[("salvus_up", (("host", "testhost"),))], 1)
        self.assertEqual(m[("salvus_instance_running", (("deploy", "web"), ("instance", "web:1")))], 0)
        self.assertEqual(
            m[("salvus_instance_state", (("deploy", "web"), ("instance", "web:0"), ("state", "RUNNING")))], 20
        )
        self.assertEqual(m[("salvus_instance_cpu_percent", (("instance", "web:0"),))], 12.5)
        self.assertEqual(m[("salvus_instance_resident_bytes", (("instance", "web:0"),))], 123456789)
        key = (("group", "web"), ("host", "127.0.0.1:8000"), ("service", "www"))
        self.assertEqual(m[("salvus_balancer_host_active_connections", key)], 3)
        self.assertEqual(m[("salvus_balancer_host_connections_total", key)], 5_000_000_000)
        self.assertEqual(m[("salvus_balancer_host_sent_bytes_total", key)], 2**40)
        self.assertEqual(m[("salvus_balancer_host_faults_total", key)], 2)
        self.assertEqual(m[("salvus_balancer_host_up", key)], 1)
        self.assertEqual(m[("salvus_alerts_active", ())], 1)
        self.assertEqual(m[("salvus_scrape_errors", ())], 0)

    def test_transitionCounters(self):
        """State changes observed from the supervisor become counters (restarts, crashes)."""
        from salvusctl.admin.metrics import TransitionCounter

        counter = TransitionCounter()
        self.h.state.transitions = counter
        self.h.supervisor.addObserver(counter)
        self.h.supervisor.restartInstance("web:0")
        self.h.supervisor.restartInstance("web:0")
        m = self.scrape()
        labels = (("deploy", "web"), ("instance", "web:0"))

        def key(state):
            return ("salvus_instance_transitions_total", (*labels, ("state", state)))

        self.assertEqual(m[key("STOPPED")], 2)
        self.assertEqual(m[key("RUNNING")], 2)

    def test_failingServiceDoesNotBreakScrape(self):
        def boom():
            raise RuntimeError("balancer gone")

        self.h.balancer.snapshot = boom
        m = self.scrape()
        self.assertEqual(m[("salvus_scrape_errors", ())], 1)
        self.assertIn(("salvus_instance_running", (("deploy", "web"), ("instance", "web:0"))), m)

    def test_emptyHost(self):
        m = self.scrape(Harness(self.tmp, services={}))
        self.assertEqual(m[("salvus_up", (("host", "testhost"),))], 1)

"""C{/metrics}: the host's figures in the Prometheus text format, gathered at scrape time."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from salvusctl.admin import shapes
from salvusctl.admin.extensions import IAlertSource
from salvusctl.admin.state import AdminState

__all__ = ["HostCollector", "TransitionCounter", "renderMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class TransitionCounter:
    """A supervisor observer counting each instance's state changes (restarts, crashes …).

    Registered with C{ISupervisor.addObserver} while the admin runs; the counts are what
    Prometheus rates are computed from (e.g. how often an instance went BACKOFF this hour).
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def __call__(self, name: str, old_state: Any, new_state: Any, info: Any) -> None:
        info = info or {}
        if info.get("event", "state") != "state":
            return  # the real supervisor also reports probe readiness ('ready' / 'unready')
        group = str(info.get("group") or str(name).partition(":")[0])
        # The real supervisor passes ProcessState members (int codes with a .name); fakes pass names.
        key = (str(name), group, str(getattr(new_state, "name", new_state)))
        self.counts[key] = self.counts.get(key, 0) + 1


class HostCollector(Collector):
    """Reads the supervisor, balancer, monitor and alerts of one host on each scrape.

    A service that is absent (or fails while being read) contributes no samples; the scrape still
    succeeds, with C{salvus_scrape_errors} counting the failures.
    """

    def __init__(self, state: AdminState):
        self.state = state

    def collect(self):
        errors = 0
        up = GaugeMetricFamily("salvus_up", "The host answers.", labels=["host"])
        up.add_metric([self.state.host_name], 1)
        yield up
        for part in (self._supervisor, self._monitor, self._balancer, self._alerts):
            try:
                yield from part()
            except Exception:
                errors += 1
        yield GaugeMetricFamily("salvus_scrape_errors", "Services that failed to report.", value=errors)

    def _supervisor(self):
        sup = self.state.optional("supervisor")
        if sup is None:
            return
        state = GaugeMetricFamily(
            "salvus_instance_state",
            "supervisord state code of each instance.",
            labels=["instance", "deploy", "state"],
        )
        running = GaugeMetricFamily(
            "salvus_instance_running", "1 when the instance is RUNNING.", labels=["instance", "deploy"]
        )
        uptime = GaugeMetricFamily(
            "salvus_instance_uptime_seconds",
            "Seconds since the instance started.",
            labels=["instance", "deploy"],
        )
        for info in sup.instanceInfos():
            labels = [str(info["name"]), str(info.get("group", ""))]
            state.add_metric(labels + [str(info.get("state"))], _num(info.get("statecode")))
            is_running = info.get("state") == "RUNNING"
            running.add_metric(labels, 1 if is_running else 0)
            uptime.add_metric(
                labels, max(0.0, _num(info.get("now")) - _num(info.get("start"))) if is_running else 0
            )
        yield state
        yield running
        yield uptime
        transitions = getattr(self.state, "transitions", None)
        if transitions is not None:
            family = CounterMetricFamily(
                "salvus_instance_transitions",
                "State changes of each instance since the admin started, by new state.",
                labels=["instance", "deploy", "state"],
            )
            for (name, group, new_state), count in sorted(transitions.counts.items()):
                family.add_metric([name, group, new_state], count)
            yield family

    def _monitor(self):
        monitor = self.state.optional("monitor")
        if monitor is None:
            return
        cpu = GaugeMetricFamily(
            "salvus_instance_cpu_percent", "Latest CPU use of each instance.", labels=["instance"]
        )
        rss = GaugeMetricFamily(
            "salvus_instance_resident_bytes", "Latest resident memory of each instance.", labels=["instance"]
        )
        for name, sample in sorted(monitor.latest().items()):
            cpu.add_metric([name], _num(shapes.sampleCpu(sample)))
            rss.add_metric([name], _num(shapes.sampleRss(sample)))
        yield cpu
        yield rss
        dropped = getattr(monitor, "dropped_rows", None)
        if dropped is not None:
            yield CounterMetricFamily(
                "salvus_monitor_dropped_rows",
                "Samples and log lines dropped because the store was away and the buffer full.",
                value=dropped,
            )
        buffered = getattr(monitor, "bufferedRows", None)
        if buffered is not None:
            yield GaugeMetricFamily(
                "salvus_monitor_buffered_rows", "Rows waiting for the store.", value=buffered()
            )

    def _balancer(self):
        balancer = self.state.optional("balancer")
        if balancer is None:
            return
        labels = ["service", "group", "host"]
        up = GaugeMetricFamily(
            "salvus_balancer_host_up", "1 when a backend takes new connections.", labels=labels
        )
        weight = GaugeMetricFamily("salvus_balancer_host_weight", "Backend weight.", labels=labels)
        active = GaugeMetricFamily(
            "salvus_balancer_host_active_connections", "Open connections.", labels=labels
        )
        total = CounterMetricFamily("salvus_balancer_host_connections", "Connections made.", labels=labels)
        bytes_in = CounterMetricFamily(
            "salvus_balancer_host_received_bytes", "Bytes from clients.", labels=labels
        )
        bytes_out = CounterMetricFamily("salvus_balancer_host_sent_bytes", "Bytes to clients.", labels=labels)
        faults = CounterMetricFamily(
            "salvus_balancer_host_faults", "Failed connection attempts.", labels=labels
        )
        for service, group, host in shapes.balancerHosts(balancer.snapshot()):
            key = [str(service.get("name")), str(group.get("name")), str(host.get("name"))]
            up.add_metric(key, 1 if shapes.hostTakesTraffic(host) else 0)
            weight.add_metric(key, _num(host.get("weight")))
            active.add_metric(key, shapes.hostOpen(host))
            total.add_metric(key, shapes.hostTotal(host))
            bytes_in.add_metric(key, _num(host.get("bytes_in")))
            bytes_out.add_metric(key, _num(host.get("bytes_out")))
            faults.add_metric(key, _num(host.get("faults")))
        yield from (up, weight, active, total, bytes_in, bytes_out, faults)

    def _alerts(self):
        alerts = self.state.optional("alerts")
        if alerts is None or not IAlertSource.providedBy(alerts):
            return
        yield GaugeMetricFamily("salvus_alerts_active", "Alerts firing now.", value=len(alerts.alerts()))
        if hasattr(alerts, "deliveryStats"):
            stats = alerts.deliveryStats()
            yield GaugeMetricFamily("salvus_alert_notifications_pending",
                                    "E-mail and webhook notices queued and not delivered yet.",
                                    value=stats["pending"])
            yield CounterMetricFamily("salvus_alert_notifications_delivered",
                                      "Notices delivered since the host started.", value=stats["delivered"])
            yield CounterMetricFamily("salvus_alert_notifications_failed_attempts",
                                      "Failed delivery attempts (each is retried) since start.",
                                      value=stats["failed_attempts"])
            yield CounterMetricFamily("salvus_alert_notifications_expired",
                                      "Notices given up undelivered since start.", value=stats["expired"])


def renderMetrics(state: AdminState) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(state))
    return generate_latest(registry)

"""The metrics endpoint as Prometheus sees it: scraped over real HTTP and parsed."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.metrics import Metrics, MetricsServer
from reconciler.model import Result

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="1.2.3")


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    served = metrics.serve("127.0.0.1", 0)
    try:
        yield served
    finally:
        served.close()


def scrape(server: MetricsServer) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_a_reconcile_shows_up_as_drift_actions_duration_and_success(
    metrics: Metrics, server: MetricsServer
) -> None:
    before = time.time()
    metrics.observe_reconcile(
        "agentic",
        "apply",
        1.5,
        {Result.CREATED: 2, Result.CONFIGURED: 1},
        {"litellm": 3, "homepage": 0},
        ok=True,
    )
    s = scrape(server)

    drift = "reconciler_drift_objects"
    assert value(s, drift, cluster="agentic", app="litellm", mode="apply") == 3
    assert value(s, drift, cluster="agentic", app="homepage", mode="apply") == 0
    actions = "reconciler_actions_total"
    assert value(s, actions, cluster="agentic", result="created") == 2
    assert value(s, actions, cluster="agentic", result="configured") == 1
    # Every result is present from the first reconcile, at zero.
    for result in ("unchanged", "pruned", "skipped", "failed"):
        assert value(s, actions, cluster="agentic", result=result) == 0
    duration = "reconciler_reconcile_duration_seconds"
    assert value(s, duration + "_count", cluster="agentic") == 1
    assert value(s, duration + "_sum", cluster="agentic") == 1.5
    assert value(s, duration + "_bucket", cluster="agentic", le="1.0") == 0
    assert value(s, duration + "_bucket", cluster="agentic", le="2.5") == 1
    last = value(s, "reconciler_last_success_timestamp_seconds", cluster="agentic")
    assert last is not None and before <= last <= time.time()


def test_drift_is_replaced_per_cluster_and_kept_when_a_reconcile_fails(
    metrics: Metrics, server: MetricsServer
) -> None:
    drift = "reconciler_drift_objects"
    metrics.observe_reconcile("prod", "report", 2.0, {}, {"grafana": 1, "old-app": 4}, ok=True)
    metrics.observe_reconcile("agentic", "apply", 0.2, {}, {"litellm": 0}, ok=True)
    metrics.observe_reconcile("prod", "report", 2.0, {Result.UNCHANGED: 5}, {"grafana": 2}, True)
    s = scrape(server)
    assert value(s, drift, cluster="prod", app="grafana", mode="report") == 2
    # An app gone from the catalogue is no longer exported; other clusters are untouched.
    assert value(s, drift, cluster="prod", app="old-app", mode="report") is None
    assert value(s, drift, cluster="agentic", app="litellm", mode="apply") == 0
    last = value(s, "reconciler_last_success_timestamp_seconds", cluster="prod")

    metrics.observe_reconcile("prod", "report", 30.0, {Result.FAILED: 1}, {}, ok=False)
    s = scrape(server)
    assert value(s, drift, cluster="prod", app="grafana", mode="report") == 2
    assert value(s, "reconciler_last_success_timestamp_seconds", cluster="prod") == last
    assert value(s, "reconciler_reconcile_duration_seconds_count", cluster="prod") == 3
    assert value(s, "reconciler_actions_total", cluster="prod", result="unchanged") == 5
    assert value(s, "reconciler_actions_total", cluster="prod", result="failed") == 1


@dataclass
class FakeStats:
    watch_restarts: int = 0
    relists: int = 0


def test_borrowed_counters_are_read_at_scrape_time(metrics: Metrics, server: MetricsServer) -> None:
    stats = FakeStats(watch_restarts=2, relists=1)
    dropped = [7]
    metrics.read_watch_stats("monit", lambda: stats)
    metrics.read_dropped_log_entries(lambda: dropped[0])
    s = scrape(server)
    assert value(s, "reconciler_watch_restarts_total", cluster="monit") == 2
    assert value(s, "reconciler_watch_relists_total", cluster="monit") == 1
    assert value(s, "reconciler_log_entries_dropped_total") == 7

    stats.watch_restarts, dropped[0] = 5, 9
    s = scrape(server)
    assert value(s, "reconciler_watch_restarts_total", cluster="monit") == 5
    assert value(s, "reconciler_log_entries_dropped_total") == 9

    # A rebuilt cache replaces the old source: one series per cluster, never two.
    metrics.read_watch_stats("monit", lambda: FakeStats())
    s = scrape(server)
    assert value(s, "reconciler_watch_restarts_total", cluster="monit") == 0


def test_errors_flapping_reachability_and_info(metrics: Metrics, server: MetricsServer) -> None:
    metrics.count_errors("agentic", "render", 2)
    metrics.count_errors("agentic", "render")
    metrics.set_flapping("agentic", 1)
    metrics.set_reachable("agentic", True)
    metrics.set_reachable("monit", False)
    s = scrape(server)
    assert value(s, "reconciler_errors_total", cluster="agentic", kind="render") == 3
    assert value(s, "reconciler_flapping_objects", cluster="agentic") == 1
    assert value(s, "reconciler_cluster_reachable", cluster="agentic") == 1
    assert value(s, "reconciler_cluster_reachable", cluster="monit") == 0
    assert value(s, "reconciler_daemon_info", version="1.2.3") == 1


def test_the_registry_is_the_daemons_own(server: MetricsServer) -> None:
    exported = names(scrape(server))
    assert "process_resident_memory_bytes" in exported
    # prometheus_client's global registry (GC and platform collectors) stays out.
    assert not any(n.startswith(("python_gc_", "python_info")) for n in exported)
    ours = {n for n in exported if not n.startswith("process_")}
    assert all(n.startswith("reconciler_") for n in ours), ours


def test_close_stops_serving_and_frees_the_port(metrics: Metrics) -> None:
    served = metrics.serve("127.0.0.1", 0)
    port = served.port
    scrape(served)
    served.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    again = metrics.serve("127.0.0.1", port)
    try:
        assert again.port == port
        scrape(again)
    finally:
        again.close()

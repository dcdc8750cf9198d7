"""Prometheus metrics for monit's Prometheus to scrape: drift, reconciles, actions, errors.

One `Metrics` object owns a private CollectorRegistry, so nothing a library
registers on prometheus_client's global registry leaks into the exposition
and tests can build as many as they like. Labels are bounded on purpose:
cluster (3), app (~130), mode (2), result (the six of model.Result) and a
fixed error vocabulary; objects are never labels (unbounded, and their names
are nobody's business in a time series), and neither is any value taken from
an object, so no Secret can reach a metric.

Counters owned elsewhere (the live caches' watch restarts, the log shipper's
dropped entries) are read when Prometheus scrapes rather than mirrored here,
so there is one source of truth and nothing to keep in step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, Protocol, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from reconciler.model import Mode, Result
from reconciler.report import FindingKind

# What went wrong, coarsely enough to alert on and to keep the label bounded:
# source = a repository could not be read or fetched; render = an app could not be
# turned into manifests; object = one object failed to diff or apply; cluster = the
# cluster could not be used (unreachable, forbidden, identity); policy = a policy
# could not be evaluated.
ErrorKind = Literal["source", "render", "object", "cluster", "policy"]

# What became of an approval (reconciler.notify.approvals), one count per step.
ApprovalOutcome = Literal["approved", "refused", "expired", "carried_out", "failed"]
APPROVAL_OUTCOMES: tuple[ApprovalOutcome, ...] = get_args(ApprovalOutcome)

# What became of a notification (reconciler.notify.notifier): a message sent to the
# room, a send that failed (it is retried), a notice dropped undelivered, a report
# the full hand-off let go (nothing lost: a later report says what is open then).
NotifyOutcome = Literal["sent", "dropped", "failed", "superseded"]
NOTIFY_OUTCOMES: tuple[NotifyOutcome, ...] = get_args(NotifyOutcome)

# From an event-triggered reconcile of one object (well under a second) to a full
# resync rendering ~130 apps with Helm (minutes), then "stuck".
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class WatchStats(Protocol):
    """What metrics read of a live cache's counters (reconciler.cluster.cache.CacheStats)."""

    @property
    def watch_restarts(self) -> int: ...

    @property
    def relists(self) -> int: ...


class Metrics:
    """Every metric the daemon exports, behind a small typed API.

    Safe to call from the per-cluster workers concurrently."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        Info("reconciler_daemon", "The running reconciler.", registry=registry).info(
            {"version": version}
        )
        ProcessCollector(registry=registry)
        self._duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "How long one reconcile of one cluster took.",
            ["cluster"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "When a reconcile of the whole cluster last ran to completion (Unix time).",
            ["cluster"],
            registry=registry,
        )
        self._actions = Counter(
            "reconciler_actions",
            "Objects handled by reconciles, by result (created, configured, unchanged, "
            "pruned, skipped, failed).",
            ["cluster", "result"],
            registry=registry,
        )
        self._errors = Counter(
            "reconciler_errors",
            "Errors recorded, by kind (source, render, object, cluster, policy).",
            ["cluster", "kind"],
            registry=registry,
        )
        self._renders = Counter(
            "reconciler_app_renders",
            "Apps rendered for the desired state, by outcome: rendered (the renderer ran) "
            "or reused (nothing the app's last render read had changed).",
            ["outcome"],
            registry=registry,
        )
        self._internal = Counter(
            "reconciler_internal_errors",
            "Unexpected exceptions caught by the supervisor, by component (worker <cluster>, "
            "watch <cluster>, job <name>, git-watch, log-shipper).",
            ["component"],
            registry=registry,
        )
        self._flapping = Gauge(
            "reconciler_flapping_objects",
            "Live objects that keep being changed back and are in self-heal backoff.",
            ["cluster"],
            registry=registry,
        )
        self._reachable = Gauge(
            "reconciler_cluster_reachable",
            "1 when the cluster's API server answered the last request, else 0.",
            ["cluster"],
            registry=registry,
        )
        self._findings = Gauge(
            "reconciler_findings",
            "Things that wait for a person, by kind (out-of-sync, prune-blocked, orphaned, "
            "shared, violation, hook, wave): see `reconciler status`.",
            ["cluster", "kind"],
            registry=registry,
        )
        # Policy names are few and the operator's own (policies/), so they may be labels.
        self._violations = Gauge(
            "reconciler_policy_violations",
            "Objects breaking a policy, desired (not applied) and live, by policy.",
            ["cluster", "policy"],
            registry=registry,
        )
        self._violated: dict[str, frozenset[str]] = {}
        self._approvals = Counter(
            "reconciler_approvals",
            "Approvals from the Matrix room, by outcome: approved, refused (not allowed, "
            "unknown, used or report-only), expired (unused), carried_out, failed.",
            ["outcome"],
            registry=registry,
        )
        self._notify = Counter(
            "reconciler_notify_messages",
            "Notifications to the Matrix room, by outcome: sent (messages delivered), "
            "failed (send attempts that failed and are retried), dropped (notices never "
            "delivered: queue full, or refused by the homeserver for good), superseded "
            "(reports the full hand-off let go for later ones; nothing is lost).",
            ["outcome"],
            registry=registry,
        )
        self._notify_pending = Gauge(
            "reconciler_notify_pending",
            "Notices waiting (in the state store) for the Matrix room.",
            registry=registry,
        )
        self._scraped = _ScrapeTimeCollector()
        registry.register(self._scraped)

    def observe_reconcile(
        self,
        cluster: str,
        mode: Mode,
        duration_s: float,
        results: Mapping[Result, int],
        drift_by_app: Mapping[str, int],
        ok: bool,
        whole: bool = True,
    ) -> None:
        """Record one reconcile of `cluster` (`whole`: of all its apps).

        `results` counts objects per Result; `drift_by_app` is the number of
        drifting objects per app (every app of the cluster, zeros included) and
        replaces the cluster's drift series, so an app that left the catalogue
        stops being exported. `ok` means the reconcile ran to completion (per-app
        errors allowed): only then is it a success, and only then is its drift
        news; an aborted reconcile keeps the last known drift rather than
        claiming zero. A reconcile of some apps (a watch event's) is no news of the
        others: the last success stays that of the whole cluster."""
        self._duration.labels(cluster).observe(duration_s)
        for result in Result:
            # Every result is exported from the first reconcile on, so rate() and
            # alerts see 0 rather than an absent series.
            self._actions.labels(cluster, result.value).inc(results.get(result, 0))
        if ok:
            if whole:
                self._last_success.labels(cluster).set(time.time())
            self._scraped.set_drift(cluster, mode, drift_by_app)

    def count_errors(self, cluster: str, kind: ErrorKind, count: int = 1) -> None:
        self._errors.labels(cluster, kind).inc(count)

    def count_renders(self, rendered: int, reused: int) -> None:
        self._renders.labels("rendered").inc(rendered)
        self._renders.labels("reused").inc(reused)

    def count_notify(self, outcome: NotifyOutcome, count: int = 1) -> None:
        """Count notifications by outcome; a count of 0 exports the series at 0."""
        self._notify.labels(outcome).inc(count)

    def set_notify_pending(self, pending: int) -> None:
        self._notify_pending.set(pending)

    def count_approval(self, outcome: ApprovalOutcome, count: int = 1) -> None:
        self._approvals.labels(outcome).inc(count)

    def count_internal_error(self, component: str) -> None:
        """Count an unexpected exception of a supervised part. The label keeps the first
        two words of its name (`watch agentic ConfigMap` -> `watch agentic`), so kinds,
        which are open-ended, never become series."""
        self._internal.labels(" ".join(component.split()[:2])).inc()

    def set_findings(self, cluster: str, by_kind: Mapping[str, int]) -> None:
        """The cluster's current findings per kind; every kind is exported, zeros
        included, so an alert sees 0 rather than an absent series."""
        for kind in FindingKind:
            self._findings.labels(cluster, kind.value).set(by_kind.get(kind.value, 0))

    def set_violations(self, cluster: str, by_policy: Mapping[str, int]) -> None:
        """The cluster's current violations per policy; a policy no longer broken
        goes to 0 rather than vanishing, so an alert on it resolves."""
        for policy in self._violated.get(cluster, frozenset()) | by_policy.keys():
            self._violations.labels(cluster, policy).set(by_policy.get(policy, 0))
        self._violated[cluster] = self._violated.get(cluster, frozenset()) | by_policy.keys()

    def set_flapping(self, cluster: str, objects: int) -> None:
        self._flapping.labels(cluster).set(objects)

    def set_reachable(self, cluster: str, reachable: bool) -> None:
        self._reachable.labels(cluster).set(1 if reachable else 0)

    def read_watch_stats(self, cluster: str, stats: Callable[[], WatchStats]) -> None:
        """Export `stats()` (e.g. `cache.stats`) for `cluster` at every scrape.

        Replaces an earlier source for the same cluster, e.g. after the cache was
        rebuilt; its counters then restart from 0, which rate() treats as a reset."""
        self._scraped.set_watch_source(cluster, stats)

    def read_dropped_log_entries(self, dropped: Callable[[], int]) -> None:
        """Export `dropped()` (the log shipper's cumulative drop count) at every scrape."""
        self._scraped.set_dropped_source(dropped)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve the exposition on http://host:port/ (any path) in a daemon thread.

        Port 0 picks a free port; `MetricsServer.port` says which."""
        httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(httpd, thread)


class MetricsServer:
    """A running metrics endpoint; `close()` stops it and frees the port."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return self._httpd.server_port

    def close(self, timeout: float = 5.0) -> None:
        self._httpd.shutdown()  # returns once serve_forever has
        self._httpd.server_close()
        self._thread.join(timeout)


class _ScrapeTimeCollector:
    """The series computed when Prometheus scrapes: drift snapshots and borrowed counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drift: dict[str, tuple[Mode, dict[str, int]]] = {}
        self._watch: dict[str, Callable[[], WatchStats]] = {}
        self._dropped: Callable[[], int] | None = None

    def set_drift(self, cluster: str, mode: Mode, drift_by_app: Mapping[str, int]) -> None:
        with self._lock:
            self._drift[cluster] = (mode, dict(drift_by_app))

    def set_watch_source(self, cluster: str, stats: Callable[[], WatchStats]) -> None:
        with self._lock:
            self._watch[cluster] = stats

    def set_dropped_source(self, dropped: Callable[[], int]) -> None:
        with self._lock:
            self._dropped = dropped

    def describe(self) -> Iterator[Metric]:
        # Names only: lets the registry reject clashes without calling the sources.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            drift = {c: (m, dict(apps)) for c, (m, apps) in self._drift.items()}
            watch = dict(self._watch)
            dropped = self._dropped
        drift_f, restarts_f, relists_f, dropped_f = self._families()
        for cluster, (mode, apps) in sorted(drift.items()):
            for app, count in sorted(apps.items()):
                drift_f.add_metric([cluster, app, mode], count)
        for cluster, read in sorted(watch.items()):
            stats = read()
            restarts_f.add_metric([cluster], stats.watch_restarts)
            relists_f.add_metric([cluster], stats.relists)
        if dropped is not None:
            dropped_f.add_metric([], dropped())
        yield from (drift_f, restarts_f, relists_f, dropped_f)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "reconciler_drift_objects",
                "Objects whose live state differs from git, per app, as of the last "
                "completed reconcile (mode: apply or report).",
                labels=["cluster", "app", "mode"],
            ),
            CounterMetricFamily(
                "reconciler_watch_restarts",
                "Watches of the live cache re-established after an error.",
                labels=["cluster"],
            ),
            CounterMetricFamily(
                "reconciler_watch_relists",
                "Full lists of a kind by the live cache after its first one.",
                labels=["cluster"],
            ),
            CounterMetricFamily(
                "reconciler_log_entries_dropped",
                "Log entries the shipper dropped because the sink was down or slow.",
                labels=[],
            ),
        )

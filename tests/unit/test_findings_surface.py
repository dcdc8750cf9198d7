"""A finding (a blocked prune, an orphaned object, a shared object, a violation...)
reaches every place a person looks: the store, `reconciler status` (JSON per app and
per cluster, and the table), its exit code, and the findings metric."""

from __future__ import annotations

import datetime
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import status
from reconciler.config import ClusterConfig, Config, RenderConfig
from reconciler.metrics import Metrics, MetricsServer
from reconciler.model import ObjectRef
from reconciler.record import Recorder
from reconciler.report import Finding, FindingKind, Report
from reconciler.store import AppRecord, Store

WEB = ObjectRef("apps", "Deployment", "obs", "web")
OLD = ObjectRef("", "ConfigMap", "obs", "old")


def _report(*findings: Finding) -> Report:
    return Report("monit", "apply", (), (), (), findings=findings)


def _config(tmp_path: Path) -> Config:
    cluster = ClusterConfig("monit", "apply", False, tmp_path / "kubeconfig", None, (), None)
    return Config(tmp_path / "config.toml", tmp_path, RenderConfig(), (), (cluster,), ())


def _status(tmp_path: Path, store: Store) -> dict[str, Any]:
    store.replace_apps("monit", [AppRecord("monit", "beszel", "Synced", "Healthy", 0, None)])
    return status.gather(_config(tmp_path), store)


def test_a_finding_keeps_when_it_was_first_seen_and_goes_when_resolved(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    blocked = Finding("beszel", FindingKind.PRUNE_BLOCKED, None, "2 objects held")
    Recorder(store, "monit").reconciled(_report(blocked), [], {}, "", None)
    first = store.findings("monit")
    assert [(f.app, f.kind, f.object) for f in first] == [("beszel", "prune-blocked", "")]
    with store._tx() as db:
        db.execute("UPDATE findings SET first_seen = '2026-01-01T00:00:00Z'")
    Recorder(store, "monit").reconciled(_report(blocked), [], {}, "", None)
    assert store.findings("monit")[0].first_seen == "2026-01-01T00:00:00Z"
    Recorder(store, "monit").reconciled(_report(), [], {}, "", None)
    assert store.findings("monit") == []


def test_a_scoped_reconcile_replaces_only_its_apps_findings(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    shared = Finding("web", FindingKind.SHARED, WEB, "also rendered by app api")
    orphan = Finding("gone", FindingKind.ORPHANED, OLD, "left by Application gone")
    Recorder(store, "monit").reconciled(_report(shared, orphan), [], {}, "", None)
    Recorder(store, "monit").reconciled(_report(), [], {}, "", {"web"})
    assert [f.app for f in store.findings("monit")] == ["gone"]


def test_status_lists_findings_per_app_and_per_cluster_and_exits_unhealthy(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    blocked = Finding("beszel", FindingKind.PRUNE_BLOCKED, WEB, "held: confirm with --prune")
    orphan = Finding("gone", FindingKind.ORPHANED, OLD, "left by Application gone")
    Recorder(store, "monit").reconciled(_report(blocked, orphan), [], {}, "", None)
    doc = _status(tmp_path, store)
    cluster = doc["clusters"][0]
    assert [(f["app"], f["kind"], f["object"]) for f in cluster["findings"]] == [
        ("beszel", "prune-blocked", str(WEB)),
        ("gone", "orphaned", str(OLD)),
    ]
    (app,) = cluster["apps"]
    assert app["sync"] == "Synced"
    assert [(f["kind"], f["object"], f["message"]) for f in app["findings"]] == [
        ("prune-blocked", str(WEB), "held: confirm with --prune")
    ]
    assert datetime.datetime.fromisoformat(app["findings"][0]["since"].replace("Z", "+00:00"))
    assert not status.healthy(doc)
    table = status.table(doc)
    assert "beszel" in table.split("CLUSTER  APP")[1]  # a Synced app with a finding is listed
    assert "orphaned" in table and str(OLD) in table


def test_status_without_findings_stays_healthy(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    Recorder(store, "monit").reconciled(_report(), [], {}, "", None)
    doc = _status(tmp_path, store)
    assert doc["clusters"][0]["findings"] == []
    assert doc["clusters"][0]["apps"][0]["findings"] == []
    assert status.healthy(doc)
    assert "FINDING" not in status.table(doc)


@pytest.fixture
def server() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics(version="test")
    served = metrics.serve("127.0.0.1", 0)
    yield metrics, served
    served.close()


def test_the_findings_metric_exports_every_kind_zeros_included(
    server: tuple[Metrics, MetricsServer],
) -> None:
    metrics, served = server
    metrics.set_findings("monit", {"orphaned": 3})
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'reconciler_findings{cluster="monit",kind="orphaned"} 3.0' in text
    for kind in FindingKind:
        assert f'reconciler_findings{{cluster="monit",kind="{kind.value}"}}' in text
    assert 'reconciler_findings{cluster="monit",kind="shared"} 0.0' in text

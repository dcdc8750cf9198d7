"""The state store keeps what a restart or `reconciler status` needs, and no more."""

from __future__ import annotations

import datetime
import sqlite3
import threading
from pathlib import Path

import pytest

from reconciler.model import Change, Drift, DriftType, InventoryItem, ObjectRef
from reconciler.pruneguard import AppTrace
from reconciler.store import RunRecord, Store, StoreError

WEB = ObjectRef("apps", "Deployment", "ai", "web")
CM = ObjectRef("", "ConfigMap", "ai", "settings")


def changed(ref: ObjectRef, replicas: int) -> Drift:
    return Drift(DriftType.CHANGED, ref, "apps/v1", (Change("/spec/replicas", replicas, 1),))


def test_a_restart_resumes_from_the_same_inventory_and_identity(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.replace_inventory("agentic", [InventoryItem("web", WEB, "apps/v1")])
    store.pin_identity("agentic", "uid-1")
    store.close()

    reopened = Store(tmp_path / "state.db")
    assert reopened.inventory("agentic") == [InventoryItem("web", WEB, "apps/v1")]
    assert reopened.inventory("monit") == []
    assert reopened.pinned_identity("agentic") == "uid-1"
    assert reopened.pinned_identity("monit") is None


def test_the_database_runs_in_wal_mode(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    mode = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_steady_drift_adds_no_history_but_changes_and_resolution_do(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.replace_drift("prod", [("web", changed(WEB, 3))])
    store.replace_drift("prod", [("web", changed(WEB, 3))])
    store.replace_drift("prod", [("web", changed(WEB, 4))])
    store.replace_drift("prod", [])

    assert [h["type"] for h in store.drift_history("prod")] == ["changed", "changed", "resolved"]
    assert store.drift("prod") == []


def test_current_drift_keeps_when_it_was_first_seen(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.replace_drift("prod", [("web", changed(WEB, 3))])
    first = store.drift("prod")[0]
    store.replace_drift(
        "prod", [("web", changed(WEB, 3)), ("cfg", Drift(DriftType.MISSING, CM, "v1"))]
    )
    records = {r.ref: r for r in store.drift("prod")}
    assert records[WEB].first_seen == first.first_seen
    assert records[WEB].changes == [{"path": "/spec/replicas", "desired": 3, "live": 1}]
    assert records[CM].type == "missing"


def test_retention_drops_old_history_events_and_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.replace_drift("prod", [("web", changed(WEB, 3))])
    store.record_events("agentic", [("web", str(WEB), "configured", "")])
    store.record_run(RunRecord("agentic", "2000-01-01T00:00:00Z", 0.1, "converged", {}))
    store.drop_history(datetime.timedelta(days=1))
    assert len(store.drift_history("prod")) == 1, "recent history is kept"
    assert store.last_run("agentic") is None, "the old run is dropped"

    store.drop_history(datetime.timedelta(seconds=-60))
    assert store.drift_history("prod") == []
    assert store.events("agentic") == []
    assert store.drift("prod"), "current drift is not history"


def test_a_failed_fetch_keeps_the_last_good_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.record_repo("agentic_lab", "abc123", None)
    store.record_repo("agentic_lab", None, "fetch failed: network unreachable")
    (repo,) = store.repos()
    assert repo["commit"] == "abc123"
    assert repo["error"] == "fetch failed: network unreachable"


def test_workers_can_write_from_several_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")

    def work(cluster: str) -> None:
        for i in range(50):
            store.record_run(RunRecord(cluster, "2030-01-01T00:00:00Z", i, "converged", {"n": i}))

    threads = [threading.Thread(target=work, args=(c,)) for c in ("agentic", "monit")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = store.last_run("monit")
    assert last is not None and last.counts == {"n": 49}


def test_a_missing_database_opened_read_only_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"state\.db"):
        Store(tmp_path / "state.db", readonly=True)


def test_an_app_is_remembered_while_it_holds_objects_and_forgotten_after(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    web = AppTrace("web", "agentic_lab", "apps/web.yaml", True)
    old = AppTrace("old", "agentic_lab", "apps/old.yaml", False)
    store.replace_inventory("agentic", [InventoryItem("web", WEB, "apps/v1")])
    store.remember_apps("agentic", [web, old])
    # `web` left the catalogue but holds an object; `old` holds none: forgotten.
    store.remember_apps("agentic", [])
    assert store.app_traces("agentic") == {"web": web}
    assert store.app_traces("monit") == {}
    # A sync of one app leaves the others' traces alone.
    store.remember_apps("agentic", [old], scope={"old"})
    store.replace_inventory("agentic", [])
    store.remember_apps("agentic", [], scope={"old"})
    assert store.app_traces("agentic") == {"web": web}
    store.remember_apps("agentic", [])
    assert store.app_traces("agentic") == {}


def test_a_whole_cluster_sync_record_forgets_apps_that_left_the_cluster(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.record_synced("agentic", {"web": "d1", "gone": "d2"})
    store.record_synced("monit", {"gone": "d3"})

    store.record_synced("agentic", {"web": "d4"})  # one app's reconcile forgets nothing
    assert store.synced_digests("agentic") == {"web": "d4", "gone": "d2"}

    store.record_synced("agentic", {}, apps={"web"})
    assert store.synced_digests("agentic") == {"web": "d4"}
    assert store.synced_digests("monit") == {"gone": "d3"}

"""What a reconcile of some apps covers, and what it leaves as it was: the apps
sharing an object with them join it (engine.entangled), a watch event concerns the
apps owning the object (daemon.owners), and the cluster's policy violations keep
those of the apps and kinds it did not look at (daemon.kept_violations), as the
metrics do the other apps' drift (daemon.ClusterRecord); the prune guard takes the
cluster's share of the whole cluster's inventory (plan's `cluster_inventory`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler import status
from reconciler.config import ClusterConfig, Config, RenderConfig
from reconciler.daemon import ClusterRecord, kept_violations
from reconciler.engine import entangled, owners
from reconciler.metrics import Metrics
from reconciler.model import (
    Change,
    Drift,
    DriftType,
    GroupKind,
    InventoryItem,
    Manifest,
    ObjectRef,
    Origin,
    Violation,
)
from reconciler.pairs import join
from reconciler.plan import ActionKind, plan
from reconciler.report import Report
from reconciler.store import AppRecord, RunRecord, Store, now
from tests.builders import app, config_map

CM = GroupKind("", "ConfigMap")
# Automated sync that prunes, even the last object of an app.
EMPTY_PRUNES = {"prune": True, "allowEmpty": True}
SECRET = GroupKind("", "Secret")


def _ref(name: str, kind: str = "ConfigMap") -> ObjectRef:
    return ObjectRef("", kind, "media", name)


def _manifest(name: str, app: str) -> Manifest:
    return Manifest(_ref(name), config_map(name, {}), Origin("lab", "c1", app, f"{app}/{name}"))


def _held(name: str, app: str) -> InventoryItem:
    return InventoryItem(app, _ref(name), "v1")


def test_apps_sharing_no_object_stay_out_of_the_scope() -> None:
    manifests = [_manifest("a", "web"), _manifest("b", "side")]
    inventory = [_held("a", "web"), _held("b", "side")]
    assert entangled({"web"}, manifests, inventory) == {"web"}


def test_an_object_moving_between_apps_brings_both_and_what_they_share_in_turn() -> None:
    # "moved" left web's render for side's; side also holds what db now renders.
    manifests = [_manifest("moved", "side"), _manifest("handed", "db"), _manifest("x", "other")]
    inventory = [_held("moved", "web"), _held("handed", "side"), _held("x", "other")]
    assert entangled({"web"}, manifests, inventory) == {"web", "side", "db"}


def test_an_object_is_owned_by_the_app_rendering_it_and_those_holding_it() -> None:
    found = owners([_manifest("moved", "side"), _manifest("a", "web")], [_held("moved", "web")])
    assert found == {_ref("moved"): {"side", "web"}, _ref("a"): {"web"}}


def _violation(name: str, app: str | None, source: str, kind: str = "ConfigMap") -> Violation:
    return Violation("policy", "agentic", _ref(name, kind), app, "broken", source)


def test_a_whole_cluster_reconcile_replaces_every_violation() -> None:
    before = [_violation("a", "web", "desired")]
    found = [_violation("b", "side", "desired")]
    assert kept_violations(before, found, None, {CM}) == tuple(found)


def test_a_reconcile_of_some_apps_keeps_the_violations_it_did_not_look_at() -> None:
    web_desired = _violation("a", "web", "desired")
    side_desired = _violation("b", "side", "desired")
    live_cm = _violation("c", None, "live")
    live_secret = _violation("s", None, "live", kind="Secret")
    before = [web_desired, side_desired, live_cm, live_secret]
    # web's reconcile looked at its desired objects and at the live ConfigMaps: web's
    # violation is gone, and so is the ConfigMap's; side's and the Secret's stay.
    assert kept_violations(before, [], {"web"}, {CM}) == (side_desired, live_secret)
    assert kept_violations(before, [web_desired], {"web"}, {SECRET}) == (
        side_desired,
        live_cm,
        web_desired,
    )


def test_the_metrics_after_a_reconcile_of_some_apps_keep_the_others_drift(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    metrics = Metrics("test")
    record = ClusterRecord("agentic", "apply", store, metrics)
    drift = Drift(DriftType.CHANGED, _ref("b"), "v1", (Change("/data/v", "2", "1"),))
    store.replace_drift("agentic", [("side", drift)])  # side's last reconcile found drift
    violation = _violation("b", "side", "desired")
    # A reconcile of web alone, which found nothing: side's drift and violation stay.
    store.replace_drift("agentic", [], {"web"})
    web = frozenset({"web"})
    report = Report("agentic", "apply", drifts=(), violations=(), errors=(), scope=web)
    record.reconciled(report, ["web", "side"], [violation], [], flapping=0)
    try:
        assert _sample(metrics, "reconciler_drift_objects", app="side") == 1
        assert _sample(metrics, "reconciler_drift_objects", app="web") == 0
        assert _sample(metrics, "reconciler_policy_violations", policy="policy") == 1
        # The next reconcile of web finds drift: counted from its report, side's kept.
        web_drift = replace(drift, ref=_ref("a"))
        store.replace_drift("agentic", [("web", web_drift)], web)
        report = replace(report, drifts=(("web", web_drift),))
        record.reconciled(report, ["web", "side"], [violation], [], flapping=0)
        assert _sample(metrics, "reconciler_drift_objects", app="side") == 1
        assert _sample(metrics, "reconciler_drift_objects", app="web") == 1
        # A reconcile of some apps is no news of the others: no success of the cluster.
        assert _sample(metrics, "reconciler_last_success_timestamp_seconds") is None
        record.reconciled(replace(report, scope=None), ["web", "side"], [], [], flapping=0)
        assert _sample(metrics, "reconciler_drift_objects", app="side") == 0
        assert _sample(metrics, "reconciler_last_success_timestamp_seconds")
    finally:
        store.close()


def test_status_shows_the_cluster_failing_while_an_app_the_last_run_left_out_fails(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    cluster = ClusterConfig("agentic", "apply", False, tmp_path / "kubeconfig", None, (), None)
    config = Config(tmp_path / "config.toml", tmp_path, RenderConfig(), (), (cluster,), ())
    try:
        store.replace_apps(
            "agentic",
            [
                AppRecord("agentic", "web", "Synced", "Healthy", 0, None),
                AppRecord("agentic", "side", "OutOfSync", None, 0, "ConfigMap/b: refused"),
            ],
        )
        # The last run covered web alone, and converged.
        store.record_run(RunRecord("agentic", now(), 0.1, "converged", {}))
        doc = status.gather(config, store)
        assert doc["clusters"][0]["last_reconcile"]["result"] == "failed"
        store.replace_apps("agentic", [AppRecord("agentic", "side", "OutOfSync", None, 2, None)])
        doc = status.gather(config, store)
        assert doc["clusters"][0]["last_reconcile"]["result"] == "drift"
    finally:
        store.close()


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def _prunes_of_two_small_apps(cluster_inventory: dict[str, int] | None) -> list[ActionKind]:
    """Apps a and b each lose their three objects: each alone is under the floor, both
    together are past it and all of what the pairs hold."""
    held = [_held(f"{app}-{i}", app) for app in ("a", "b") for i in range(3)]
    live = {i.ref: config_map(i.ref.name, {}, namespace="media") for i in held}
    the_plan = plan(
        apps=[app(name, sync_policy={"automated": EMPTY_PRUNES}) for name in ("a", "b")],
        pairs=join([], live, held),
        drift={},
        mode="apply",
        protected=lambda _obj: None,
        cluster_inventory=cluster_inventory,
    )
    return [a.kind for a in the_plan.actions]


def test_a_reconcile_of_some_apps_takes_the_clusters_prune_share_of_the_whole_cluster() -> None:
    # Of their own inventory, six of six is too many; of the cluster's 106, it is not.
    assert set(_prunes_of_two_small_apps(None)) == {ActionKind.NONE}
    assert _prunes_of_two_small_apps({"a": 3, "b": 3, "big": 100}) == [ActionKind.PRUNE] * 6

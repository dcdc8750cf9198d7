"""plan with objects two apps render (Argo CD's SharedResourceWarning): the shared
object is neither applied nor pruned, each app is told who else renders it, the
rest of both apps syncs, and FailOnSharedResource=true fails that app's sync."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.model import (
    App,
    InventoryItem,
    Manifest,
    Mode,
    ObjectRef,
    Origin,
    Result,
)
from reconciler.pairs import join
from reconciler.plan import ActionKind, Plan, next_inventory, plan
from reconciler.report import Finding, FindingKind
from tests.builders import app

NS = "media"
SHARED = ObjectRef("", "ConfigMap", NS, "shared")
CONTESTED = {SHARED: {"alpha": "lab:alpha/cm.yaml", "beta": "lab:beta/cm.yaml"}}


def _app(name: str, *options: str) -> App:
    policy = {"automated": {"prune": True, "selfHeal": True}}
    return app(name, namespace=NS, sync_options=options, sync_policy=policy)


def _configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}}


def _manifest(app: str, name: str) -> Manifest:
    ref = ObjectRef("", "ConfigMap", NS, name)
    return Manifest(ref, _configmap(name), Origin("lab", "c0ffee", app, f"{app}/cm.yaml"))


def _plan(*apps: App, mode: Mode = "apply", contested: Mapping[Any, Any] = CONTESTED) -> Plan:
    desired = [_manifest("alpha", "alpha-only"), _manifest("beta", "beta-only")]
    # alpha applied the shared object before beta started rendering it too.
    inventory = [InventoryItem("alpha", SHARED, "v1")]
    pairs = join(desired, {SHARED: _configmap("shared")}, inventory)
    return plan(
        apps=apps,
        pairs=pairs,
        drift={},
        mode=mode,
        protected=lambda _: None,
        contested=contested,
    )


def _by_ref(the_plan: Plan) -> dict[tuple[str, str], tuple[ActionKind, Result, str]]:
    return {(a.app, a.ref.name): (a.kind, a.result, a.reason) for a in the_plan.actions}


def test_a_shared_object_is_skipped_for_both_apps_and_their_other_objects_sync() -> None:
    the_plan = _plan(_app("alpha"), _app("beta"))
    actions = _by_ref(the_plan)
    assert actions[("alpha", "alpha-only")][:2] == (ActionKind.CREATE, Result.CREATED)
    assert actions[("beta", "beta-only")][:2] == (ActionKind.CREATE, Result.CREATED)
    assert actions[("alpha", "shared")] == (
        ActionKind.NONE,
        Result.SKIPPED,
        "shared: also rendered by app beta (lab:beta/cm.yaml)",
    )
    assert actions[("beta", "shared")] == (
        ActionKind.NONE,
        Result.SKIPPED,
        "shared: also rendered by app alpha (lab:alpha/cm.yaml)",
    )
    assert not [a for a in the_plan.actions if a.ref == SHARED and a.writes]
    assert [f for f in the_plan.findings if f.kind is FindingKind.SHARED] == [
        Finding(
            "alpha", FindingKind.SHARED, SHARED, "also rendered by app beta (lab:beta/cm.yaml)"
        ),
        Finding(
            "beta", FindingKind.SHARED, SHARED, "also rendered by app alpha (lab:alpha/cm.yaml)"
        ),
    ]


def test_a_shared_object_in_an_inventory_is_not_pruned_and_stays_there() -> None:
    the_plan = _plan(_app("alpha"), _app("beta"))
    outcomes = [(a, a.result) for a in the_plan.actions]
    after = next_inventory({"alpha": {SHARED}}, outcomes)
    assert SHARED in after["alpha"]
    # Without the conflict the same inventory entry is a prune: the gate is what keeps it.
    unshared = _plan(_app("alpha"), _app("beta"), contested={})
    assert _by_ref(unshared)[("alpha", "shared")][:2] == (ActionKind.PRUNE, Result.PRUNED)


def test_fail_on_shared_resource_fails_that_apps_sync_and_not_the_others() -> None:
    the_plan = _plan(_app("alpha", "FailOnSharedResource=true"), _app("beta"))
    actions = _by_ref(the_plan)
    assert actions[("alpha", "shared")] == (
        ActionKind.NONE,
        Result.FAILED,
        "FailOnSharedResource=true: also rendered by app beta (lab:beta/cm.yaml)",
    )
    assert actions[("alpha", "alpha-only")] == (
        ActionKind.NONE,
        Result.SKIPPED,
        "not synced: FailOnSharedResource=true, ConfigMap media/shared is also rendered by "
        "app beta (lab:beta/cm.yaml)",
    )
    assert actions[("beta", "beta-only")][:2] == (ActionKind.CREATE, Result.CREATED)
    assert actions[("beta", "shared")][1] is Result.SKIPPED


def test_on_a_report_mode_cluster_a_shared_object_is_reported_never_failed() -> None:
    the_plan = _plan(_app("alpha", "FailOnSharedResource=true"), _app("beta"), mode="report")
    assert all(a.result is not Result.FAILED for a in the_plan.actions)
    assert {f.app for f in the_plan.findings if f.kind is FindingKind.SHARED} == {"alpha", "beta"}


def test_a_sync_of_one_app_plans_only_that_apps_side_of_the_conflict() -> None:
    the_plan = _plan(_app("beta"))
    assert [(a.app, a.ref) for a in the_plan.actions if a.ref == SHARED] == [("beta", SHARED)]
    assert [f.app for f in the_plan.findings] == ["beta"]

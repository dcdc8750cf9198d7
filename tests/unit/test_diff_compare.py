"""diff_object: no false drift, and every real change reported once at the right path.

The fixtures are a Deployment as git renders it and as the API server returns it
after a server-side apply by field manager "reconciler": defaults filled in,
quantities canonicalised, status and managedFields from kube-controller-manager.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.diff import diff_object
from reconciler.diff.normalize import same_scalar
from reconciler.model import Change, Drift, DriftType, ObjectRef

DATA = Path(__file__).parent / "data" / "diff"
REF = ObjectRef("apps", "Deployment", "shop", "web")
CONTAINER = "/spec/template/spec/containers/0"


def git() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DATA / "deployment-git.yaml").read_text())
    return loaded


def live() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "deployment-live.json").read_text())
    return loaded


def container(obj: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return found


def changed(drift: Drift | None) -> tuple[Change, ...]:
    assert drift is not None and drift.type is DriftType.CHANGED
    return drift.changes


def test_applied_object_with_server_defaults_is_in_sync() -> None:
    assert diff_object(REF, git(), live()) is None


def test_server_populated_metadata_and_status_are_not_drift() -> None:
    current = live()
    current["metadata"]["resourceVersion"] = "99999"
    current["metadata"]["generation"] = 7
    current["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "7"
    current["metadata"]["ownerReferences"] = [{"kind": "Thing", "name": "x", "uid": "1"}]
    current["status"]["readyReplicas"] = 0
    assert diff_object(REF, git(), current) is None


def test_field_added_live_by_another_manager_is_not_drift() -> None:
    current = live()
    current["metadata"]["annotations"]["example.com/touched-by"] = "someone"
    current["metadata"]["labels"]["team"] = "ops"
    container(current)["livenessProbe"] = {"tcpSocket": {"port": 80}}
    assert diff_object(REF, git(), current) is None


def test_live_field_edited_is_drift_at_its_path() -> None:
    current = live()
    container(current)["image"] = "nginx:1.26"
    assert changed(diff_object(REF, git(), current)) == (
        Change(f"{CONTAINER}/image", "nginx:1.25", "nginx:1.26"),
    )


def test_field_added_in_git_is_drift() -> None:
    desired = git()
    desired["spec"]["template"]["spec"]["serviceAccountName"] = "web"
    assert changed(diff_object(REF, desired, live())) == (
        Change("/spec/template/spec/serviceAccountName", "web", None),
    )


def test_field_removed_from_git_but_owned_by_reconciler_is_drift() -> None:
    desired = git()
    del desired["spec"]["replicas"]
    assert changed(diff_object(REF, desired, live())) == (Change("/spec/replicas", None, 2),)


def test_list_item_removed_from_git_but_owned_by_reconciler_is_drift() -> None:
    desired = git()
    container(desired)["env"] = [{"name": "REGION", "value": "eu"}]
    assert changed(diff_object(REF, desired, live())) == (
        Change(f"{CONTAINER}/env/0", None, {"name": "MODE", "value": "prod"}),
    )


def test_item_inserted_in_keyed_list_is_one_change_not_a_cascade() -> None:
    desired = git()
    container(desired)["env"].insert(0, {"name": "DEBUG", "value": "0"})
    assert changed(diff_object(REF, desired, live())) == (
        Change(f"{CONTAINER}/env/0", {"name": "DEBUG", "value": "0"}, None),
    )


def test_different_quantity_is_drift_but_its_canonical_spelling_is_not() -> None:
    desired = git()
    container(desired)["resources"]["requests"]["memory"] = "2Gi"
    container(desired)["resources"]["limits"]["cpu"] = "1000m"
    assert changed(diff_object(REF, desired, live())) == (
        Change(f"{CONTAINER}/resources/requests/memory", "2Gi", "1Gi"),
    )


def test_explicit_null_in_git_is_an_unset_field() -> None:
    desired = git()
    desired["spec"]["paused"] = None
    assert diff_object(REF, desired, live()) is None


def test_object_absent_live_is_missing() -> None:
    drift = diff_object(REF, git(), None)
    assert drift == Drift(DriftType.MISSING, REF, "apps/v1")
    assert drift.desired is not None and drift.desired["spec"]["replicas"] == 2


def test_object_no_longer_in_git_is_extra_without_server_fields() -> None:
    drift = diff_object(REF, None, live())
    assert drift == Drift(DriftType.EXTRA, REF, "apps/v1")
    assert drift.live is not None
    assert "managedFields" not in drift.live["metadata"] and "status" not in drift.live


def test_both_sides_absent_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="both sides are absent"):
        diff_object(REF, None, None)


def dry_run_of(current: dict[str, Any]) -> dict[str, Any]:
    """What the server returns for a dry-run apply: the merged object, fresh bookkeeping."""
    result = copy.deepcopy(current)
    result["metadata"]["generation"] += 1
    result["metadata"]["managedFields"][0]["time"] = "2025-02-01T00:00:00Z"
    return result


def test_dry_run_identical_to_live_is_in_sync() -> None:
    assert diff_object(REF, git(), live(), dry_run=dry_run_of(live())) is None


def test_dry_run_difference_is_drift_and_git_is_not_consulted() -> None:
    merged = dry_run_of(live())
    merged["spec"]["revisionHistoryLimit"] = 3  # e.g. git sets a field the server also defaults
    del container(merged)["env"]
    drift = diff_object(REF, git(), live(), dry_run=merged)
    assert changed(drift) == (
        Change("/spec/revisionHistoryLimit", 3, 10),
        Change(
            f"{CONTAINER}/env",
            None,
            [{"name": "MODE", "value": "prod"}, {"name": "REGION", "value": "eu"}],
        ),
    )


def test_changed_drift_carries_both_compared_views_in_plain_json() -> None:
    current = live()
    container(current)["image"] = "nginx:1.26"
    drift = diff_object(REF, git(), current)
    assert drift is not None and drift.desired is not None and drift.live is not None
    assert drift.desired["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert drift.live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    json.dumps([drift.desired, drift.live])  # plain JSON, ready to render or store


@pytest.mark.parametrize(
    ("desired", "live", "same"),
    [
        (1, "1", True),
        (0.5, "500m", True),
        ("1024Mi", "1Gi", True),
        ("1000m", "1", True),
        ("1e3", "1k", True),
        ("2Gi", "1Gi", False),
        ("1", "1.0", False),  # "1.0" is not how the server writes a quantity: an edit
        ("1", 1, False),
        (True, 1, False),
        ("nginx:1.0", "nginx:1.0", True),
    ],
)
def test_quantities_compare_by_value_only_against_the_servers_spelling(
    desired: Any, live: Any, same: bool
) -> None:
    assert same_scalar(desired, live) is same


def test_service_ports_pair_by_merge_key_despite_defaulted_protocol() -> None:
    desired: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 443, "targetPort": "https"}]},
    }
    owned: dict[str, Any] = {".": {}, "f:port": {}, "f:targetPort": {}}
    live: dict[str, Any] = {
        **copy.deepcopy(desired),
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "managedFields": [
                {
                    "manager": "reconciler",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:spec": {
                            "f:selector": {},
                            "f:ports": {'k:{"port":443,"protocol":"TCP"}': owned},
                        }
                    },
                },
                {
                    "manager": "kubectl-edit",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:ports": {'k:{"port":80,"protocol":"TCP"}': owned}}},
                },
            ],
        },
    }
    live["spec"] = {
        "clusterIP": "10.43.0.17",
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "selector": {"app": "web"},
        "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": 8080},
            {"port": 443, "protocol": "TCP", "targetPort": "https"},
        ],
    }
    ref = ObjectRef("", "Service", "shop", "web")
    assert diff_object(ref, desired, live) is None
    live["spec"]["ports"][1]["targetPort"] = 8443
    assert changed(diff_object(ref, desired, live)) == (
        Change("/spec/ports/0/targetPort", "https", 8443),
    )

"""Fields removed from git on a report-mode cluster, found through Argo CD's records.

The live objects under data/removed/ were read back (`kubectl get -o json
--show-managed-fields`) from the testenv kube-apiserver after Argo CD's two ways of
applying: `kubectl apply` (client-side, last-applied annotation) and `kubectl apply
--server-side --field-manager=argocd-controller`, followed by other managers'
writes (a controller's annotation, `kubectl scale`, the Deployment controller, a
second server-side applier of a Service's selector).
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from reconciler.diff import diff_object, render_text
from reconciler.diff.removed import LAST_APPLIED, argocd_applied
from reconciler.model import Change, Drift, object_ref

DATA = Path(__file__).parent / "data" / "removed"
APP = "jellyfin"


def live(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return loaded


def last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """What git held when the object was applied client-side, without Argo CD's
    tracking annotation (Argo CD adds it, git never has it)."""
    applied: dict[str, Any] = json.loads(obj["metadata"]["annotations"][LAST_APPLIED])
    applied["metadata"].get("annotations", {}).pop("argocd.argoproj.io/tracking-id", None)
    applied["metadata"].get("labels", {}).pop("app.kubernetes.io/instance", None)
    return applied


def deployment_in_git() -> dict[str, Any]:
    """The Deployment as applied server-side (tracking annotation aside), with the
    replicas `kubectl scale` set since."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "jellyfin",
            "namespace": "media",
            "labels": {"app.kubernetes.io/name": "jellyfin"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "jellyfin"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "jellyfin"}},
                "spec": {
                    "containers": [
                        {
                            "name": "jellyfin",
                            "image": "jellyfin/jellyfin:10.10.3",
                            "ports": [
                                {"name": "http", "containerPort": 8096},
                                {"name": "dlna", "containerPort": 1900, "protocol": "UDP"},
                            ],
                            "env": [
                                {"name": "TZ", "value": "Europe/London"},
                                {"name": "JELLYFIN_CACHE_DIR", "value": "/cache"},
                            ],
                            "resources": {"limits": {"memory": "4Gi"}},
                        }
                    ],
                    "nodeSelector": {"kubernetes.io/hostname": "k8s-worker-2"},
                },
            },
        },
    }


def service_in_git() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "jellyfin", "namespace": "media"},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "jellyfin"},
            "ports": [
                {"name": "http", "port": 8096, "targetPort": "http"},
                {"name": "dlna", "port": 1900, "protocol": "UDP", "targetPort": 1900},
            ],
        },
    }


def report_diff(desired: dict[str, Any], obj: dict[str, Any], app: str = APP) -> Drift | None:
    """The report-mode diff: no dry-run, Argo CD's applied fields as the record."""
    return diff_object(object_ref(obj), desired, obj, applied=argocd_applied(obj, app))


def changes(found: Drift | None) -> tuple[Change, ...]:
    return found.changes if found is not None else ()


# -- client-side apply: the last-applied annotation ---------------------------------


def test_a_key_removed_from_git_after_a_client_side_apply_is_reported_with_its_live_value() -> None:
    obj = live("configmap-client-side")
    desired = last_applied(obj)
    del desired["data"]["LOG_LEVEL"]
    assert changes(report_diff(desired, obj)) == (Change("/data/LOG_LEVEL", None, "debug"),)
    # Without Argo CD's record the field looks like anyone's: nothing is reported.
    assert diff_object(object_ref(obj), desired, obj) is None


def test_an_annotation_removed_from_git_is_reported_but_controllers_and_argo_cds_are_not() -> None:
    obj = live("configmap-client-side")
    desired = last_applied(obj)
    del desired["metadata"]["annotations"]
    # Left: the reloader's annotation (another manager), Argo CD's tracking annotation
    # and label (the app's name), the last-applied annotation itself.
    assert changes(report_diff(desired, obj)) == (
        Change("/metadata/annotations", None, {"example.com/owner": "media-team"}),
    )


def test_an_instance_label_that_is_not_argo_cds_tracking_label_is_reported_when_removed() -> None:
    obj = live("configmap-client-side")
    # In app "media" the label ("jellyfin") was git's own, e.g. a chart's.
    assert changes(report_diff(last_applied(obj), obj, app="media")) == (
        Change("/metadata/labels/app.kubernetes.io~1instance", None, "jellyfin"),
    )


def test_a_secret_key_removed_from_git_is_reported_without_its_value() -> None:
    obj = live("secret-client-side")
    desired = last_applied(obj)
    del desired["data"]["OLD_TOKEN"]
    found = report_diff(desired, obj)
    assert found is not None
    [change] = found.changes
    assert change.path == "/data/OLD_TOKEN"
    assert change.desired is None
    assert str(change.live).startswith("<redacted ")
    shown = (
        repr(found)
        + json.dumps([found.desired, found.live])
        + render_text(found, cluster="prod", app=APP)
    )
    for value in ("retired-token-value", "s3cr3t-api-key-value"):
        assert value not in shown
        assert base64.b64encode(value.encode()).decode() not in shown


# -- server-side apply: argocd-controller's managedFields ----------------------------


def test_list_items_and_atomic_maps_removed_after_a_server_side_apply_are_reported() -> None:
    obj = live("deployment-server-side")
    desired = deployment_in_git()
    spec = desired["spec"]["template"]["spec"]
    spec["containers"][0]["env"].pop()  # JELLYFIN_CACHE_DIR
    del spec["nodeSelector"]
    assert changes(report_diff(desired, obj)) == (
        Change(
            "/spec/template/spec/containers/0/env/1",
            None,
            {"name": "JELLYFIN_CACHE_DIR", "value": "/cache"},
        ),
        Change(
            "/spec/template/spec/nodeSelector", None, {"kubernetes.io/hostname": "k8s-worker-2"}
        ),
    )


def test_a_field_another_manager_took_over_is_not_reported_when_git_drops_it() -> None:
    obj = live("deployment-server-side")
    desired = deployment_in_git()
    # `kubectl scale` (an HPA would do the same) took spec.replicas from Argo CD.
    del desired["spec"]["replicas"]
    assert report_diff(desired, obj) is None


def test_a_field_another_applier_also_owns_is_not_reported_but_a_port_is() -> None:
    obj = live("service-server-side")
    desired = service_in_git()
    del desired["spec"]["selector"]  # helm-operator applies it too: it stays live
    desired["spec"]["ports"].pop()  # dlna
    assert changes(report_diff(desired, obj)) == (
        Change(
            "/spec/ports/1",
            None,
            {"name": "dlna", "port": 1900, "protocol": "UDP", "targetPort": 1900},
        ),
    )


# -- no false drift --------------------------------------------------------------------


def test_objects_that_match_what_argo_cd_applied_show_no_drift() -> None:
    for name, desired in (
        ("configmap-client-side", None),
        ("secret-client-side", None),
        ("deployment-server-side", deployment_in_git()),
        ("service-server-side", service_in_git()),
    ):
        obj = live(name)
        assert report_diff(desired or last_applied(obj), obj) is None, name


def test_an_object_argo_cd_left_no_record_on_has_no_applied_fields() -> None:
    obj = live("configmap-client-side")
    del obj["metadata"]["annotations"][LAST_APPLIED]
    assert argocd_applied(obj, APP) is None


def test_an_unreadable_last_applied_annotation_reports_nothing() -> None:
    obj = copy.deepcopy(live("configmap-client-side"))
    obj["metadata"]["annotations"][LAST_APPLIED] = "{not json"
    desired = last_applied(live("configmap-client-side"))
    del desired["data"]["LOG_LEVEL"]
    assert report_diff(desired, obj) is None

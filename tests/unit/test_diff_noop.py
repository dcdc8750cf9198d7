"""The local no-op test (reconciler.diff.noop) says True only when the reconciler's
own Apply entry owns exactly the desired fields, each holding the desired value (of
the same type); on a report-mode cluster, Argo CD's Apply entry and no other apply,
its tracking annotation or label aside, as a real Argo CD leaves it."""

from __future__ import annotations

import copy
from typing import Any

from reconciler.diff.noop import applies_unchanged, reported_unchanged
from reconciler.diff.removed import ARGOCD_MANAGER, LAST_APPLIED, TRACKING_LABEL
from reconciler.model import FIELD_MANAGER
from tests.unit.test_removed_fields import APP, deployment_in_git, report_diff
from tests.unit.test_removed_fields import live as recorded

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "lab", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
                ]
            }
        },
    },
}
APPLIED: dict[str, Any] = {
    "f:metadata": {"f:labels": {"f:app": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"web"}': {
                        ".": {},
                        "f:name": {},
                        "f:image": {},
                        "f:ports": {
                            'k:{"containerPort":80,"protocol":"TCP"}': {
                                ".": {},
                                "f:containerPort": {},
                            }
                        },
                    }
                }
            }
        },
    },
}


def live(fields: dict[str, Any] = APPLIED, **changes: Any) -> dict[str, Any]:
    """The Deployment as the API server holds it after the reconciler applied DESIRED:
    defaults and another manager's status filled in, the reconciler's entry recorded."""
    obj = copy.deepcopy(DESIRED)
    obj["metadata"] |= {"uid": "u1", "resourceVersion": "7", "generation": 1}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container |= {"imagePullPolicy": "IfNotPresent"}
    container["ports"][0]["protocol"] = "TCP"
    obj["spec"]["strategy"] = {"type": "RollingUpdate"}
    obj["status"] = {"replicas": 2}
    entries = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "subresource": "status",
            "fieldsV1": {"f:status": {"f:replicas": {}}},
        },
    ]
    obj["metadata"]["managedFields"] = entries
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = obj
        for key in parents:
            node = node[key]
        node[last] = value
    return obj


def test_the_reconcilers_own_unchanged_apply_is_a_no_op() -> None:
    assert applies_unchanged(DESIRED, live(), FIELD_MANAGER)


def test_a_value_changed_live_is_not_a_no_op() -> None:
    assert not applies_unchanged(DESIRED, live(spec__replicas=3), FIELD_MANAGER)


def test_a_field_git_added_or_removed_is_not_a_no_op() -> None:
    grown = copy.deepcopy(DESIRED)
    grown["spec"]["paused"] = False
    assert not applies_unchanged(grown, live(), FIELD_MANAGER)
    shrunk = copy.deepcopy(DESIRED)
    del shrunk["metadata"]["labels"]
    assert not applies_unchanged(shrunk, live(), FIELD_MANAGER)


def test_a_field_taken_by_another_manager_is_not_a_no_op() -> None:
    taken = copy.deepcopy(APPLIED)
    del taken["f:spec"]["f:replicas"]
    assert not applies_unchanged(DESIRED, live(taken), FIELD_MANAGER)


def test_another_api_version_or_manager_is_not_a_no_op() -> None:
    assert not applies_unchanged(DESIRED | {"apiVersion": "apps/v1beta2"}, live(), FIELD_MANAGER)
    assert not applies_unchanged(DESIRED, live(), "someone-else")
    bare = live()
    del bare["metadata"]["managedFields"]
    assert not applies_unchanged(DESIRED, bare, FIELD_MANAGER)


def test_list_items_in_another_order_are_not_a_no_op() -> None:
    two = copy.deepcopy(DESIRED)
    containers = two["spec"]["template"]["spec"]["containers"]
    containers.append({"name": "side", "image": "busybox"})
    fields = copy.deepcopy(APPLIED)
    fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"side"}'] = {
        ".": {},
        "f:name": {},
        "f:image": {},
    }
    held = live(fields)
    held["spec"]["template"]["spec"]["containers"] = list(reversed(containers))
    assert not applies_unchanged(two, held, FIELD_MANAGER)
    held["spec"]["template"]["spec"]["containers"] = copy.deepcopy(containers)
    held["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = "TCP"
    assert applies_unchanged(two, held, FIELD_MANAGER)


def test_a_value_python_calls_equal_but_of_another_type_is_not_a_no_op() -> None:
    assert not applies_unchanged(DESIRED, live(spec__replicas=2.0), FIELD_MANAGER)


def argocd_applied_live(**changes: Any) -> dict[str, Any]:
    """DESIRED as Argo CD's server-side apply (ServerSideApply=true) left it."""
    obj = live(**changes)
    obj["metadata"]["managedFields"][0]["manager"] = ARGOCD_MANAGER
    return obj


def test_argocd_server_side_apply_of_exactly_git_leaves_a_report_mode_diff_nothing() -> None:
    assert reported_unchanged(DESIRED, argocd_applied_live(), "web")
    assert not reported_unchanged(DESIRED, argocd_applied_live(spec__replicas=3), "web")
    assert not reported_unchanged(DESIRED, live(), "web"), "the reconciler's apply is not Argo CD's"


def test_any_other_apply_on_record_sends_a_report_mode_object_to_its_diff() -> None:
    annotated = argocd_applied_live()
    annotated["metadata"]["annotations"] = {LAST_APPLIED: "{}"}
    assert not reported_unchanged(DESIRED, annotated, "web"), "a client-side apply may own more"
    ours = argocd_applied_live()
    ours["metadata"]["managedFields"].append(live()["metadata"]["managedFields"][0])
    assert not reported_unchanged(DESIRED, ours, "web"), "fields of the reconciler's own manager"


def recorded_in_git() -> dict[str, Any]:
    """What git holds for the recorded Deployment: all Argo CD's server-side apply owns
    but its tracking annotation (`kubectl scale` has taken spec.replicas since)."""
    desired = deployment_in_git()
    del desired["spec"]["replicas"]
    return desired


def test_argo_cds_own_tracking_annotation_does_not_hide_an_unchanged_apply() -> None:
    obj = recorded("deployment-server-side")
    assert "argocd.argoproj.io/tracking-id" in obj["metadata"]["annotations"]
    assert reported_unchanged(recorded_in_git(), obj, APP)
    assert report_diff(recorded_in_git(), obj) is None, "the diff agrees"


def test_a_field_git_removed_or_changed_under_argo_cds_tracking_goes_to_the_diff() -> None:
    obj = recorded("deployment-server-side")
    removed = recorded_in_git()
    del removed["spec"]["template"]["spec"]["nodeSelector"]
    assert not reported_unchanged(removed, obj, APP)
    assert report_diff(removed, obj) is not None
    changed = recorded_in_git()
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "jellyfin/jellyfin:10.11.0"
    assert not reported_unchanged(changed, obj, APP)
    # git setting the tracking annotation itself is compared, not left out.
    tracked = recorded_in_git()
    tracked["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "someone-else"}
    assert not reported_unchanged(tracked, obj, APP)


def label_tracked() -> dict[str, Any]:
    """The recorded Deployment as Argo CD's label tracking (its default before v3)
    applies it: the instance label, set to the app's name, in place of the annotation."""
    obj = recorded("deployment-server-side")
    del obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"]
    obj["metadata"]["labels"][TRACKING_LABEL] = APP
    fields = obj["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]
    del fields["f:annotations"]
    fields["f:labels"][f"f:{TRACKING_LABEL}"] = {}
    return obj


def test_argo_cds_instance_label_is_left_out_only_when_it_names_the_app() -> None:
    obj = label_tracked()
    assert reported_unchanged(recorded_in_git(), obj, APP)
    assert not reported_unchanged(recorded_in_git(), obj, "another-app"), "git removed it"
    labelled = recorded_in_git()
    labelled["metadata"]["labels"][TRACKING_LABEL] = APP
    assert reported_unchanged(labelled, obj, APP), "set by git too, and equal"

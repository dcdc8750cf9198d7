"""The local no-op test (reconciler.diff.noop) says True only when the reconciler's
own Apply entry owns exactly the desired fields, each holding the desired value."""

from __future__ import annotations

import copy
from typing import Any

from reconciler.diff.noop import applies_unchanged
from reconciler.model import FIELD_MANAGER

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

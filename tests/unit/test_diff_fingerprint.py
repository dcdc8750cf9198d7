"""A verdict's basis moves with what can change a diff, and only with that."""

from __future__ import annotations

import copy
from typing import Any

from reconciler.diff.fingerprint import canonical, project

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web"}]}}},
}
LIVE: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "labels": {"app": "web"},
        "annotations": {"deployment.kubernetes.io/revision": "1"},
        "resourceVersion": "41",
    },
    "spec": {
        "replicas": 1,
        "strategy": {"type": "RollingUpdate"},
        "template": {"spec": {"containers": [{"name": "web", "imagePullPolicy": "Always"}]}},
    },
    "status": {"replicas": 0},
}


def basis(desired: dict[str, Any], live: dict[str, Any]) -> tuple[str, str]:
    """What the engine keys a verdict by: desired, and live as far as desired reaches."""
    return canonical(desired), canonical(project(live, desired))


def test_projection_keeps_only_the_desired_shape_and_whole_lists() -> None:
    assert project(LIVE, DESIRED) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "web", "imagePullPolicy": "Always"}]}},
        },
    }


def test_status_resource_version_and_controller_annotations_do_not_move_the_basis() -> None:
    later = copy.deepcopy(LIVE)
    later["status"] = {"replicas": 1, "readyReplicas": 1}
    later["metadata"]["resourceVersion"] = "97"
    later["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert basis(DESIRED, later) == basis(DESIRED, LIVE)


def test_a_live_edit_of_a_desired_field_or_a_git_change_moves_the_basis() -> None:
    edited = copy.deepcopy(LIVE)
    edited["spec"]["replicas"] = 5
    assert basis(DESIRED, edited) != basis(DESIRED, LIVE)
    defaulted = copy.deepcopy(LIVE)
    defaulted["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    assert basis(DESIRED, defaulted) != basis(DESIRED, LIVE)
    changed = copy.deepcopy(DESIRED)
    changed["metadata"]["labels"]["tier"] = "front"
    assert basis(changed, LIVE) != basis(DESIRED, LIVE)

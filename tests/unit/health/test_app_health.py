"""Health reads as Argo CD's does: the least healthy object decides an app's."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.health import Health, Status, assess, object_health, worst
from reconciler.health.base import check


def deployment(
    replicas: int, available: int, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
        },
    }


def test_a_deployment_is_healthy_only_when_its_replicas_are_available() -> None:
    assert object_health(deployment(2, 2)) == "Healthy"
    assert object_health(deployment(2, 1)) == "Progressing"
    assert object_health(deployment(2, 2, generation=3, observed=2)) == "Progressing"


def test_a_deployment_past_its_progress_deadline_is_degraded() -> None:
    stuck = deployment(1, 0)
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    assert object_health(stuck) == "Degraded"


def test_claims_jobs_and_load_balancers_wait_for_their_status() -> None:
    assert object_health({"kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}}) == (
        "Progressing"
    )
    assert (
        object_health({"kind": "PersistentVolumeClaim", "status": {"phase": "Bound"}}) == "Healthy"
    )
    failed = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    assert object_health(failed) == "Degraded"
    lb = {"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}
    assert object_health(lb) == "Progressing"
    assert object_health({"kind": "ConfigMap"}) == "Healthy"


def test_the_worst_health_wins() -> None:
    assert worst(["Healthy", "Progressing", "Healthy"]) == "Progressing"
    assert worst(["Healthy", "Missing", "Degraded"]) == "Missing"
    assert worst([]) is None


def test_suspended_is_better_than_progressing_and_unknown_worst_of_all() -> None:
    assert worst(["Healthy", "Suspended"]) == "Suspended"
    assert worst(["Suspended", "Progressing"]) == "Progressing"
    assert worst(["Missing", "Unknown", "Degraded"]) == "Unknown"


def test_an_object_being_deleted_is_progressing_whatever_its_kind() -> None:
    doomed = deployment(2, 2)
    doomed["metadata"]["deletionTimestamp"] = "2026-12-01T21:14:29Z"
    assert assess(doomed) == Health(Status.PROGRESSING, "pending deletion")
    gone = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(doomed["metadata"])}
    assert object_health(gone) == "Progressing"


def test_kinds_are_told_apart_by_group_not_by_name_alone() -> None:
    # A custom resource that happens to be called Deployment is judged by its conditions.
    custom = {
        "apiVersion": "example.com/v1",
        "kind": "Deployment",
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Failed"}]},
    }
    assert object_health(custom) == "Degraded"
    assert assess({"apiVersion": "example.com/v1", "kind": "Deployment"}) is None


def test_a_kind_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match=r"Deployment\.apps"):
        check("apps", "Deployment")(lambda obj: None)

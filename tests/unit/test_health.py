"""Health reads as Argo CD's does: the least healthy object decides an app's."""

from __future__ import annotations

from typing import Any

from reconciler.health import object_health, worst


def deployment(
    replicas: int, available: int, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "availableReplicas": available},
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
    failed = {"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert object_health(failed) == "Degraded"
    lb = {"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}
    assert object_health(lb) == "Progressing"
    assert object_health({"kind": "ConfigMap"}) == "Healthy"


def test_the_worst_health_wins() -> None:
    assert worst(["Healthy", "Progressing", "Healthy"]) == "Progressing"
    assert worst(["Healthy", "Missing", "Degraded"]) == "Missing"
    assert worst([]) is None

"""StatefulSet: Healthy once its replicas are ready and the rollout reached the
partition (a partition holds back the lower ordinals on purpose); with OnDelete
pods are replaced by hand, so readiness alone decides."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, number, spec, status, unobserved


@check("apps", "StatefulSet")
def statefulset(obj: Object) -> Health:
    if waiting := unobserved(obj):
        return waiting
    st, want = status(obj), number(spec(obj), "replicas", 1)
    if (ready := number(st, "readyReplicas")) < want:
        return Health(Status.PROGRESSING, f"{ready} of {want} pods ready")
    strategy = spec(obj).get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return Health(Status.HEALTHY, f"{ready} pods ready; updates wait for pods to be deleted")
    partition = number(strategy.get("rollingUpdate") or {}, "partition")
    updated, due = number(st, "updatedReplicas"), max(want - partition, 0)
    if updated < due:
        return Health(Status.PROGRESSING, f"{updated} of {due} pods updated")
    return Health(Status.HEALTHY, f"{updated} pods updated")

"""Deployment: paused is Suspended, a missed progress deadline Degraded, and it is
Healthy once every replica runs the current template and is available."""

from __future__ import annotations

from reconciler.health.base import (
    Health,
    Object,
    Status,
    check,
    condition,
    number,
    spec,
    status,
    unobserved,
)


@check("apps", "Deployment")
def deployment(obj: Object) -> Health:
    if spec(obj).get("paused") is True:
        return Health(Status.SUSPENDED, "Deployment is paused")
    if waiting := unobserved(obj):
        return waiting
    progressing = condition(obj, "Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(
            Status.DEGRADED, f"exceeded its progress deadline: {progressing.get('message', '')}"
        )
    st = status(obj)
    want, updated = number(spec(obj), "replicas", 1), number(st, "updatedReplicas")
    if updated < want:
        return Health(Status.PROGRESSING, f"{updated} of {want} replicas updated")
    if (old := number(st, "replicas") - updated) > 0:
        return Health(Status.PROGRESSING, f"{old} old replicas pending termination")
    if (available := number(st, "availableReplicas")) < updated:
        return Health(Status.PROGRESSING, f"{available} of {updated} updated replicas available")
    return Health(Status.HEALTHY)

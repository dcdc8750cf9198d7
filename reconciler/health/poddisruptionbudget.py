"""PodDisruptionBudget: Healthy once the disruption controller has judged it, even
when too few pods are healthy to allow a disruption (a budget that blocks
evictions on purpose is working); Degraded when the controller fails on it."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, condition, number, status


@check("policy", "PodDisruptionBudget")
def poddisruptionbudget(obj: Object) -> Health:
    allowed = condition(obj, "DisruptionAllowed")
    if allowed is None:
        return Health(Status.PROGRESSING, "waiting for the disruption controller")
    st, reason = status(obj), allowed.get("reason")
    pods = f"{number(st, 'currentHealthy')} of {number(st, 'desiredHealthy')} desired pods healthy"
    if allowed.get("status") == "False" and reason != "InsufficientPods":
        return Health(Status.DEGRADED, f"{reason}: {allowed.get('message') or pods}")
    return Health(Status.HEALTHY, f"{reason}: {pods}")

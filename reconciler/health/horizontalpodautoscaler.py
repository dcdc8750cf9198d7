"""HorizontalPodAutoscaler: Degraded when it cannot read or update its target's
scale or cannot compute a replica count from its metrics; Healthy once it is
able to scale and scaling is active (within or at its replica limits)."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, condition

# Reasons the HPA controller gives when it cannot do its job, as opposed to
# waiting (ScalingDisabled, BackoffBoth, ...); all of them start like this.
_FAILURES = ("Failed", "Invalid")


@check("autoscaling", "HorizontalPodAutoscaler")
def horizontalpodautoscaler(obj: Object) -> Health:
    able, active = condition(obj, "AbleToScale") or {}, condition(obj, "ScalingActive") or {}
    for cond in (able, active):
        if cond.get("status") == "False" and str(cond.get("reason", "")).startswith(_FAILURES):
            return Health(Status.DEGRADED, str(cond.get("message") or cond.get("reason")))
    if able.get("status") == "True" and active.get("status") == "True":
        limited = condition(obj, "ScalingLimited") or {}
        return Health(Status.HEALTHY, str(limited.get("message") or active.get("message") or ""))
    waiting = active.get("message") or able.get("message") or "waiting to autoscale"
    return Health(Status.PROGRESSING, str(waiting))

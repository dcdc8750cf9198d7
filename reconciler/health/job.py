"""Job: Degraded once it failed, Healthy once complete, Suspended while held, and
Progressing while its pods run."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, condition, is_true


@check("batch", "Job")
def job(obj: Object) -> Health:
    for kind, health in (
        ("Failed", Status.DEGRADED),
        ("Complete", Status.HEALTHY),
        ("Suspended", Status.SUSPENDED),
    ):
        if is_true(obj, kind):
            return Health(health, str((condition(obj, kind) or {}).get("message") or ""))
    return Health(Status.PROGRESSING)

"""PersistentVolumeClaim: Healthy once bound to a volume, Progressing while pending,
Degraded when its volume is lost."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, status

_BY_PHASE = {"Bound": Status.HEALTHY, "Pending": Status.PROGRESSING, "Lost": Status.DEGRADED}


@check("", "PersistentVolumeClaim")
def persistentvolumeclaim(obj: Object) -> Health:
    phase = status(obj).get("phase")
    return Health(_BY_PHASE.get(str(phase), Status.UNKNOWN), f"phase {phase}")

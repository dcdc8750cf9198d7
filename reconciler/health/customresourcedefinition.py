"""CustomResourceDefinition: Healthy once its names are accepted and it is
established (served); Degraded when its names clash. (A terminating one has a
deletionTimestamp, which is judged alike for every kind.)"""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, condition, is_true, status


@check("apiextensions.k8s.io", "CustomResourceDefinition")
def customresourcedefinition(obj: Object) -> Health:
    if not status(obj).get("conditions"):
        return Health(Status.PROGRESSING, "waiting for the API server to accept it")
    if (condition(obj, "NamesAccepted") or {}).get("status") == "False":
        return Health(Status.DEGRADED, f"names not accepted: {_message(obj, 'NamesAccepted')}")
    if not is_true(obj, "Established"):
        return Health(Status.DEGRADED, f"not established: {_message(obj, 'Established')}")
    return Health(Status.HEALTHY)


def _message(obj: Object, kind: str) -> str:
    return str((condition(obj, kind) or {}).get("message") or "")

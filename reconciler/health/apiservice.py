"""APIService: Healthy once the aggregator reports the backing API available;
Progressing until then (the backend may still be starting)."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, condition


@check("apiregistration.k8s.io", "APIService")
def apiservice(obj: Object) -> Health:
    available = condition(obj, "Available")
    if available is None:
        return Health(Status.PROGRESSING, "waiting for the aggregator")
    health = Status.HEALTHY if available.get("status") == "True" else Status.PROGRESSING
    return Health(health, f"{available.get('reason')}: {available.get('message', '')}")

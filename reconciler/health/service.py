"""Service: one of type LoadBalancer is Progressing until the load balancer reports
an address; every other Service is Healthy once it exists."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, load_balanced, spec


@check("", "Service")
def service(obj: Object) -> Health:
    if spec(obj).get("type") != "LoadBalancer":
        return Health(Status.HEALTHY)
    return load_balanced(obj) or Health(Status.PROGRESSING, "waiting for a load balancer address")

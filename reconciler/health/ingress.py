"""Ingress: Progressing until its ingress controller reports a load balancer address."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, load_balanced


@check("networking.k8s.io", "Ingress")
def ingress(obj: Object) -> Health:
    return load_balanced(obj) or Health(Status.PROGRESSING, "waiting for a load balancer address")

"""Health in Argo CD's words, from live objects alone (pure).

`reconciler status` reports each app as Healthy, Progressing, Degraded or
Missing so that people who know Argo CD read it the same way on every
cluster. Only kinds whose health the API states plainly are judged; others
count as Healthy once they exist, as in Argo CD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Worst first: an app's health is that of its least healthy object.
ORDER = ("Missing", "Degraded", "Progressing", "Healthy")


def object_health(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind")
    spec: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        if generation is not None and status.get("observedGeneration", 0) < generation:
            return "Progressing"
        if kind == "Deployment" and _condition(status, "Progressing") == "ProgressDeadlineExceeded":
            return "Degraded"
        if kind == "DaemonSet":
            want, ready = status.get("desiredNumberScheduled", 0), status.get("numberAvailable", 0)
        else:
            want = spec.get("replicas", 1)
            ready = status.get("availableReplicas", status.get("readyReplicas", 0))
        return "Healthy" if ready >= want else "Progressing"
    if kind == "PersistentVolumeClaim":
        return "Healthy" if status.get("phase") == "Bound" else "Progressing"
    if kind == "Job":
        if _condition(status, "Failed", reason=False) == "True":
            return "Degraded"
        return (
            "Healthy" if _condition(status, "Complete", reason=False) == "True" else "Progressing"
        )
    if kind == "Service" and spec.get("type") == "LoadBalancer":
        return "Healthy" if (status.get("loadBalancer") or {}).get("ingress") else "Progressing"
    return "Healthy"


def worst(healths: Iterable[str]) -> str | None:
    """The least healthy of `healths`, or None when there is none."""
    found = set(healths)
    return next((h for h in ORDER if h in found), None)


def _condition(status: Mapping[str, Any], kind: str, reason: bool = True) -> str | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == kind:
            value = condition.get("reason") if reason else condition.get("status")
            return str(value) if value is not None else None
    return None

"""Custom resources without a check of their own: judged by a Ready (or else
Available) condition, the convention most operators follow and the one Argo CD's
bundled Lua checks (cert-manager, Flux, Crossplane, ...) read.

Ready True is Healthy; False is Degraded unless the controller says it is still
working on it (a Reconciling condition, or a reason that says so); Unknown is
Progressing. A resource with neither condition states no health.
"""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, condition, is_true, status, unobserved

# Reasons under which a False Ready condition means "not yet" rather than "failed"
# (Flux, Crossplane and kstatus spell it these ways).
_WORKING = frozenset({"Progressing", "Reconciling", "Pending", "InProgress", "Creating"})


def by_conditions(obj: Object) -> Health | None:
    ready = condition(obj, "Ready") or condition(obj, "Available")
    if ready is None:
        return None
    # Only operators that report observedGeneration can be caught behind the spec.
    if "observedGeneration" in status(obj) and (waiting := unobserved(obj)):
        return waiting
    state, reason = ready.get("status"), str(ready.get("reason") or "")
    message = str(ready.get("message") or reason)
    if state == "True":
        return Health(Status.HEALTHY, message)
    if state == "False" and reason not in _WORKING and not is_true(obj, "Reconciling"):
        return Health(Status.DEGRADED, message)
    return Health(Status.PROGRESSING, message)

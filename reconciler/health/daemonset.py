"""DaemonSet: Healthy once the pod on every eligible node runs the current template
and is available; with OnDelete pods are replaced by hand, so it is Healthy as
soon as the controller has seen the spec."""

from __future__ import annotations

from reconciler.health.base import Health, Object, Status, check, number, spec, status, unobserved


@check("apps", "DaemonSet")
def daemonset(obj: Object) -> Health:
    if waiting := unobserved(obj):
        return waiting
    st = status(obj)
    want = number(st, "desiredNumberScheduled")
    if (spec(obj).get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health(
            Status.HEALTHY, f"{number(st, 'updatedNumberScheduled')} of {want} pods updated"
        )
    if (updated := number(st, "updatedNumberScheduled")) < want:
        return Health(Status.PROGRESSING, f"{updated} of {want} pods updated")
    if (available := number(st, "numberAvailable")) < want:
        return Health(Status.PROGRESSING, f"{available} of {want} pods available")
    return Health(Status.HEALTHY)

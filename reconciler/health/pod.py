"""Pod: judged by phase; a long-running pod (restartPolicy Always) is Degraded as soon
as a container cannot start or keeps crashing, and Healthy only when ready. Pods that
run to completion stay Progressing while running, as hook pods do in Argo CD."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.health.base import Health, Object, Status, check, is_true, spec, status


@check("", "Pod")
def pod(obj: Object) -> Health:
    st = status(obj)
    containers: list[Mapping[str, Any]] = list(st.get("containerStatuses") or ())
    always = spec(obj).get("restartPolicy", "Always") == "Always"
    if always and (stuck := list(_waiting(containers))):
        return Health(Status.DEGRADED, ", ".join(stuck))
    phase, message = st.get("phase"), str(st.get("message") or "")
    if phase == "Pending":
        return Health(Status.PROGRESSING, message)
    if phase == "Succeeded":
        return Health(Status.HEALTHY, message)
    if phase == "Failed":
        inits = st.get("initContainerStatuses") or ()
        return Health(Status.DEGRADED, message or _failure([*inits, *containers]))
    if phase == "Running":
        if not always:
            return Health(Status.PROGRESSING, message)
        if is_true(obj, "Ready"):
            return Health(Status.HEALTHY, message)
        if any((c.get("lastState") or {}).get("terminated") for c in containers):
            return Health(Status.DEGRADED, message or "a container restarted and is not ready")
        return Health(Status.PROGRESSING, message)
    return Health(Status.UNKNOWN, message)


def _waiting(containers: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    """Messages of containers waiting for a reason that will not clear by itself
    (ErrImagePull, CreateContainerConfigError, CrashLoopBackOff, ...)."""
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason.startswith("Err") or reason.endswith(("Error", "BackOff")):
            yield str(waiting.get("message") or f"{c.get('name')}: {reason}")


def _failure(containers: Iterable[Mapping[str, Any]]) -> str:
    for c in containers:
        done = (c.get("state") or {}).get("terminated") or {}
        if done.get("message"):
            return str(done["message"])
        if done.get("reason") == "OOMKilled" or done.get("exitCode"):
            reason, code = done.get("reason"), done.get("exitCode")
            return f"container {c.get('name')} {reason} (exit code {code})"
    return ""

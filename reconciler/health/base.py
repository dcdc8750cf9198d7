"""What every health check shares: the result, the registry and condition lookup.

A check takes one live object as the API server returns it and says how healthy
it is, in Argo CD's words, or None when its kind states no health. Checks are
registered by GroupKind so that judging a new kind is adding one module to this
package; the version is left out because every served version of a kind carries
the same status fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler.model import GroupKind


class Status(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Health:
    status: Status
    message: str = ""


Object = Mapping[str, Any]
Check = Callable[[Object], Health | None]

CHECKS: dict[GroupKind, Check] = {}


def check(group: str, kind: str) -> Callable[[Check], Check]:
    """Register the decorated function as the health check of `kind` in `group`."""

    def register(fn: Check) -> Check:
        key = GroupKind(group, kind)
        if key in CHECKS:
            raise ValueError(f"health check for {key} registered twice")
        CHECKS[key] = fn
        return fn

    return register


def spec(obj: Object) -> Mapping[str, Any]:
    return _mapping(obj.get("spec"))


def status(obj: Object) -> Mapping[str, Any]:
    return _mapping(obj.get("status"))


def metadata(obj: Object) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def condition(obj: Object, kind: str) -> Mapping[str, Any] | None:
    """The status condition of type `kind`, or None when the controller wrote none."""
    for cond in status(obj).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def is_true(obj: Object, kind: str) -> bool:
    cond = condition(obj, kind)
    return cond is not None and cond.get("status") == "True"


def unobserved(obj: Object) -> Health | None:
    """Progressing while the controller has not yet seen the latest spec: the status
    then describes an older generation and says nothing about this one."""
    generation = metadata(obj).get("generation")
    observed = status(obj).get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return Health(
            Status.PROGRESSING, f"waiting for the controller to observe generation {generation}"
        )
    return None


def number(fields: Mapping[str, Any], key: str, default: int = 0) -> int:
    """An integer status or spec field; the API omits zero counts."""
    value = fields.get(key)
    return value if isinstance(value, int) else default


def load_balanced(obj: Object) -> Health | None:
    """Healthy when `status.loadBalancer` lists an address (Service and Ingress alike)."""
    ingress = _mapping(status(obj).get("loadBalancer")).get("ingress") or ()
    if not ingress:
        return None
    addresses = (_mapping(a).get("ip") or _mapping(a).get("hostname") for a in ingress)
    return Health(Status.HEALTHY, ", ".join(str(a) for a in addresses if a))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}

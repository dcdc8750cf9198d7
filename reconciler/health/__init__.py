"""Health in Argo CD's words, from live objects alone (pure).

`reconciler status` reports each app as Healthy, Progressing, Degraded, Suspended,
Missing or Unknown so that people who know Argo CD read it the same way on every
cluster. Each kind Argo CD judges has its own module here, registered by GroupKind
(`base.check`); every module of this package is loaded, so judging a new kind is
adding a file. Custom resources without a module are judged by their Ready
condition (`conditions`); kinds that state no health count as Healthy once they
exist, as in Argo CD.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from reconciler.health.base import CHECKS, Health, Object, Status
from reconciler.health.conditions import by_conditions
from reconciler.model import GroupKind, api_group

__all__ = ["CHECKS", "ORDER", "Health", "Status", "assess", "object_health", "worst"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# Worst first: an app's health is that of its least healthy object.
# (Argo CD ranks Degraded below Missing; here a missing object stays the worst news
# short of Unknown, as `reconciler status` has always ranked it.)
ORDER = (
    Status.UNKNOWN,
    Status.MISSING,
    Status.DEGRADED,
    Status.PROGRESSING,
    Status.SUSPENDED,
    Status.HEALTHY,
)


def assess(obj: Object) -> Health | None:
    """The health of one live object, or None when its kind states none."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health(Status.PROGRESSING, "pending deletion")
    key = GroupKind(api_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")))
    check = CHECKS.get(key)
    return check(obj) if check is not None else by_conditions(obj)


def object_health(obj: Object) -> str:
    """`assess` as one word; an object whose kind states no health is Healthy."""
    health = assess(obj)
    return (health.status if health is not None else Status.HEALTHY).value


def worst(healths: Iterable[str]) -> str | None:
    """The least healthy of `healths`, or None when there is none."""
    found = set(healths)
    return next((h.value for h in ORDER if h in found), None)

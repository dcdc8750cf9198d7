"""Objects as Argo CD applies them, for the stand-ins that play prod's Argo CD (the
demo, the bench): a real one adds its tracking annotation to every object it applies,
and the report-mode diff must meet what a real one leaves, not git's objects bare."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.diff.removed import TRACKING_ANNOTATIONS

TRACKING_ID = TRACKING_ANNOTATIONS[0]


def tracked(obj: Mapping[str, Any], app: str) -> dict[str, Any]:
    """`obj` with the annotation Argo CD's annotation tracking (its default since v3)
    gives an object of `app`: `app:group/Kind:namespace/name`."""
    metadata = obj["metadata"]
    group = str(obj["apiVersion"]).rpartition("/")[0]
    where = f"{metadata.get('namespace', '')}/{metadata['name']}"
    annotations = {
        **(metadata.get("annotations") or {}),
        TRACKING_ID: f"{app}:{group}/{obj['kind']}:{where}",
    }
    return {**obj, "metadata": {**metadata, "annotations": annotations}}

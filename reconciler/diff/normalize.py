"""Normalisation that keeps server behaviour from showing as drift (invariant 6).

The API server adds bookkeeping (managedFields, resourceVersion, status ...), fills
in defaults, rewrites quantities canonically, turns Secret `stringData` into `data`
and drops empty values. Each function here undoes one of those so that only what a
person or a controller really changed is left for the comparison.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
# Written by kubectl and controllers, never by git; the first also holds a copy of
# the whole object (Secret data included) that must never reach a diff.
CONTROLLER_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
)


def plain(value: Any) -> Any:
    """A deep, mutable copy of JSON-like data (callers hand in read-only Mappings)."""
    kind = type(value)
    # Exact types first: every diff copies whole objects, and a leaf asked whether it
    # is a Mapping costs an ABC check, several times what the rest of its copy does.
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if kind is list or isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Remove in place what only the server writes; returns `obj` for chaining."""
    obj.pop("status", None)
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        for name in SERVER_METADATA:
            metadata.pop(name, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            for name in CONTROLLER_ANNOTATIONS:
                annotations.pop(name, None)
            if not annotations:
                del metadata["annotations"]
    return obj


def fold_string_data(obj: dict[str, Any]) -> dict[str, Any]:
    """Merge a Secret's write-only `stringData` into `data`, as the API server does,
    so a Secret written with stringData in git compares equal to its live form."""
    string_data = obj.pop("stringData", None) if obj.get("kind") == "Secret" else None
    if isinstance(string_data, dict) and string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    return obj


_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
# The server writes quantities as an integer with a suffix or exponent ("1", "500m",
# "1Gi", "1e3"): a live value in any other form was not rewritten by the server.
_CANONICAL = re.compile(r"^-?\d+(?:[numkMGTPE]|[KMGTPE]i|[eE]\d+)?$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        return Decimal(match["number"]) * _SUFFIXES[match["suffix"] or ""]
    except InvalidOperation:
        return None


def same_scalar(desired: Any, live: Any) -> bool:
    """Equal, or the same quantity spelled the way the server canonicalises it
    (`cpu: 1` -> "1", `0.5` -> "500m", `1024Mi` -> "1Gi"). The server returns every
    other string byte for byte, so a textual difference between equal quantities, the
    live one in canonical form, can only be its rewriting."""
    if desired == live and isinstance(desired, bool) == isinstance(live, bool):
        return True
    if not isinstance(live, str) or not _CANONICAL.match(live):
        return False
    parsed = _quantity(desired)
    return parsed is not None and parsed == _quantity(live)

"""Whether the reconciler's apply of an object would change nothing, told locally.

A server-side dry-run answers that exactly, at a round trip and some API server
CPU per object; a cold start with an empty state pays it for every object of
every cluster. The answer is already in the live object when the reconciler's
own apply made it: its field manager's Apply entry in `managedFields` lists
the fields it owns. If those are exactly the desired object's fields, each
holding the desired value, then applying the desired object again (forced, as
the reconciler applies) changes no value and no owner: a no-op.

The test is strict, so it only ever saves a dry-run: anything it cannot show
equal (another apiVersion, a value the server normalised, a list in another
order, a field someone else took) makes it answer False, and the caller asks
the server as before. It never reports drift itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.diff.fieldsets import owned_part, parse_fields_v1
from reconciler.diff.normalize import plain

# Set by the request, never owned as fields, and fixed for an object's life.
_IDENTITY = ("name", "namespace")


def applies_unchanged(desired: Mapping[str, Any], live: Mapping[str, Any], manager: str) -> bool:
    """Whether `manager`'s server-side apply of `desired` would leave `live` as it is."""
    metadata = live.get("metadata")
    entries = metadata.get("managedFields") if isinstance(metadata, Mapping) else None
    applied = [
        e
        for e in entries or ()
        if isinstance(e, Mapping)
        and e.get("manager") == manager
        and e.get("operation") == "Apply"
        and not e.get("subresource")
    ]
    if len(applied) != 1:
        return False
    entry = applied[0]
    fields = entry.get("fieldsV1")
    if (
        entry.get("apiVersion") != desired.get("apiVersion")
        or live.get("apiVersion") != desired.get("apiVersion")
        or entry.get("fieldsType", "FieldsV1") != "FieldsV1"
        or not isinstance(fields, Mapping)
    ):
        return False
    owned = owned_part(plain(dict(live)), parse_fields_v1(fields))
    return bool(owned == _applied_fields(desired))


def _applied_fields(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as its owned fields read back: without its type and identity, which
    are the request's, not fields."""
    body = {k: v for k, v in plain(dict(desired)).items() if k not in ("apiVersion", "kind")}
    metadata = {k: v for k, v in (body.pop("metadata", None) or {}).items() if k not in _IDENTITY}
    if metadata:
        body["metadata"] = metadata
    return body

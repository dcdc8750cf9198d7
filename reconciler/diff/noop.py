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

A report-mode cluster gets no dry-run but a diff, which the same record can spare:
when Argo CD's server-side apply made the object as git has it, there is nothing
to report (`reported_unchanged`). Argo CD applies its tracking annotation (or
label) too, which git does not hold and the diff never reports: those fields of
its record are left out of the comparison.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.diff.compare import identical
from reconciler.diff.fieldsets import FieldSet, owned_part, parse_fields_v1
from reconciler.diff.fingerprint import canonical
from reconciler.diff.removed import ARGOCD_MANAGER, LAST_APPLIED, tracking_fields
from reconciler.model import FIELD_MANAGER

# Set by the request, never owned as fields, and fixed for an object's life.
_IDENTITY = ("name", "namespace")


def applies_unchanged(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    manager: str,
    unowned: Sequence[Sequence[str]] = (),
) -> bool:
    """Whether `manager`'s server-side apply of `desired` would leave `live` as it is,
    with the fields at the paths `unowned` taken out of its record first."""
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
    for path in unowned:
        fields = _without(fields, path)
    # Read, never copied: owned_part builds only the small owned part, and a cold start
    # asks this of every object of every apply-mode cluster.
    owned = owned_part(live, _fields(canonical(fields)))
    # As strict as the diff: 1, 1.0 and True are equal to Python, not to the server.
    return identical(owned, _applied_fields(desired))


def reported_unchanged(desired: Mapping[str, Any], live: Mapping[str, Any], app: str) -> bool:
    """Whether a report-mode diff of `desired` (of `app`) against `live` has nothing to
    report, told from Argo CD's server-side apply (ServerSideApply=true) alone.

    The diff reports a desired value that is not live, and a live field that Argo CD
    (or the reconciler) applied but git no longer sets, its tracking fields aside. When
    Argo CD's Apply entry owns exactly the desired fields with the desired values, plus
    tracking fields git does not set, there is neither; this holds only while no other
    apply is on record: a client-side apply's last-applied annotation or a field of the
    reconciler's own manager send it to the diff."""
    metadata = live.get("metadata")
    if not isinstance(metadata, Mapping):
        return False
    annotations = metadata.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
        return False
    entries = metadata.get("managedFields") or ()
    if any(isinstance(e, Mapping) and e.get("manager") == FIELD_MANAGER for e in entries):
        return False
    # A tracking field git sets too is compared as any other field.
    unowned = [path for path in tracking_fields(live, app) if not _sets(desired, path)]
    return applies_unchanged(desired, live, ARGOCD_MANAGER, unowned)


def _sets(obj: Mapping[str, Any], path: Sequence[str]) -> bool:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _without(fields: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    """FieldsV1 `fields` without the field at `path`, copying only the nodes on the way;
    a node it leaves empty goes too (an empty node owns its whole value)."""
    key = f"f:{path[0]}"
    child = fields.get(key)
    if not isinstance(child, Mapping) or (len(path) > 1 and not child):
        return fields  # not owned, or owned whole: one entry cannot be taken out
    rest = {k: v for k, v in fields.items() if k != key}
    left = _without(child, path[1:]) if len(path) > 1 else {}
    if left:
        rest[key] = left
    return rest


@functools.lru_cache(maxsize=256)
def _fields(text: str) -> FieldSet:
    """The FieldSet of a FieldsV1 text: objects of one shape share it, so it is parsed
    once. Shared between calls, so read only (owned_part never modifies it)."""
    fields: dict[str, Any] = json.loads(text)
    return parse_fields_v1(fields)


def _applied_fields(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as its owned fields read back: without its type and identity, which
    are the request's, not fields."""
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    metadata = body.pop("metadata", None)
    if isinstance(metadata, Mapping):
        metadata = {k: v for k, v in metadata.items() if k not in _IDENTITY}
    if metadata:
        body["metadata"] = metadata
    return body

"""The fields Argo CD applied to a live object: how a report-mode diff sees what git removed.

On a cluster where Argo CD syncs, the reconciler owns no field, so its own field
manager cannot tell a field removed from git from one a controller added. Argo
CD's own records can, and they are what its diff reads: kubectl's client-side
apply (Argo CD's default) keeps the last applied object in the
`kubectl.kubernetes.io/last-applied-configuration` annotation, and with
`ServerSideApply=true` the API server records the fields Argo CD's field manager
applied in managedFields. A field in either record that git no longer sets is
what Argo CD's next sync removes: drift, shown like Argo CD shows it (desired
absent, the live value). Fields only other managers wrote, and server defaults,
are in neither record, so they are never reported.

Only paths are read from the records, never values: the annotation holds a full
copy of the object (a Secret's data included), and the values a diff shows come
from the live object after redaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reconciler.diff import fieldsets
from reconciler.diff.fieldsets import FieldSet, freeze, union
from reconciler.diff.normalize import CONTROLLER_ANNOTATIONS

ARGOCD_MANAGER = "argocd-controller"
_ARGOCD_APPLY = (ARGOCD_MANAGER, "Apply")
LAST_APPLIED = CONTROLLER_ANNOTATIONS[0]
# Argo CD adds these to every object it applies to find its own; git never holds them.
TRACKING_ANNOTATIONS = ("argocd.argoproj.io/tracking-id", "argocd.argoproj.io/installation-id")
# Argo CD's label tracking (its default before v3) sets this label to the app's name.
TRACKING_LABEL = "app.kubernetes.io/instance"


def argocd_applied(live: Mapping[str, Any], app: str) -> FieldSet | None:
    """The fields Argo CD applied to `live` for `app`, or None when it left no record."""
    entries = fieldsets.entries(live)
    trees = [
        _object_fields(obj, union(tree for _, _, tree in entries)) for obj in _last_applied(live)
    ]
    ours = [tree for manager, operation, tree in entries if (manager, operation) == _ARGOCD_APPLY]
    if ours:
        # A field another manager owns too stays when Argo CD applies without it.
        others = union(tree for manager, _, tree in entries if manager != ARGOCD_MANAGER)
        trees.append(_minus(union(ours), others))
    if not trees:
        return None
    applied = union(trees)
    for path in tracking_fields(live, app):
        _discard(applied, path)
    return applied


def tracking_fields(live: Mapping[str, Any], app: str) -> list[tuple[str, str, str]]:
    """The paths of the fields Argo CD may have added to `live` to find it as `app`'s:
    never git's, so never what git removed (nor what git sets: reconciler.diff.noop)."""
    paths = [("metadata", "annotations", name) for name in TRACKING_ANNOTATIONS]
    labels = (live.get("metadata") or {}).get("labels") or {}
    if labels.get(TRACKING_LABEL) == app:
        paths.append(("metadata", "labels", TRACKING_LABEL))
    return paths


def _last_applied(live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The object of the last client-side apply; none when absent or unreadable (a record
    that cannot be read says nothing, so nothing is reported from it)."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(text, str):
        return []
    try:
        obj = json.loads(text)
    except ValueError:
        return []
    return [obj] if isinstance(obj, dict) else []


def _object_fields(obj: Mapping[str, Any], known: FieldSet | None) -> FieldSet:
    """`obj`'s fields as FieldsV1 would name them; `known` (every manager's fields at the
    same place) says how the server identifies list items: by merge keys or by value."""
    node = FieldSet()
    for key, value in obj.items():
        child = _value_fields(value, known and known.field(str(key)))
        if child is not None:
            node.children[("f", str(key))] = child
    return node


def _value_fields(value: Any, known: FieldSet | None) -> FieldSet | None:
    """The fields of one value; None where it holds nothing a live value could show
    (kubectl records `annotations: {}` and `creationTimestamp: null`)."""
    if value in (None, {}, []):
        return None
    if isinstance(value, dict):
        node = _object_fields(value, known)
        return node if node.children else None  # a node without children owns it all
    if isinstance(value, list):
        return _list_fields(value, known)
    return FieldSet()  # a leaf: the whole value


def _list_fields(items: list[Any], known: FieldSet | None) -> FieldSet:
    if known is not None and known.is_set():
        return FieldSet({("v", freeze(item)): FieldSet(owns_self=True) for item in items})
    keys = known.merge_keys() if known is not None else ()
    if not keys and all(isinstance(item, dict) and "name" in item for item in items):
        keys = ("name",)  # containers, env, volumes ... when no manager recorded the list
    node = FieldSet()
    for index, item in enumerate(items):
        key = {k: item[k] for k in keys if k in item} if isinstance(item, dict) else {}
        if not key:
            return FieldSet()  # an atomic list: owned, and compared, as a whole
        child = _object_fields(item, known and known.item(index, item))
        child.owns_self = True
        node.children[("k", freeze(key))] = child
    return node


def _minus(ours: FieldSet, others: FieldSet) -> FieldSet:
    """The fields of `ours` that `others` does not own too (nodes emptied are dropped)."""
    rest = FieldSet(owns_self=ours.owns_self)
    for element, node in ours.children.items():
        other = others.children.get(element)
        if other is None:
            rest.children[element] = node
        elif node.children and other.children:
            left = _minus(node, other)
            if left.children:
                rest.children[element] = left
    return rest


def _discard(node: FieldSet, path: tuple[str, ...]) -> None:
    """Remove the field at `path`, and parents it leaves empty (an empty node would read
    as owning its whole value)."""
    child = node.field(path[0])
    if child is None:
        return
    if len(path) > 1:
        if not child.children:
            return  # owned whole: one entry cannot be taken out
        _discard(child, path[1:])
        if child.children:
            return
    del node.children[("f", path[0])]

"""Field ownership from `metadata.managedFields` (the FieldsV1 format of server-side apply).

Ownership is how the diff tells a field removed from git (owned by the reconciler's
field manager, so drift) from a field someone else added (not ours, so not drift),
and how Argo CD's `managedFieldsManagers` ignore rule knows which fields to skip.

FieldsV1 keys: `f:<name>` a map field, `k:<json>` a list item by its merge keys,
`v:<json>` a set item by value, `i:<n>` a list item by index, `.` the element itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Element = tuple[str, Any]


@dataclass
class FieldSet:
    """A tree of owned fields; a node without children owns its whole value."""

    children: dict[Element, FieldSet] = field(default_factory=dict)
    owns_self: bool = False

    def field(self, name: str) -> FieldSet | None:
        return self.children.get(("f", name))

    def item(self, index: int, item: Any) -> FieldSet | None:
        """The node for one list item, found the way FieldsV1 names it."""
        for (kind, key), node in self.children.items():
            if (
                (kind == "k" and matches_key(item, dict(key)))
                or (kind == "v" and freeze(item) == key)
                or (kind == "i" and key == index)
            ):
                return node
        return None

    def merge_keys(self) -> tuple[str, ...]:
        """The merge-key field names of the list this node describes (empty if unkeyed)."""
        names: set[str] = set()
        for kind, key in self.children:
            if kind == "k":
                names.update(name for name, _ in key)
        return tuple(sorted(names))

    def is_set(self) -> bool:
        """Whether this node describes a list whose items are identified by value."""
        return any(kind == "v" for kind, _ in self.children)

    def merge(self, other: FieldSet) -> None:
        self.owns_self = self.owns_self or other.owns_self
        for element, node in other.children.items():
            self.children.setdefault(element, FieldSet()).merge(node)


def parse_fields_v1(raw: Mapping[str, Any]) -> FieldSet:
    node = FieldSet()
    for key, sub in raw.items():
        if key == ".":
            node.owns_self = True
            continue
        kind, _, rest = key.partition(":")
        if kind == "f":
            element: Element = ("f", rest)
        elif kind in ("k", "v"):
            element = (kind, freeze(json.loads(rest)))
        elif kind == "i":
            element = ("i", int(rest))
        else:
            continue  # a future FieldsV1 element: owning less is the safe reading
        node.children.setdefault(element, FieldSet()).merge(
            parse_fields_v1(sub if isinstance(sub, Mapping) else {})
        )
    return node


def managers(obj: Mapping[str, Any]) -> dict[str, FieldSet]:
    """Each field manager's owned fields on the main resource."""
    owned: dict[str, FieldSet] = {}
    for manager, _, tree in entries(obj):
        owned.setdefault(manager, FieldSet()).merge(tree)
    return owned


def entries(obj: Mapping[str, Any]) -> list[tuple[str, str, FieldSet]]:
    """(manager, operation, owned fields) of each managedFields entry of the main
    resource (subresources such as status or scale are not compared: left out)."""
    found = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") or entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            continue
        tree = parse_fields_v1(entry.get("fieldsV1") or {})
        found.append((str(entry.get("manager", "")), str(entry.get("operation", "")), tree))
    return found


def union(trees: Iterable[FieldSet]) -> FieldSet:
    merged = FieldSet()
    for tree in trees:
        merged.merge(tree)
    return merged


def matches_key(item: Any, key: Mapping[str, Any]) -> bool:
    """Whether a list item is the one `key` names. Only key fields the item sets are
    compared, because git often leaves out a defaulted key (a port's protocol: TCP)."""
    if not isinstance(item, dict):
        return False
    present = [name for name in key if name in item]
    return bool(present) and all(freeze(item[name]) == key[name] for name in present)


def freeze(value: Any) -> Any:
    """A hashable form of JSON data, for comparing list items with FieldsV1 keys."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def owned_part(value: Any, node: FieldSet) -> Any:
    """The part of `value` that `node` owns."""
    if not node.children:
        return value
    if type(value) is dict or isinstance(value, Mapping):
        return {
            k: owned_part(v, child)
            for k, v in value.items()
            if (child := node.field(k)) is not None
        }
    if isinstance(value, list):
        return [
            owned_part(v, child)
            for i, v in enumerate(value)
            if (child := node.item(i, v)) is not None
        ]
    return value


def remove_owned(value: Any, node: FieldSet) -> None:
    """Delete in place what `node` owns: leaves, and list items owned as a whole."""
    if isinstance(value, dict):
        for key in list(value):
            child = node.field(key)
            if child is None:
                continue
            if child.children:
                remove_owned(value[key], child)
            else:
                del value[key]
    elif isinstance(value, list):
        for index in reversed(range(len(value))):
            child = node.item(index, value[index])
            if child is None:
                continue
            if child.owns_self or not child.children:
                del value[index]
            else:
                remove_owned(value[index], child)

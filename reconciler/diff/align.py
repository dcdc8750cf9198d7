"""Pair desired and live values field by field into two views that deepdiff can compare.

Without a server-side dry-run, git's object is a subset of the live one: the server
adds defaults and controllers add fields. The desired view is git's object; the live
view keeps only what git sets plus what the reconciler's field manager owns (so a
field removed from git still shows). With a dry-run result, the views are the whole
objects, since the server already applied the defaults.

Lists with merge keys (containers by name, ports by containerPort/protocol ...) are
paired by key as server-side apply does, not by position: they become SlotMaps, whose
Slot keys make deepdiff report an inserted item as one added item, not a cascade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.diff.fieldsets import FieldSet, freeze, matches_key, owned_part
from reconciler.diff.normalize import same_scalar

# Whether a desired list item and a live one are the same item.
SameItem = Callable[[Any, Any], bool]


@dataclass(frozen=True, order=True)
class Slot:
    """An item's place in a keyed list: `position` orders and keeps keys unique,
    `index` is what a path shows (its index in git, or in live if git lacks it)."""

    position: int
    index: int


class SlotMap(dict[Slot, Any]):
    """A keyed list while it is being compared."""


@dataclass(frozen=True)
class Owners:
    """The field-ownership nodes at one path: ours, and every manager's (for merge keys)."""

    ours: FieldSet | None
    known: FieldSet | None

    def field(self, name: str) -> Owners:
        return Owners(_field(self.ours, name), _field(self.known, name))

    def item(self, index: int, item: Any) -> Owners:
        return Owners(_item(self.ours, index, item), _item(self.known, index, item))

    def kept(self, value: Any) -> tuple[bool, Any]:
        """Whether a live value git lacks is ours, and the part of it that is."""
        if self.ours is None:
            return False, None
        return True, owned_part(value, self.ours)


def align(desired: Any, live: Any, owners: Owners, *, full: bool) -> tuple[Any, Any]:
    """The (desired view, live view) pair for one value present on both sides."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return _align_maps(desired, live, owners, full)
    if isinstance(desired, list) and isinstance(live, list):
        same = _same_item(desired, live, owners.known)
        if same is not None:
            return _align_keyed(desired, live, same, owners, full)
        if len(desired) == len(live):
            pairs = [
                align(d, lv, owners.item(i, lv), full=full)
                for i, (d, lv) in enumerate(zip(desired, live, strict=True))
            ]
            return [d for d, _ in pairs], [lv for _, lv in pairs]
        return desired, live
    if same_scalar(desired, live):
        return live, live
    return desired, live


def _align_maps(
    desired: dict[str, Any], live: dict[str, Any], owners: Owners, full: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    desired_view: dict[str, Any] = {}
    live_view: dict[str, Any] = {}
    # Null is an unset field: git writes it to unset one in server-side apply, and the
    # server writes some (a pod template's `creationTimestamp: null`).
    wanted = {k: v for k, v in desired.items() if v is not None}
    live = {k: v for k, v in live.items() if v is not None}
    for key, value in wanted.items():
        if key in live:
            desired_view[key], live_view[key] = align(
                value, live[key], owners.field(key), full=full
            )
        elif value in ({}, []):  # the server drops empty maps and lists
            continue
        elif _zero(value) and owners.field(key).known is not None:
            # A zero value (false, 0, "") in an `omitempty` field is not serialised, but
            # the manager that set it still owns the field: set to zero, not removed.
            continue
        else:
            desired_view[key] = value
    for key, value in live.items():
        if key not in wanted:
            keep, part = (True, value) if full else owners.field(key).kept(value)
            if keep and part not in ({}, []):  # as absent as an empty value in git
                live_view[key] = part
    return desired_view, live_view


def _align_keyed(
    desired: list[Any], live: list[Any], same: SameItem, owners: Owners, full: bool
) -> tuple[SlotMap, SlotMap]:
    desired_view, live_view = SlotMap(), SlotMap()
    paired: set[int] = set()
    for position, item in enumerate(desired):
        slot = Slot(position, position)
        match = next(
            (i for i, candidate in enumerate(live) if i not in paired and same(item, candidate)),
            None,
        )
        if match is None:
            desired_view[slot] = item
            continue
        paired.add(match)
        desired_view[slot], live_view[slot] = align(
            item, live[match], owners.item(match, live[match]), full=full
        )
    for index, item in enumerate(live):
        if index not in paired:
            keep, part = (True, item) if full else owners.item(index, item).kept(item)
            if keep:
                live_view[Slot(len(desired) + index, index)] = part
    return desired_view, live_view


def _same_item(desired: list[Any], live: list[Any], known: FieldSet | None) -> SameItem | None:
    """How items of this list are matched, as server-side apply merges it: by merge keys
    or by value (a set) per managedFields; failing that, by `name` when every item has
    one (containers, env, volumes ...); None for a list compared by position."""
    if known is not None and known.is_set():
        return lambda d, lv: freeze(d) == freeze(lv)
    items = desired + live
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    keys = known.merge_keys() if known is not None else ()
    if not keys and all("name" in i for i in items):
        keys = ("name",)
    if not keys:
        return None
    return lambda d, lv: matches_key(lv, {name: d[name] for name in keys if name in d})


def _zero(value: Any) -> bool:
    """Whether `value` is the zero value Go's `omitempty` leaves out of JSON."""
    if isinstance(value, bool):
        return value is False
    return (isinstance(value, int | float) and value == 0) or value == ""


def unslot(view: Any) -> Any:
    """A compared view turned back into plain JSON (keyed lists in git's order)."""
    if isinstance(view, SlotMap):
        return [unslot(view[slot]) for slot in sorted(view)]
    if isinstance(view, dict):
        return {k: unslot(v) for k, v in view.items()}
    if isinstance(view, list):
        return [unslot(v) for v in view]
    return view


def _field(node: FieldSet | None, name: str) -> FieldSet | None:
    return node.field(name) if node is not None else None


def _item(node: FieldSet | None, index: int, item: Any) -> FieldSet | None:
    return node.item(index, item) if node is not None else None

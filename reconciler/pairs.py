"""The one join of a reconcile: each object as git, the cluster and the inventory see it.

Desired objects, live objects and inventory members are paired once, by
ObjectRef, and every later stage (diff, plan, prune, record) reads the same
pairs: no object can be created by one rule and deleted by another, and only
inventory members are ever prune candidates (invariant 4). Pure: data in, data out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model import InventoryItem, Manifest, ObjectRef

Pairs = Mapping[ObjectRef, "Pair"]


@dataclass(frozen=True)
class Pair:
    """One object: what git wants (`desired`), what the cluster has (`live`, None when
    absent) and the inventory entry of the app that applied it before (`inventory`).

    `listed` is False when the object's kind could not be listed: its `live` None
    then proves nothing. A pair with neither `desired` nor `inventory` is an object
    the reconcile only looks at (a destination namespace)."""

    ref: ObjectRef
    desired: Manifest | None
    live: Mapping[str, Any] | None
    inventory: InventoryItem | None
    listed: bool = True

    @property
    def app(self) -> str:
        """The app that wants the object, else the app whose inventory holds it."""
        if self.desired is not None:
            return self.desired.origin.app
        return self.inventory.app if self.inventory is not None else ""

    @property
    def prune_candidate(self) -> bool:
        """No longer desired but applied before: the reconciler may delete it."""
        return self.desired is None and self.inventory is not None


def join(
    desired: Iterable[Manifest],
    live: Mapping[ObjectRef, Mapping[str, Any] | None],
    inventory: Iterable[InventoryItem],
    *,
    unknown: Collection[ObjectRef] = (),
) -> dict[ObjectRef, Pair]:
    """Every ref that git, the inventory or `live` holds, once, in that order.

    An object desired by one app and still in another's inventory (it moved between
    apps) is desired, never a prune candidate. Refs in `unknown` have no known live
    state. Live objects the caller did not ask about are not the reconciler's business
    and never reach `live`.
    """
    held = {item.ref: item for item in inventory}
    pairs = {
        m.ref: Pair(m.ref, m, live.get(m.ref), held.get(m.ref), m.ref not in unknown)
        for m in desired
    }
    for item in sorted(held.values(), key=lambda i: (i.app, i.ref)):
        if item.ref not in pairs:
            pairs[item.ref] = Pair(
                item.ref, None, live.get(item.ref), item, item.ref not in unknown
            )
    for ref in sorted(set(live) - set(pairs)):
        pairs[ref] = Pair(ref, None, live[ref], None, ref not in unknown)
    return pairs


def inventory_by_app(pairs: Pairs) -> dict[str, set[ObjectRef]]:
    """What each app's inventory held when the pairs were made."""
    by_app: dict[str, set[ObjectRef]] = defaultdict(set)
    for pair in pairs.values():
        if pair.inventory is not None:
            by_app[pair.inventory.app].add(pair.ref)
    return by_app

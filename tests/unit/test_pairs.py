"""The one join: desired, live and inventory paired once, by ObjectRef."""

from __future__ import annotations

from reconciler.model import InventoryItem
from reconciler.pairs import inventory_by_app, join
from tests.unit.test_plan import (
    configmap,
    deployment,
    live_copy,
    manifest,
    namespace,
    ref,
    service,
    statefulset,
)


def test_each_object_is_paired_once_with_what_each_side_holds() -> None:
    new, kept, removed = configmap(), statefulset(), deployment("old-api")
    pairs = join(
        [manifest(new), manifest(kept)],
        {ref(kept): live_copy(kept), ref(removed): live_copy(removed)},
        [
            InventoryItem("incident-db", ref(kept), "apps/v1"),
            InventoryItem("incident-db", ref(removed), "apps/v1"),
        ],
    )
    assert list(pairs) == [ref(new), ref(kept), ref(removed)], "desired, then inventory"
    assert pairs[ref(new)].live is None and pairs[ref(new)].inventory is None
    assert pairs[ref(kept)].inventory == InventoryItem("incident-db", ref(kept), "apps/v1")
    assert pairs[ref(removed)].desired is None and pairs[ref(removed)].prune_candidate
    assert not pairs[ref(kept)].prune_candidate


def test_an_object_moved_between_apps_is_desired_not_a_prune_candidate() -> None:
    moved = service()
    pairs = join(
        [manifest(moved, "incident-api")],
        {ref(moved): live_copy(moved)},
        [InventoryItem("incident-db", ref(moved), "v1")],
    )
    pair = pairs[ref(moved)]
    assert pair.app == "incident-api" and not pair.prune_candidate
    assert inventory_by_app(pairs) == {"incident-db": {ref(moved)}}


def test_a_looked_at_object_belongs_to_no_app() -> None:
    pairs = join([], {ref(namespace()): live_copy(namespace())}, [])
    pair = pairs[ref(namespace())]
    assert (pair.app, pair.prune_candidate, pair.live is not None) == ("", False, True)


def test_an_object_of_an_unlisted_kind_has_no_known_live_state() -> None:
    cm = configmap()
    pairs = join([manifest(cm)], {ref(cm): None}, [], unknown={ref(cm)})
    assert not pairs[ref(cm)].listed

"""diff_object's quick in-sync check (before DeepDiff) is as strict as DeepDiff: a value
of another type is drift even where Python calls the two equal."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.diff import diff_object
from reconciler.model import DriftType, ObjectRef

REF = ObjectRef("example.com", "Widget", "shop", "w")


def widget(size: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "shop", "resourceVersion": "7"},
        "spec": {"size": size, "tags": ["a", {"b": None}]},
    }


def test_an_identical_dry_run_is_in_sync() -> None:
    live = widget(1)
    dry_run = copy.deepcopy(live)
    dry_run["metadata"]["resourceVersion"] = "8"
    assert diff_object(REF, widget(1), live, dry_run=dry_run) is None


@pytest.mark.parametrize(("desired", "live"), [(1, True), (0, False), ("1", 1)])
def test_a_value_of_another_type_is_drift_even_when_python_calls_them_equal(
    desired: Any, live: Any
) -> None:
    found = diff_object(REF, widget(desired), widget(live), dry_run=widget(desired))
    assert found is not None and found.type is DriftType.CHANGED
    assert [(c.path, c.desired, c.live) for c in found.changes] == [("/spec/size", desired, live)]

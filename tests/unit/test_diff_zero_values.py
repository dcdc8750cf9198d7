"""Zero values git sets that the API server leaves out of its JSON (Go `omitempty`).

`hostNetwork: false` or a volume mount's `readOnly: false` are applied, recorded in
the applier's managedFields, and never serialised again. The field's owner is
the evidence that the value was set to zero and not removed, so only an owned
zero value compares equal to an absent one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.diff import diff_object
from reconciler.model import Change, DriftType, ObjectRef

REF = ObjectRef("apps", "DaemonSet", "monitoring", "vector")
POD = "/spec/template/spec"


def desired() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "vector", "namespace": "monitoring"},
        "spec": {
            "selector": {"matchLabels": {"app": "vector"}},
            "template": {
                "metadata": {"labels": {"app": "vector"}},
                "spec": {
                    "hostNetwork": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "vector",
                            "image": "timberio/vector:0.43.0",
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data", "readOnly": False}
                            ],
                        }
                    ],
                },
            },
        },
    }


def owned_pod_spec() -> dict[str, Any]:
    """FieldsV1 of the applier for the pod spec above (as kubectl --server-side records it)."""
    return {
        "f:hostNetwork": {},
        "f:terminationGracePeriodSeconds": {},
        "f:containers": {
            'k:{"name":"vector"}': {
                ".": {},
                "f:name": {},
                "f:image": {},
                "f:volumeMounts": {
                    'k:{"mountPath":"/data"}': {
                        ".": {},
                        "f:mountPath": {},
                        "f:name": {},
                        "f:readOnly": {},
                    }
                },
            }
        },
    }


def live(owned: dict[str, Any] | None = None) -> dict[str, Any]:
    """The object as the API server returns it: zero values gone, defaults filled in."""
    obj = desired()
    pod = obj["spec"]["template"]["spec"]
    del pod["hostNetwork"]
    pod["terminationGracePeriodSeconds"] = 0  # a pointer field: the server keeps its zero
    pod["restartPolicy"] = "Always"
    del pod["containers"][0]["volumeMounts"][0]["readOnly"]
    pod["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    fields = {
        "f:spec": {
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": owned if owned is not None else owned_pod_spec(),
            },
        }
    }
    obj["metadata"].update(
        uid="1",
        resourceVersion="42",
        managedFields=[
            {
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            }
        ],
    )
    return obj


def test_owned_zero_values_left_out_by_the_server_are_in_sync() -> None:
    assert diff_object(REF, desired(), live()) is None


def test_a_zero_value_nobody_owns_is_drift() -> None:
    owned = owned_pod_spec()
    del owned["f:hostNetwork"]
    found = diff_object(REF, desired(), live(owned))
    assert found is not None and found.type is DriftType.CHANGED
    assert found.changes == (Change(f"{POD}/hostNetwork", False, None),)


@pytest.mark.parametrize("value", [True, 1, "x"])
def test_a_non_zero_value_absent_live_is_drift_even_when_owned(value: Any) -> None:
    wanted = desired()
    wanted["spec"]["template"]["spec"]["hostNetwork"] = value
    found = diff_object(REF, wanted, live())
    assert found is not None
    assert found.changes == (Change(f"{POD}/hostNetwork", value, None),)


def test_zero_in_git_against_a_live_non_zero_value_is_drift() -> None:
    current = live()
    current["spec"]["template"]["spec"]["hostNetwork"] = True
    found = diff_object(REF, desired(), current)
    assert found is not None
    assert found.changes == (Change(f"{POD}/hostNetwork", False, True),)


def test_zero_in_a_keyed_list_item_is_in_sync_when_owned() -> None:
    current = live()
    mounts = current["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert "readOnly" not in mounts[0]
    assert diff_object(REF, copy.deepcopy(desired()), current) is None

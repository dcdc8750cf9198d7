"""Argo CD ignoreDifferences: which objects a rule applies to, and which fields it hides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.diff import RuleError, diff_object, parse_ignore_rules
from reconciler.diff.jq import parse_jq
from reconciler.model import Change, ObjectRef

REF = ObjectRef("apps", "Deployment", "shop", "web")


def deployment(
    image: str = "nginx:1.25", replicas: int = 2, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "initContainers": [{"name": "istio-init", "image": image}],
                    "containers": [
                        {"name": "web", "image": image},
                        {"name": "sidecar", "image": image},
                    ],
                },
            },
        },
    }


def rules(**entry: Any) -> Any:
    return parse_ignore_rules([{"group": "apps", "kind": "Deployment", **entry}], "app shop")


def test_json_pointer_hides_the_field_and_only_that_field() -> None:
    ignore = rules(jsonPointers=["/spec/replicas"])
    assert diff_object(REF, deployment(), deployment(replicas=5), ignore=ignore) is None
    live = deployment(replicas=5)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
    drift = diff_object(REF, deployment(), live, ignore=ignore)
    assert drift is not None
    assert [c.path for c in drift.changes] == ["/spec/template/spec/containers/0/image"]


def test_json_pointer_unescapes_slash_in_annotation_keys() -> None:
    ignore = rules(
        jsonPointers=["/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt"]
    )
    live = deployment(annotations={"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"})
    # The annotation is ours in live (we own it) but was removed from git: ignored anyway.
    live["metadata"]["managedFields"] = [
        {
            "manager": "reconciler",
            "operation": "Apply",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/restartedAt": {}}}
                    }
                }
            },
        }
    ]
    assert diff_object(REF, deployment(), live) is not None
    assert diff_object(REF, deployment(), live, ignore=ignore) is None


def test_jq_select_hides_only_the_selected_list_item() -> None:
    ignore = rules(
        jqPathExpressions=['.spec.template.spec.containers[] | select(.name == "sidecar")']
    )
    live = deployment()
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "injected:2"
    assert diff_object(REF, deployment(), live, ignore=ignore) is None
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
    drift = diff_object(REF, deployment(), live, ignore=ignore)
    assert drift is not None
    assert drift.changes == (
        Change("/spec/template/spec/containers/0/image", "nginx:1.25", "nginx:1.26"),
    )


def test_jq_optional_iteration_hides_a_field_of_every_item() -> None:
    ignore = rules(jqPathExpressions=[".spec.template.spec.initContainers[]?.image"])
    assert diff_object(REF, deployment(), deployment(image="other:1"), ignore=ignore) is not None
    live = deployment()
    live["spec"]["template"]["spec"]["initContainers"][0]["image"] = "other:1"
    assert diff_object(REF, deployment(), live, ignore=ignore) is None


def test_managed_fields_manager_hides_what_it_owns_live() -> None:
    live = deployment(replicas=7)
    live["metadata"]["managedFields"] = [
        {
            "manager": "hpa-controller",
            "operation": "Update",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]
    assert diff_object(REF, deployment(), live) is not None
    ignore = rules(managedFieldsManagers=["hpa-controller"])
    assert diff_object(REF, deployment(), live, ignore=ignore) is None


@pytest.mark.parametrize(
    ("entry", "applies"),
    [
        ({"kind": "Deployment", "group": "apps"}, True),
        ({"kind": "Deployment", "group": "apps", "name": "web", "namespace": "shop"}, True),
        ({"kind": "Deployment", "group": "apps", "name": "other"}, False),
        ({"kind": "Deployment", "group": "apps", "namespace": "other"}, False),
        ({"kind": "Deployment"}, False),  # no group means the core group, as in Argo CD
        ({"kind": "*", "group": "*"}, True),
        ({"kind": "StatefulSet", "group": "apps"}, False),
    ],
)
def test_rule_applies_by_group_kind_name_and_namespace(
    entry: dict[str, Any], applies: bool
) -> None:
    ignore = parse_ignore_rules([{**entry, "jsonPointers": ["/spec/replicas"]}], "app shop")
    in_sync = diff_object(REF, deployment(), deployment(replicas=5), ignore=ignore) is None
    assert in_sync is applies


@pytest.mark.parametrize(
    ("expression", "paths"),
    [
        (".spec.replicas", [("spec", "replicas")]),
        ('.metadata.annotations."a/b"', [("metadata", "annotations", "a/b")]),
        ('.metadata.annotations["a/b"]', [("metadata", "annotations", "a/b")]),
        (".items[1]", [("items", 1)]),
        (".items[-1]", [("items", 2)]),
        (".items[]", [("items", 0), ("items", 1), ("items", 2)]),
        (".items[].name", [("items", 0, "name"), ("items", 1, "name")]),
        ('.items[] | select(.name == "b") | .v', [("items", 1, "v")]),
        ('.items[] | select(.name != "b")', [("items", 0), ("items", 2)]),
        (".missing[]?.x", []),
        (".spec.replicas[]?", []),
    ],
)
def test_jq_subset_selects_paths(expression: str, paths: list[tuple[Any, ...]]) -> None:
    document = {
        "spec": {"replicas": 1},
        "metadata": {"annotations": {"a/b": "1"}},
        "items": [{"name": "a", "v": 1}, {"name": "b", "v": 2}, {"v": 3}],
    }
    assert parse_jq(expression).paths(document) == paths


@pytest.mark.parametrize(
    "expression",
    [
        ".spec | del(.replicas)",
        '.items[] | select(.name | startswith("x"))',
        "spec.replicas",
        ".items[1:2]",
        ".a |",
        ".a..b",
    ],
)
def test_unsupported_jq_is_refused_naming_the_expression(expression: str) -> None:
    with pytest.raises(RuleError) as error:
        parse_ignore_rules([{"kind": "Deployment", "jqPathExpressions": [expression]}], "app shop")
    assert "app shop: ignoreDifferences entry 1" in str(error.value)
    assert repr(expression) in str(error.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"group": "apps"}, "`kind` is required"),
        (
            {"kind": "Deployment", "jsonPointers": ["spec/replicas"]},
            "must be empty or start with '/'",
        ),
        ({"kind": "Deployment", "jsonPointers": [""]}, "whole object"),
        ({"kind": "Deployment", "jsonPointers": "/spec"}, "list of strings"),
    ],
)
def test_malformed_rule_is_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_ignore_rules([entry], "app shop")


def with_finalizers(live: dict[str, Any], owned: dict[str, list[str]]) -> dict[str, Any]:
    live["metadata"]["finalizers"] = ["example.com/a", "example.com/protect"]
    live["metadata"]["managedFields"] = [
        {
            "manager": manager,
            "operation": "Apply",
            "fieldsV1": {
                "f:metadata": {"f:finalizers": {f"v:{json.dumps(v)}": {} for v in values}}
            },
        }
        for manager, values in owned.items()
    ]
    return live


def test_set_item_added_live_by_another_manager_is_not_drift() -> None:
    desired = deployment()
    desired["metadata"]["finalizers"] = ["example.com/a"]
    live = with_finalizers(
        deployment(), {"reconciler": ["example.com/a"], "protector": ["example.com/protect"]}
    )
    assert diff_object(REF, desired, live) is None


def test_managed_fields_manager_owning_a_set_item_hides_that_item() -> None:
    desired = deployment()
    desired["metadata"]["finalizers"] = ["example.com/a"]
    both = ["example.com/a", "example.com/protect"]
    live = with_finalizers(deployment(), {"reconciler": both, "protector": ["example.com/protect"]})
    drift = diff_object(REF, desired, live)
    assert drift is not None
    assert drift.changes == (Change("/metadata/finalizers/1", None, "example.com/protect"),)
    ignore = rules(managedFieldsManagers=["protector"])
    assert diff_object(REF, desired, live, ignore=ignore) is None

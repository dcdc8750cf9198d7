"""What `reconciler diff` prints: a kubectl-diff-like text, and one JSON record per drift."""

from __future__ import annotations

import json
from typing import Any

from reconciler.diff import diff_object, drift_to_json, render_text
from reconciler.model import Drift, DriftType, ObjectRef
from tests import builders

REF = ObjectRef("", "ConfigMap", "shop", "settings")
CLUSTER_REF = ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "reader")


def config_map(**data: str) -> dict[str, Any]:
    return builders.config_map("settings", data, "shop")


def changed_drift() -> Drift:
    drift = diff_object(
        REF, config_map(mode="prod", level="info"), config_map(mode="dev", level="info")
    )
    assert drift is not None
    return drift


def test_text_is_a_unified_diff_from_live_to_desired_under_a_header() -> None:
    text = render_text(changed_drift(), cluster="monit", app="shop")
    lines = text.splitlines()
    assert lines[0] == "monit/shop ConfigMap shop/settings (changed)"
    assert lines[1:3] == ["--- live/ConfigMap/shop/settings", "+++ desired/ConfigMap/shop/settings"]
    assert "-  mode: dev" in lines and "+  mode: prod" in lines
    assert "   level: info" in lines  # unchanged context, as kubectl diff shows it


def test_text_names_group_and_omits_namespace_for_cluster_scoped_objects() -> None:
    drift = Drift(
        DriftType.MISSING, CLUSTER_REF, "rbac.authorization.k8s.io/v1", desired={"rules": []}
    )
    text = render_text(drift, cluster="agentic", app="rbac")
    assert (
        text.splitlines()[0]
        == "agentic/rbac ClusterRole.rbac.authorization.k8s.io reader (missing)"
    )
    assert "+rules: []" in text.splitlines()


def test_colour_only_when_asked() -> None:
    plain = render_text(changed_drift(), cluster="monit", app="shop")
    coloured = render_text(changed_drift(), cluster="monit", app="shop", colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[31m-  mode: dev\x1b[0m" in coloured and "\x1b[32m+  mode: prod\x1b[0m" in coloured


def test_json_record_has_the_documented_shape() -> None:
    record = drift_to_json(changed_drift(), cluster="monit", app="shop")
    assert record == {
        "cluster": "monit",
        "app": "shop",
        "ref": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "settings"},
        "type": "changed",
        "changes": [{"path": "/data/mode", "desired": "prod", "live": "dev"}],
    }
    json.dumps(record)


def test_extra_object_json_has_no_changes_and_its_type() -> None:
    drift = diff_object(REF, None, config_map(mode="dev"))
    assert drift is not None
    record = drift_to_json(drift, cluster="monit", app="shop")
    assert (record["type"], record["changes"]) == ("extra", [])

"""Assembling one cluster's desired objects: keys, namespace defaulting with
CRD scopes from the rendered set, and objects rendered twice."""

from __future__ import annotations

from typing import Any

from reconciler.desired import assemble_cluster
from reconciler.model import App, AppOrigin, ObjectRef, Origin, Result, api_group
from reconciler.render import Rendered


def _app(name: str, namespace: str = "media") -> App:
    return App(
        name=name,
        cluster="prod",
        namespace=namespace,
        sources=(),
        origin=AppOrigin("repo", "c0ffee", f"apps/{name}.yaml"),
        sync_options=("CreateNamespace=true", "ServerSideApply = true"),
    )


def _obj(
    api_version: str, kind: str, name: str, namespace: str | None = None, **extra: Any
) -> dict[str, Any]:
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **extra}


def _rendered(app: str, *objs: dict[str, Any]) -> list[Rendered]:
    return [Rendered(o, Origin("repo", "c0ffee", app, "f.yaml")) for o in objs]


CRD = _obj(
    "apiextensions.k8s.io/v1",
    "CustomResourceDefinition",
    "widgets.example.com",
    spec={"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}},
)


def test_namespaced_objects_get_the_destination_namespace_and_cluster_ones_none() -> None:
    app = _app("sonarr")
    manifests, errors = assemble_cluster(
        "prod",
        [
            (
                app,
                _rendered(
                    "sonarr",
                    _obj("apps/v1", "Deployment", "sonarr"),
                    _obj("v1", "Service", "sonarr", "other"),
                    _obj("v1", "Namespace", "media", "stray"),
                    _obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
                ),
            )
        ],
    )
    assert errors == []
    assert [m.ref for m in manifests] == [
        ObjectRef("apps", "Deployment", "media", "sonarr"),
        ObjectRef("", "Service", "other", "sonarr"),
        ObjectRef("", "Namespace", "", "media"),
        ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "reader"),
    ]
    assert manifests[0].obj["metadata"]["namespace"] == "media"
    assert "namespace" not in manifests[2].obj["metadata"]


def test_crds_in_the_rendered_set_decide_the_scope_of_their_kind() -> None:
    manifests, _ = assemble_cluster(
        "prod",
        [
            (_app("crds"), _rendered("crds", CRD)),
            (
                _app("widgets"),
                _rendered(
                    "widgets",
                    _obj("example.com/v1", "Widget", "w"),
                    _obj("example.com/v1", "Gadget", "g"),
                ),
            ),
        ],
    )
    refs = {m.ref.kind: m.ref for m in manifests}
    assert refs["Widget"].namespace == ""
    assert refs["Gadget"].namespace == "media"  # unknown kinds are namespaced


def test_an_object_rendered_twice_fails_every_app_involved() -> None:
    cm = _obj("v1", "ConfigMap", "shared")
    manifests, errors = assemble_cluster(
        "prod",
        [
            (_app("a"), _rendered("a", cm)),
            (_app("b"), _rendered("b", cm, _obj("v1", "ConfigMap", "mine"))),
            (_app("c"), _rendered("c", _obj("v1", "ConfigMap", "fine"))),
        ],
    )
    assert [m.origin.app for m in manifests] == ["c"]
    assert {e.app for e in errors} == {"a", "b"}
    assert all(
        "ConfigMap media/shared is rendered twice in cluster prod" in e.message for e in errors
    )


def test_keys_use_the_api_group_not_the_version() -> None:
    assert api_group("apps/v1") == "apps"
    assert api_group("v1") == ""
    assert str(ObjectRef("apps", "Deployment", "media", "x")) == "Deployment.apps media/x"
    assert str(ObjectRef("", "Namespace", "", "media")) == "Namespace media"


def test_sync_options_are_read_by_name() -> None:
    app = _app("x")
    assert app.sync_option("ServerSideApply") == "true"
    assert app.sync_option("Prune") is None


def test_result_vocabulary_is_fixed() -> None:
    assert [r.value for r in Result] == [
        "created",
        "configured",
        "unchanged",
        "pruned",
        "skipped",
        "failed",
    ]

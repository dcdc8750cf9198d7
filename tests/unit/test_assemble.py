"""Assembling one cluster's desired objects: keys, namespace defaulting with
CRD scopes from the rendered set, objects two apps share and objects one app
renders twice."""

from __future__ import annotations

from typing import Any

from reconciler.desired import ClusterDesired, assemble_cluster, shared_lines
from reconciler.model import App, ObjectRef, Origin, Result, api_group
from reconciler.render import Rendered
from tests.builders import app


def _app(name: str, namespace: str = "media") -> App:
    options = ("CreateNamespace=true", "ServerSideApply = true")
    return app(name, cluster="prod", namespace=namespace, repo="repo", sync_options=options)


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
    assembled = assemble_cluster(
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
    manifests = assembled.manifests
    assert assembled.errors == [] and assembled.contested == {}
    assert [m.ref for m in manifests] == [
        ObjectRef("apps", "Deployment", "media", "sonarr"),
        ObjectRef("", "Service", "other", "sonarr"),
        ObjectRef("", "Namespace", "", "media"),
        ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "reader"),
    ]
    assert manifests[0].obj["metadata"]["namespace"] == "media"
    assert "namespace" not in manifests[2].obj["metadata"]


def test_crds_in_the_rendered_set_decide_the_scope_of_their_kind() -> None:
    assembled = assemble_cluster(
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
    refs = {m.ref.kind: m.ref for m in assembled.manifests}
    assert refs["Widget"].namespace == ""
    assert refs["Gadget"].namespace == "media"  # unknown kinds are namespaced


def test_an_object_two_apps_render_is_set_aside_and_the_rest_of_both_apps_kept() -> None:
    cm = _obj("v1", "ConfigMap", "shared")
    assembled = assemble_cluster(
        "prod",
        [
            (_app("a"), _rendered("a", cm)),
            (_app("b"), _rendered("b", cm, _obj("v1", "ConfigMap", "mine"))),
            (_app("c"), _rendered("c", _obj("v1", "ConfigMap", "fine"))),
        ],
    )
    shared = ObjectRef("", "ConfigMap", "media", "shared")
    assert [(m.origin.app, m.ref.name) for m in assembled.manifests] == [
        ("b", "mine"),
        ("c", "fine"),
    ]
    assert assembled.errors == []
    assert assembled.contested == {shared: {"a": "repo:f.yaml", "b": "repo:f.yaml"}}


def test_an_object_three_apps_render_names_all_three() -> None:
    cm = _obj("v1", "ConfigMap", "shared", "media")
    assembled = assemble_cluster(
        "prod", [(_app(name), _rendered(name, cm)) for name in ("a", "b", "c")]
    )
    assert assembled.manifests == []
    [by] = assembled.contested.values()
    assert list(by) == ["a", "b", "c"]
    desired = ClusterDesired("prod", (), ("a", "b", "c"), (), contested=assembled.contested)
    assert shared_lines([desired], "b") == [
        "cluster prod: ConfigMap media/shared is rendered by app a (repo:f.yaml) and "
        "app b (repo:f.yaml) and app c (repo:f.yaml): shared, applied by none of them"
    ]
    assert shared_lines([desired], "other") == []


def test_an_object_one_app_renders_twice_fails_that_app_alone() -> None:
    cm = _obj("v1", "ConfigMap", "twice")
    assembled = assemble_cluster(
        "prod",
        [
            (_app("a"), _rendered("a", cm, cm, _obj("v1", "ConfigMap", "other"))),
            (_app("c"), _rendered("c", _obj("v1", "ConfigMap", "fine"))),
        ],
    )
    assert [m.origin.app for m in assembled.manifests] == ["c"]
    assert [(e.app, e.cluster) for e in assembled.errors] == [("a", "prod")]
    assert "ConfigMap media/twice is rendered twice in cluster prod" in assembled.errors[0].message
    assert assembled.contested == {}


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

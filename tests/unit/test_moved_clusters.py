"""Which clusters, and which of their apps, a new render moved (daemon._moved): only
those whose objects, listing, failures, errors or catalogue entries differ in
substance; the commits they were read at do not count. An error no cluster owns, a
new cluster, or a moved namespace or CRD (other apps' objects need them) moves the
whole cluster (None)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.catalogue import Catalogue
from reconciler.daemon import _moved
from reconciler.desired import ClusterDesired, Desired
from reconciler.model import App, AppError, Manifest, ObjectRef, Origin
from tests.builders import app, config_map, namespace

APPS = (app("web-a", cluster="a"), app("web-b", cluster="b"), app("side-a", cluster="a"))


def _manifest(name: str, obj: dict[str, Any], commit: str, app_name: str) -> Manifest:
    kind = str(obj["kind"])
    ns = "" if kind == "Namespace" else "media"
    return Manifest(
        ObjectRef("", kind, ns, name), obj, Origin("lab", commit, app_name, f"{app_name}.yaml")
    )


def _desired(
    commit: str,
    value: str = "1",
    apps: tuple[App, ...] = APPS,
    errors: tuple[AppError, ...] = (),
    side: tuple[dict[str, Any], ...] = (config_map("side", {"v": "1"}),),
) -> Desired:
    catalogue = Catalogue(
        tuple(replace(a, origin=replace(a.origin, commit=commit)) for a in apps), ()
    )
    listed = {a.name for a in apps}

    def manifests(name: str) -> tuple[Manifest, ...]:
        own = config_map("settings", {"v": value if name == "a" else "1"})
        found = [_manifest("settings", own, commit, f"web-{name}")]
        if name == "a" and "side-a" in listed:
            found += [_manifest(o["metadata"]["name"], o, commit, "side-a") for o in side]
        return tuple(found)

    clusters = {
        name: ClusterDesired(
            cluster=name,
            manifests=manifests(name),
            apps=tuple(a.name for a in apps if a.cluster == name),
            failed=(),
            catalogue=catalogue,
            commits={"lab": commit},
        )
        for name in ("a", "b")
    }
    return Desired(clusters, errors, catalogue, {"lab": commit})


def test_the_first_render_moves_every_cluster_whole() -> None:
    assert _moved(_desired("c1"), None) == {"a": None, "b": None}


def test_a_new_commit_that_changes_no_object_moves_no_cluster() -> None:
    assert _moved(_desired("c2"), _desired("c1")) == {}


def test_a_changed_object_moves_its_app_alone() -> None:
    assert _moved(_desired("c2", value="2"), _desired("c1")) == {"a": frozenset({"web-a"})}


def test_a_changed_application_moves_its_app_alone() -> None:
    pruning = replace(APPS[1], sync_policy={"automated": {"prune": True}})
    assert _moved(_desired("c2", apps=(APPS[0], pruning, APPS[2])), _desired("c1")) == {
        "b": frozenset({"web-b"})
    }


def test_an_object_removed_from_an_app_moves_that_app() -> None:
    assert _moved(_desired("c2", side=()), _desired("c1")) == {"a": frozenset({"side-a"})}


def test_an_app_removed_from_git_moves_that_app_so_its_objects_are_judged() -> None:
    assert _moved(_desired("c2", apps=APPS[:2]), _desired("c1")) == {"a": frozenset({"side-a"})}


def test_an_app_added_moves_that_app() -> None:
    assert _moved(_desired("c2"), _desired("c1", apps=APPS[:2])) == {"a": frozenset({"side-a"})}


def test_an_app_bringing_a_namespace_moves_its_whole_cluster() -> None:
    with_namespace = (config_map("side", {"v": "1"}), namespace("media"))
    assert _moved(_desired("c2", side=with_namespace), _desired("c1")) == {"a": None}


def test_an_app_whose_namespace_stays_as_it_was_moves_alone() -> None:
    before = (config_map("side", {"v": "1"}), namespace("media"))
    after = (config_map("side", {"v": "2"}), namespace("media"))
    assert _moved(_desired("c2", side=after), _desired("c1", side=before)) == {
        "a": frozenset({"side-a"})
    }


def test_an_error_of_no_one_cluster_moves_them_all() -> None:
    broken = (AppError("apps/bad.yaml", "not YAML"),)
    assert _moved(_desired("c2", errors=broken), _desired("c1")) == {"a": None, "b": None}

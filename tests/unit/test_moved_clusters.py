"""Which clusters a new render moved (daemon._moved): only those whose objects, apps,
failures or catalogue entries differ in substance; the commits they were read at do
not count, and an error no cluster owns moves them all."""

from __future__ import annotations

from dataclasses import replace

from reconciler.catalogue import Catalogue
from reconciler.daemon import _moved
from reconciler.desired import ClusterDesired, Desired
from reconciler.model import App, AppError, Manifest, ObjectRef, Origin
from tests.builders import app, config_map

APPS = (app("web-a", cluster="a"), app("web-b", cluster="b"))


def _desired(
    commit: str,
    value: str = "1",
    apps: tuple[App, ...] = APPS,
    errors: tuple[AppError, ...] = (),
) -> Desired:
    catalogue = Catalogue(
        tuple(replace(a, origin=replace(a.origin, commit=commit)) for a in apps), ()
    )
    clusters = {
        name: ClusterDesired(
            cluster=name,
            manifests=(
                Manifest(
                    ObjectRef("", "ConfigMap", "media", "settings"),
                    config_map("settings", {"v": value if name == "a" else "1"}),
                    Origin("lab", commit, f"web-{name}", f"deploy/{name}/cm.yaml"),
                ),
            ),
            apps=(f"web-{name}",),
            failed=(),
            catalogue=catalogue,
            commits={"lab": commit},
        )
        for name in ("a", "b")
    }
    return Desired(clusters, errors, catalogue, {"lab": commit})


def test_the_first_render_moves_every_cluster() -> None:
    assert _moved(_desired("c1"), None) == {"a", "b"}


def test_a_new_commit_that_changes_no_object_moves_no_cluster() -> None:
    assert _moved(_desired("c2"), _desired("c1")) == frozenset()


def test_a_changed_object_moves_its_cluster_alone() -> None:
    assert _moved(_desired("c2", value="2"), _desired("c1")) == {"a"}


def test_a_changed_application_moves_its_cluster_alone() -> None:
    pruning = replace(APPS[1], sync_policy={"automated": {"prune": True}})
    assert _moved(_desired("c2", apps=(APPS[0], pruning)), _desired("c1")) == {"b"}


def test_an_error_of_no_one_cluster_moves_them_all() -> None:
    broken = (AppError("apps/bad.yaml", "not YAML"),)
    assert _moved(_desired("c2", errors=broken), _desired("c1")) == {"a", "b"}

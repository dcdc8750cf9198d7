"""Keep-last-good: the apps of a repo that cannot be read right now keep their last
rendered desired state, so they neither vanish (their objects left unmanaged) nor
change; everything else is the new render."""

from __future__ import annotations

from reconciler.catalogue import Catalogue
from reconciler.daemon import keep_last_good
from reconciler.desired import ClusterDesired, Desired
from reconciler.model import App, AppError, AppOrigin, Manifest, ObjectRef, Origin
from tests.builders import config_map


def _app(name: str, repo: str, cluster: str = "agentic") -> App:
    return App(name, cluster, name, (), AppOrigin(repo, "c1", f"apps/{name}.yaml"))


def _manifest(app: App, name: str, data: str = "old") -> Manifest:
    ref = ObjectRef("", "ConfigMap", app.namespace, name)
    obj = config_map(name, {"k": data}, app.namespace)
    return Manifest(ref, obj, Origin(app.origin.repo, "c1", app.name, "deploy"))


def _desired(
    apps: list[App],
    manifests: list[Manifest],
    failed: tuple[str, ...] = (),
    errors: tuple[AppError, ...] = (),
    commits: dict[str, str] | None = None,
    unreadable: dict[str, str] | None = None,
) -> Desired:
    cluster = ClusterDesired(
        "agentic",
        tuple(manifests),
        tuple(a.name for a in apps if a.name not in failed),
        failed,
        errors,
    )
    return Desired(
        {"agentic": cluster},
        errors,
        Catalogue(tuple(apps), ()),
        commits or {},
        unreadable or {},
    )


WEB = _app("web", "lab")
SIDE = _app("side", "side")
OLD = _desired([WEB, SIDE], [_manifest(WEB, "web"), _manifest(SIDE, "side")], commits={"lab": "c1"})


def test_nothing_broken_or_nothing_before_is_the_new_render_unchanged() -> None:
    new = _desired([SIDE], [_manifest(SIDE, "side", "new")])
    assert keep_last_good(new, OLD, ()) is new
    assert keep_last_good(new, None, {"lab"}) is new


def test_the_apps_of_a_broken_repo_keep_their_last_desired_objects() -> None:
    new = _desired(
        [SIDE],
        [_manifest(SIDE, "side", "new")],
        commits={"side": "c2"},
        unreadable={"lab": "repo lab: object corrupt"},
    )
    kept = keep_last_good(new, OLD, {"lab"})
    assert [a.name for a in kept.catalogue.apps] == ["side", "web"]
    agentic = kept.clusters["agentic"]
    assert agentic.apps == ("side", "web")
    assert {m.ref.name: m.obj["data"] for m in agentic.manifests} == {
        "side": {"k": "new"},
        "web": {"k": "old"},
    }
    # The kept apps are still rendered from lab's last good commit: it stays in use,
    # so its checkout is not pruned (daemon.refresh prunes after keep_last_good).
    assert kept.commits == {"side": "c2", "lab": "c1"}
    assert kept.unreadable == new.unreadable


def test_an_app_the_new_render_still_has_is_taken_from_the_new_render() -> None:
    new = _desired([WEB, SIDE], [_manifest(WEB, "web", "new"), _manifest(SIDE, "side")])
    assert keep_last_good(new, OLD, {"lab"}) is new


def test_an_app_gone_from_a_readable_repo_stays_gone() -> None:
    new = _desired([WEB], [_manifest(WEB, "web")])
    assert keep_last_good(new, OLD, {"lab"}) is new


def test_a_kept_app_that_had_failed_stays_failed_with_its_error() -> None:
    error = AppError("web", "chart not found", "agentic")
    old = _desired([WEB, SIDE], [_manifest(SIDE, "side")], failed=("web",), errors=(error,))
    new = _desired([SIDE], [_manifest(SIDE, "side")])
    agentic = keep_last_good(new, old, {"lab"}).clusters["agentic"]
    # A failed app's live objects are left alone rather than pruned, as before.
    assert agentic.failed == ("web",)
    assert agentic.errors == (error,)
    assert [m.ref.name for m in agentic.manifests] == ["side"]


def test_an_object_the_new_render_already_has_is_not_taken_twice() -> None:
    before = _manifest(WEB, "web")
    # The same object now comes from an app of a readable repo.
    moved = Manifest(before.ref, {**before.obj, "data": {"k": "new"}}, _manifest(SIDE, "x").origin)
    new = _desired([SIDE], [moved])
    agentic = keep_last_good(new, OLD, {"lab"}).clusters["agentic"]
    assert agentic.manifests == (moved,)


def test_a_cluster_the_last_render_did_not_have_is_the_new_render() -> None:
    new = _desired([SIDE], [_manifest(SIDE, "side")])
    only_monit = Desired(
        {"monit": ClusterDesired("monit", (), (), ())}, (), Catalogue((WEB,), ()), {}, {}
    )
    kept = keep_last_good(new, only_monit, {"lab"})
    assert kept.clusters["agentic"] == new.clusters["agentic"]
    assert [a.name for a in kept.catalogue.apps] == ["side", "web"]

"""Each git source renders at its own targetRevision (branch, tag or commit SHA,
from the fetched cache or a local repository), while Applications are read at
the tracked ref; a revision that does not exist fails its app alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml
from pygit2.enums import ObjectType

from reconciler.config import Config
from reconciler.daemon import _same_render
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.errors import TreeError
from testenv.gitrepos import (
    SIGNATURE,
    FileContent,
    Symlink,
    commit_files,
    make_upstream_and_clone,
)
from tests.builders import agentic_config, argo_application
from tests.desired.conftest import require_helm

URL = "https://example.invalid/lab.git"
SERVER = "https://10.20.0.40:6443"
CM = "web/cm.yaml"
VALUES = "values/web.yaml"
CHART = {
    "chart/Chart.yaml": b"apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "chart/templates/cm.yaml": (
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-chart\n"
        b"data:\n  version: {{ .Values.version | quote }}\n"
    ),
}


def _configmap(version: str) -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web"},
            "data": {"version": version},
        }
    ).encode()


def _application(name: str, **source: Any) -> bytes:
    sources = source.pop("sources", None) or [{"repoURL": URL, "path": "web", **source}]
    policy = {"automated": {"prune": True, "selfHeal": True}}
    return argo_application(name, SERVER, name, *sources, syncPolicy=policy)


def _config(tmp: Path, clone: Path, ref: str = "refs/remotes/origin/main") -> Config:
    repo = {"name": "lab", "path": str(clone), "url": URL, "apps": ["apps"], "ref": ref}
    return agentic_config(tmp, [repo], SERVER, render={"helm": require_helm()})


def _render(config: Config, fetch: bool = True) -> Desired:
    return build_desired(config, open_sources(config, fetch=fetch), tools_for(config))


def _versions(desired: Desired) -> dict[str, str]:
    """What each app deployed: its ConfigMap's `version`."""
    return {
        m.origin.app: m.obj["data"]["version"]
        for m in desired.clusters["agentic"].manifests
        if m.ref.kind == "ConfigMap"
    }


def _errors(desired: Desired) -> dict[str, str]:
    return {e.app: str(e) for e in desired.errors}


class Lab:
    """An upstream repo (where people push, tag and branch) and the operator's clone."""

    def __init__(self, tmp: Path, files: dict[str, bytes]) -> None:
        self.upstream_path, self.clone = make_upstream_and_clone(tmp, "lab", files)
        self.upstream = pygit2.Repository(str(self.upstream_path))
        self.first = str(self.upstream.references["refs/heads/main"].target)

    def commit(self, files: dict[str, FileContent], ref: str = "refs/heads/main") -> str:
        return commit_files(self.upstream, ref, files, "change")

    def tag(self, name: str, commit: str) -> None:
        self.upstream.references.create(f"refs/tags/{name}", pygit2.Oid(hex=commit), force=True)


APPS = {
    "apps/pinned.yaml": _application("pinned", targetRevision="v1"),
    "apps/tracked.yaml": _application("tracked", targetRevision="main"),
    "apps/head.yaml": _application("head", targetRevision="HEAD"),
    "apps/release.yaml": _application("release", targetRevision="release"),
}


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    """main: `one` then `two`; tag v1 and branch release at `one`."""
    lab = Lab(tmp_path, {CM: _configmap("one"), **APPS})
    lab.tag("v1", lab.first)
    lab.upstream.references.create("refs/heads/release", pygit2.Oid(hex=lab.first))
    lab.commit({CM: _configmap("two")})
    return lab


def test_a_source_pinned_to_a_tag_or_branch_renders_it_and_the_tracked_ones_main(
    lab: Lab, tmp_path: Path
) -> None:
    desired = _render(_config(tmp_path, lab.clone))
    assert desired.errors == ()
    assert _versions(desired) == {
        "pinned": "one",
        "release": "one",
        "tracked": "two",
        "head": "two",
    }
    pinned = [m for m in desired.clusters["agentic"].manifests if m.origin.app == "pinned"]
    assert {m.origin.commit for m in pinned} == {lab.first}
    assert desired.revisions == {"lab@release": lab.first, "lab@v1": lab.first}


def test_a_later_commit_on_main_leaves_a_tag_alone_and_moving_the_tag_moves_it(
    lab: Lab, tmp_path: Path
) -> None:
    config = _config(tmp_path, lab.clone)
    before = _render(config)
    third = lab.commit({CM: _configmap("three")})
    after_commit = _render(config)
    assert _versions(after_commit)["pinned"] == "one"
    assert _versions(after_commit)["tracked"] == "three"
    lab.tag("v1", third)
    moved = _render(config)
    assert _versions(moved)["pinned"] == "three"
    assert moved.revisions["lab@v1"] == third
    assert not _same_render(moved, after_commit) and not _same_render(after_commit, before)


def test_a_pinned_branch_that_moves_is_a_new_render_for_the_daemon(
    lab: Lab, tmp_path: Path
) -> None:
    config = _config(tmp_path, lab.clone)
    before = _render(config)
    assert _same_render(_render(config), before)
    lab.commit({CM: _configmap("hotfix")}, ref="refs/heads/release")
    after = _render(config)
    # The tracked commit did not move; only the branch the release app pins did.
    assert after.commits == before.commits
    assert _versions(after)["release"] == "hotfix"
    assert not _same_render(after, before)


def test_full_and_abbreviated_commit_shas_and_annotated_tags_resolve(
    lab: Lab, tmp_path: Path
) -> None:
    annotated = lab.upstream.create_tag(
        "v1-annotated", pygit2.Oid(hex=lab.first), ObjectType.COMMIT, SIGNATURE, "release one"
    )
    assert annotated
    lab.commit(
        {
            "apps/full.yaml": _application("full", targetRevision=lab.first),
            "apps/short.yaml": _application("short", targetRevision=lab.first[:8]),
            "apps/annotated.yaml": _application("annotated", targetRevision="v1-annotated"),
            "apps/full-ref.yaml": _application("full-ref", targetRevision="refs/tags/v1"),
        }
    )
    versions = _versions(_render(_config(tmp_path, lab.clone)))
    assert {versions[a] for a in ("full", "short", "annotated", "full-ref")} == {"one"}


def test_a_revision_that_does_not_exist_fails_only_its_app_naming_key_and_revision(
    lab: Lab, tmp_path: Path
) -> None:
    lab.commit({"apps/typo.yaml": _application("typo", targetRevision="v9")})
    desired = _render(_config(tmp_path, lab.clone))
    assert desired.clusters["agentic"].failed == ("typo",)
    message = _errors(desired)["typo"]
    assert "app typo" in message
    assert "spec.source.targetRevision: revision 'v9' does not exist in repo lab" in message
    assert set(_versions(desired)) == {"pinned", "release", "tracked", "head"}


def test_a_branch_deleted_upstream_is_gone_after_the_next_fetch(lab: Lab, tmp_path: Path) -> None:
    config = _config(tmp_path, lab.clone)
    assert _versions(_render(config))["release"] == "one"
    lab.upstream.references.delete("refs/heads/release")
    desired = _render(config)
    assert "revision 'release' does not exist" in _errors(desired)["release"]


def test_revisions_that_git_would_read_as_expressions_are_not_resolved(
    lab: Lab, tmp_path: Path
) -> None:
    revisions = open_sources(_config(tmp_path, lab.clone), fetch=True).revisions["lab"]
    for hostile in ("main~1", "HEAD^", ":/change", "main@{0}", "../v1", "v1 ", "-v1", "x" * 500):
        with pytest.raises(TreeError, match="does not exist in repo lab") as caught:
            revisions.at(hostile)
        assert len(str(caught.value)) < 200


def test_a_ref_source_lends_value_files_at_its_own_revision(lab: Lab, tmp_path: Path) -> None:
    lab.commit({VALUES: b"version: one\n", **CHART})
    lab.tag("values-one", lab.commit({}))
    lab.commit({VALUES: b"version: two\n"})

    def multi(name: str, values_revision: str) -> bytes:
        chart = {
            "repoURL": URL,
            "path": "chart",
            "targetRevision": "main",
            "helm": {"valueFiles": ["$values/values/web.yaml"]},
        }
        values = {"repoURL": URL, "targetRevision": values_revision, "ref": "values"}
        return _application(name, sources=[chart, values])

    lab.commit(
        {
            "apps/multi.yaml": multi("multi", "values-one"),
            "apps/multi-main.yaml": multi("multi-main", "main"),
            "apps/multi-typo.yaml": multi("multi-typo", "nope"),
        }
    )
    desired = _render(_config(tmp_path, lab.clone))
    assert _versions(desired)["multi"] == "one"
    assert _versions(desired)["multi-main"] == "two"
    assert "spec.sources[1].targetRevision: revision 'nope'" in _errors(desired)["multi-typo"]


def test_a_local_repository_resolves_its_own_branches_and_tags(tmp_path: Path) -> None:
    lab = Lab(tmp_path, {CM: _configmap("one"), **APPS})
    clone = pygit2.Repository(str(lab.clone))
    clone.references.create("refs/tags/v1", pygit2.Oid(hex=lab.first))
    clone.references.create("refs/heads/release", pygit2.Oid(hex=lab.first))
    commit_files(clone, "refs/heads/main", {CM: _configmap("local")}, "local work")
    desired = _render(_config(tmp_path, lab.clone, ref="refs/heads/main"), fetch=False)
    assert _versions(desired) == {
        "pinned": "one",
        "release": "one",
        "tracked": "local",
        "head": "local",
    }


def test_checkouts_of_two_commits_of_one_repo_live_side_by_side(lab: Lab, tmp_path: Path) -> None:
    sources = open_sources(_config(tmp_path, lab.clone), fetch=True)
    tracked = sources.trees["lab"].materialise()
    pinned = sources.revisions["lab"].at("v1").materialise()
    assert tracked != pinned and tracked.parent == pinned.parent
    assert b"two" in (tracked / CM).read_bytes() and b"one" in (pinned / CM).read_bytes()


def test_a_pinned_commit_is_held_to_the_same_symlink_rules(lab: Lab, tmp_path: Path) -> None:
    lab.tag("escape", lab.commit({CM: Symlink("../../../etc/passwd")}))
    lab.commit(
        {
            CM: _configmap("three"),
            "apps/escape.yaml": _application("escape", targetRevision="escape"),
        }
    )
    desired = _render(_config(tmp_path, lab.clone))
    assert "points outside the repository" in _errors(desired)["escape"]
    assert _versions(desired)["tracked"] == "three"

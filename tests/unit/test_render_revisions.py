"""Which tree each source of an app renders at: the tracked one for the tracked
ref's own names, the repository's answer for any other revision, and an error
naming the app's key and the revision when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import RenderError, TreeError
from reconciler.model import App, AppOrigin, Source
from reconciler.render.revisions import source_trees, tracked_names
from reconciler.tree import EntryKind, Tree


class _Tree:
    """A tree that is only its name and commit: resolution never reads files."""

    def __init__(self, commit: str) -> None:
        self._commit = commit

    @property
    def repo(self) -> str:
        return "lab"

    @property
    def commit(self) -> str:
        return self._commit

    def kind(self, path: str) -> EntryKind:
        return "missing"

    def size(self, path: str) -> int:
        return 0

    def read(self, path: str) -> bytes:
        return b""

    def files(self, path: str, recurse: bool) -> list[str]:
        return []

    def materialise(self) -> Path:
        return Path("/nonexistent")


class _Revisions:
    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.asked: list[str] = []

    def at(self, revision: str) -> Tree:
        self.asked.append(revision)
        if revision not in self.known:
            raise TreeError(f"revision {revision!r} does not exist in repo lab")
        return _Tree(self.known[revision])


TRACKED = _Tree("a" * 40)


def _app(*sources: Source) -> App:
    return App("web", "agentic", "web", sources, AppOrigin("lab", "a" * 40, "apps/web.yaml"))


def _git(revision: str, key: str = "spec.source") -> Source:
    return Source("https://git.test/lab.git", revision, repo="lab", path="web", key=key)


@pytest.mark.parametrize(
    ("ref", "names"),
    [
        (
            "refs/remotes/origin/main",
            {"", "HEAD", "refs/remotes/origin/main", "main", "refs/heads/main", "origin/main"},
        ),
        ("refs/heads/main", {"", "HEAD", "refs/heads/main", "main"}),
        ("refs/tags/v1", {"", "HEAD", "refs/tags/v1", "v1"}),
        ("HEAD", {"", "HEAD"}),
    ],
)
def test_the_tracked_refs_own_names(ref: str, names: set[str]) -> None:
    assert tracked_names(ref) == names


def test_tracked_names_render_the_tracked_tree_without_asking_the_repository() -> None:
    revisions = _Revisions({})
    app = _app(_git("main"), _git(""), _git("HEAD"))
    found = source_trees(app, {"lab": TRACKED}, {"lab": revisions}, {"lab": "refs/heads/main"})
    assert found.trees == (TRACKED, TRACKED, TRACKED)
    assert found.pinned == {} and revisions.asked == []


def test_other_revisions_are_resolved_and_recorded_chart_sources_get_no_tree() -> None:
    revisions = _Revisions({"v1": "b" * 40})
    chart = Source("https://charts.test", "1.0.0", chart="web")
    app = _app(_git("v1"), chart)
    found = source_trees(
        app, {"lab": TRACKED}, {"lab": revisions}, {"lab": "refs/remotes/origin/main"}
    )
    assert [t.commit if t else None for t in found.trees] == ["b" * 40, None]
    assert found.pinned == {"lab@v1": "b" * 40}


def test_an_unknown_revision_names_the_key_and_the_revision() -> None:
    app = _app(_git("main", "spec.sources[0]"), _git("v9", "spec.sources[1]"))
    with pytest.raises(RenderError) as caught:
        source_trees(app, {"lab": TRACKED}, {"lab": _Revisions({})}, {"lab": "refs/heads/main"})
    assert str(caught.value) == (
        "spec.sources[1].targetRevision: revision 'v9' does not exist in repo lab"
    )


def test_a_repo_without_revisions_offers_only_its_tracked_ref() -> None:
    with pytest.raises(RenderError, match=r"spec.source.targetRevision: revision 'v1': repo lab"):
        source_trees(_app(_git("v1")), {"lab": TRACKED}, {}, {"lab": "refs/heads/main"})

"""The git source reads only what is committed on the tracked ref, fetches into
its own cache, never changes the operator's clone, and keeps working offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pygit2
import pytest

from reconciler.catalogue import Catalogue
from reconciler.config import RepoConfig
from reconciler.desired import Desired, prune_checkouts
from reconciler.errors import SourceError, TreeError
from reconciler.sources.git import GitSource
from testenv.gitrepos import Symlink, commit_files, make_upstream_and_clone, pull
from tests.builders import agentic_config

APP_FILE = "deploy/cm.yaml"
ORIGINAL = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n"
CHANGED = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\n"


def _source(clone: Path, state: Path, ref: str = "refs/remotes/origin/main") -> GitSource:
    return GitSource(RepoConfig("demo", clone, None, ref, ()), state)


def _clone_state(clone: Path) -> dict[str, str]:
    """Every ref of the clone and its working-tree status, to prove nothing changed."""
    repo = pygit2.Repository(str(clone))
    refs = {name: str(repo.references[name].resolve().target) for name in repo.references}
    return {**refs, "status": repr(sorted(repo.status().items()))}


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    return make_upstream_and_clone(tmp_path, "demo", {APP_FILE: ORIGINAL})


def test_reads_the_committed_tree_not_the_working_tree(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    (clone / APP_FILE).write_bytes(CHANGED)  # uncommitted edit
    (clone / "deploy" / "untracked.yaml").write_bytes(CHANGED)
    tree = _source(clone, tmp_path / "state").snapshot()
    assert tree.read(APP_FILE) == ORIGINAL
    assert tree.files("deploy", recurse=False) == [APP_FILE]


def test_a_local_commit_on_a_tracked_local_branch_is_picked_up(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    source = _source(clone, tmp_path / "state", ref="refs/heads/main")
    before = source.snapshot().commit
    commit_files(pygit2.Repository(str(clone)), "refs/heads/main", {APP_FILE: CHANGED}, "edit")
    after = source.snapshot()
    assert after.commit != before and after.read(APP_FILE) == CHANGED


def test_fetch_goes_into_the_cache_and_leaves_the_clone_untouched(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    upstream, clone = repos
    source = _source(clone, tmp_path / "state")
    before = _clone_state(clone)
    pushed = commit_files(
        pygit2.Repository(str(upstream)), "refs/heads/main", {APP_FILE: CHANGED}, "upstream change"
    )
    assert source.snapshot().read(APP_FILE) == ORIGINAL  # not fetched yet
    outcome = source.fetch()
    assert outcome.ok and outcome.commit == pushed
    tree = source.snapshot()
    assert tree.commit == pushed and tree.read(APP_FILE) == CHANGED
    assert _clone_state(clone) == before
    assert (tmp_path / "state" / "git" / "demo.git").is_dir()


def test_a_pull_in_the_clone_is_noticed_without_fetching(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    upstream, clone = repos
    source = _source(clone, tmp_path / "state")
    source.fetch()
    pushed = commit_files(
        pygit2.Repository(str(upstream)), "refs/heads/main", {APP_FILE: CHANGED}, "upstream change"
    )
    pull(clone)
    assert source.snapshot().commit == pushed


def test_offline_fetch_keeps_the_last_fetched_commit_and_says_so(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    upstream, clone = repos
    source = _source(clone, tmp_path / "state")
    pushed = commit_files(
        pygit2.Repository(str(upstream)), "refs/heads/main", {APP_FILE: CHANGED}, "upstream change"
    )
    assert source.fetch().ok
    shutil.rmtree(upstream)
    outcome = source.fetch()
    assert not outcome.ok and outcome.commit == pushed
    assert "offline" in outcome.message and pushed[:12] in outcome.message
    assert source.snapshot().commit == pushed


def test_repo_url_defaults_to_the_clones_origin(repos: tuple[Path, Path], tmp_path: Path) -> None:
    upstream, clone = repos
    assert _source(clone, tmp_path / "state").url() == str(upstream)


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"repo demo: .*nowhere does not exist"):
        _source(tmp_path / "nowhere", tmp_path / "state").snapshot()


def test_corrupt_repository_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)
    (broken / ".git" / "HEAD").write_text("garbage")
    with pytest.raises(SourceError, match=r"repo demo: .*broken is not a readable git repository"):
        _source(broken, tmp_path / "state").snapshot()


def test_unknown_ref_is_a_clear_error(repos: tuple[Path, Path], tmp_path: Path) -> None:
    _, clone = repos
    source = _source(clone, tmp_path / "state", ref="refs/remotes/origin/nope")
    with pytest.raises(SourceError, match=r"ref refs/remotes/origin/nope not found .*known refs"):
        source.snapshot()


def test_fetch_of_an_unknown_branch_reports_failure(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    outcome = _source(clone, tmp_path / "state", ref="refs/remotes/origin/nope").fetch()
    assert not outcome.ok and "fetch from" in outcome.message and "failed" in outcome.message


def test_symlinks_inside_the_repository_are_followed_and_escaping_ones_refused(
    tmp_path: Path,
) -> None:
    _, clone = make_upstream_and_clone(
        tmp_path,
        "demo",
        {
            APP_FILE: ORIGINAL,
            "deploy/inside.yaml": Symlink("cm.yaml"),
            "deploy/outside.yaml": Symlink("../../etc/passwd"),
        },
    )
    tree = _source(clone, tmp_path / "state").snapshot()
    assert tree.read("deploy/inside.yaml") == ORIGINAL
    with pytest.raises(TreeError, match=r"deploy/outside\.yaml .* points outside the repository"):
        tree.read("deploy/outside.yaml")
    with pytest.raises(TreeError, match="points outside the repository"):
        tree.files("deploy", recurse=True)
    root = tree.materialise()
    assert (root / "deploy" / "inside.yaml").read_bytes() == ORIGINAL
    assert not (root / "deploy" / "outside.yaml").exists()


def test_checkouts_of_commits_no_longer_rendered_are_removed_once_idle(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    source = _source(clone, tmp_path / "state", ref="refs/heads/main")
    old = source.snapshot()
    old_dir = old.materialise()
    commit_files(pygit2.Repository(str(clone)), "refs/heads/main", {APP_FILE: CHANGED}, "edit")
    new = source.snapshot()
    new_dir = new.materialise()
    assert old_dir != new_dir and old_dir.is_dir()

    # Just written: another process may be reading it.
    assert source.prune_checkouts({new.commit}) == 0 and old_dir.is_dir()
    assert source.prune_checkouts({new.commit}, idle_s=0) == 1
    assert not old_dir.exists()
    assert (new_dir / APP_FILE).read_bytes() == CHANGED, "the rendered commit's stays"


def test_a_checkout_read_again_is_spared_as_recently_used(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    source = _source(clone, tmp_path / "state", ref="refs/heads/main")
    tree = source.snapshot()
    written = tree.materialise()
    long_ago = written.stat().st_mtime - 7200
    os.utime(written, (long_ago, long_ago))
    assert source.snapshot().materialise() == written  # a reader takes it up again
    assert source.prune_checkouts(set(), idle_s=3600) == 0 and written.is_dir()


def test_checkouts_are_pruned_only_when_a_rendered_commit_moved(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = repos
    repo = {"name": "demo", "path": str(clone), "ref": "refs/heads/main"}
    config = agentic_config(tmp_path, [repo], "https://10.20.0.40:6443")
    source = GitSource(config.repos[0], config.state_dir)
    old = source.snapshot()
    old_dir = old.materialise()
    commit_files(pygit2.Repository(str(clone)), "refs/heads/main", {APP_FILE: CHANGED}, "edit")
    new = source.snapshot()
    new.materialise()
    long_ago = old_dir.stat().st_mtime - 7200
    os.utime(old_dir, (long_ago, long_ago))

    def rendered(commit: str) -> Desired:
        return Desired({}, (), Catalogue((), ()), {"demo": commit})

    assert prune_checkouts(config, rendered(new.commit), rendered(new.commit)) == 0
    assert old_dir.is_dir(), "no commit moved: the checkouts are not even listed"
    assert prune_checkouts(config, rendered(new.commit), rendered(old.commit)) == 1
    assert not old_dir.exists()

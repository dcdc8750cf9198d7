"""GitTree.fingerprint: equal at two commits exactly when what is at a path is, for
files, directories and the symlinks under a directory (whose targets may lie outside
it), and always an answer, never a hang, for links that loop or leave the repo."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from reconciler.config import RepoConfig
from reconciler.sources.git import GitSource, GitTree
from testenv.gitrepos import FileContent, Symlink, commit_files, make_upstream_and_clone

FILES: dict[str, FileContent] = {
    "app/a.yaml": b"a: 1\n",
    "app/sub/b.yaml": b"b: 1\n",
    "app/out.yaml": Symlink("../shared/x.yaml"),
    "other/c.yaml": b"c: 1\n",
    "shared/x.yaml": b"x: 1\n",
    "loop/self": Symlink(".."),
    "loop/up": Symlink("../../outside"),
}


class Repo:
    def __init__(self, tmp: Path) -> None:
        _, self.clone = make_upstream_and_clone(tmp, "lab", FILES)
        self.source = GitSource(
            RepoConfig("lab", self.clone, None, "refs/heads/main", ()), tmp / "state"
        )

    def commit(self, files: dict[str, FileContent]) -> GitTree:
        commit_files(pygit2.Repository(str(self.clone)), "refs/heads/main", files, "change")
        return self.source.snapshot()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def _moved(before: GitTree, after: GitTree, *paths: str) -> list[str]:
    return [p for p in paths if before.fingerprint(p) != after.fingerprint(p)]


PATHS = ("app", "app/a.yaml", "app/sub", "app/out.yaml", "other", "shared")


def test_a_file_elsewhere_moves_only_the_paths_above_it(repo: Repo) -> None:
    before = repo.source.snapshot()
    after = repo.commit({"other/c.yaml": b"c: 2\n"})
    assert _moved(before, after, *PATHS) == ["other"]
    after_b = repo.commit({"app/sub/b.yaml": b"b: 2\n"})
    assert _moved(after, after_b, *PATHS) == ["app", "app/sub"]


def test_the_target_of_a_link_under_a_directory_moves_the_directory(repo: Repo) -> None:
    before = repo.source.snapshot()
    after = repo.commit({"shared/x.yaml": b"x: 2\n"})
    # app/ holds only the link, unchanged; what it leads to did change.
    assert _moved(before, after, *PATHS) == ["app", "app/out.yaml", "shared"]
    relinked = repo.commit({"app/out.yaml": Symlink("../other/c.yaml")})
    assert _moved(after, relinked, *PATHS) == ["app", "app/out.yaml"]


def test_a_missing_path_has_no_fingerprint_until_it_appears(repo: Repo) -> None:
    before = repo.source.snapshot()
    assert before.fingerprint("app/new.yaml") is None
    after = repo.commit({"app/new.yaml": b"n: 1\n"})
    assert after.fingerprint("app/new.yaml") is not None
    assert _moved(before, after, *PATHS) == ["app"]


def test_links_that_loop_or_leave_the_repository_still_fingerprint_steadily(
    repo: Repo,
) -> None:
    before = repo.source.snapshot()
    root = before.fingerprint("")
    assert root is not None and before.fingerprint("loop") is not None
    after = repo.commit({"other/c.yaml": b"c: 3\n"})
    # loop/self leads back to the root, so the root's change shows through it.
    assert _moved(before, after, "", "loop", "app") == ["", "loop"]
    assert repo.source.snapshot().fingerprint("loop") == after.fingerprint("loop")

"""The git source follows symlinks as the kernel will once they are on disk:
relative chains, links to directories and links through links resolve from
where each link really is; any chain ending outside the repository or in
`.git` is a TreeError naming the link, and is never written to a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import RepoConfig
from reconciler.errors import TreeError
from reconciler.sources.git import GitSource, GitTree
from testenv.gitrepos import FileContent, Symlink, make_upstream_and_clone

CM = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n"


def _tree(tmp_path: Path, files: dict[str, FileContent]) -> GitTree:
    _, clone = make_upstream_and_clone(tmp_path, "demo", files)
    return GitSource(
        RepoConfig("demo", clone, None, "refs/remotes/origin/main", ()), tmp_path / "state"
    ).snapshot()


def test_chains_links_to_directories_and_links_through_links_resolve_inside(
    tmp_path: Path,
) -> None:
    tree = _tree(
        tmp_path,
        {
            "real/cm.yaml": CM,
            "alias": Symlink("real"),
            "deep/er/up": Symlink("../.."),
            "deep/via": Symlink("er/up/alias/cm.yaml"),
            "a/b/link": Symlink("../../deep/via"),
        },
    )
    assert tree.read("a/b/link") == CM
    assert tree.kind("deep/er/up/alias") == "dir"
    root = tree.materialise()
    assert (root / "a" / "b" / "link").read_bytes() == CM


def test_a_chain_that_only_reads_as_inside_is_refused_and_not_written(tmp_path: Path) -> None:
    # `d/up` is the repository root, so `d/up/..` is the checkout's parent on disk,
    # though `d/up/..` reads as `d` when the text is normalised.
    tree = _tree(
        tmp_path,
        {"d/cm.yaml": CM, "d/up": Symlink(".."), "d/leak": Symlink("up/../state/x")},
    )
    with pytest.raises(TreeError, match=r"symlink d/leak at .* \(through d/up\) points outside"):
        tree.read("d/leak")
    with pytest.raises(TreeError, match="points outside the repository"):
        tree.files("d", recurse=True)
    root = tree.materialise()
    assert not (root / "d" / "leak").is_symlink()
    assert (root / "d" / "up").is_symlink()  # the harmless link is kept


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/etc/passwd", "points outside the repository"),
        ("../../etc/passwd", "points outside the repository"),
        ("../.git/config", "points into .git"),
        ("loop", "symlink loop"),
    ],
)
def test_bad_links_fail_the_reader_with_the_link_named(
    tmp_path: Path, target: str, message: str
) -> None:
    tree = _tree(tmp_path, {"d/cm.yaml": CM, "d/bad": Symlink(target), "d/loop": Symlink("bad")})
    with pytest.raises(TreeError, match=message) as info:
        tree.read("d/bad")
    assert "at commit" in str(info.value) and "of repo demo" in str(info.value)
    assert not (tree.materialise() / "d" / "bad").is_symlink()


def test_checkouts_from_before_the_kernel_rules_are_not_reused(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"d/cm.yaml": CM})
    stale = tmp_path / "state" / "checkouts" / "demo" / tree.commit
    stale.mkdir(parents=True)
    (stale / "planted").write_text("old")
    root = tree.materialise()
    assert root != stale and not (root / "planted").exists()
    assert (root / "d" / "cm.yaml").read_bytes() == CM


def test_a_path_into_git_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"d/cm.yaml": CM})
    with pytest.raises(TreeError, match=r"\.git/config at commit .* points into \.git"):
        tree.read(".git/config")

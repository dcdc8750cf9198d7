"""A new commit's checkout is made from the last one this process wrote of the
repository (reconciler.sources.git GitTree.materialise): the files the commits
share are hard-linked, the others written, and every symlink is decided again.
Whatever the change, it equals a checkout written from nothing, byte for byte,
mode for mode and link for link. Files are linked only while the render sandbox's
Landlock rules keep tools from writing checkouts. Real git repositories; nothing
is faked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode, ObjectType

from reconciler.config import RepoConfig
from reconciler.desired import open_sources
from reconciler.errors import TreeError
from reconciler.render.sandbox import confines_files
from reconciler.sources.git import GitSource, GitTree
from testenv.gitrepos import (
    SIGNATURE,
    Executable,
    FileContent,
    Symlink,
    commit_files,
    make_upstream_and_clone,
)
from tests.builders import agentic_config

CM = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n"
OTHER = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\n"
START: dict[str, FileContent] = {
    "apps/cm.yaml": CM,
    "apps/sub/deep.yaml": OTHER,
    "bin/run.sh": Executable(b"#!/bin/sh\necho hi\n"),
    "docs/readme.md": b"# lab\n",
    "links/to-cm": Symlink("../apps/cm.yaml"),
    "links/to-dir": Symlink("../apps"),
    "links/out": Symlink("../../etc/passwd"),  # never written
    "hop": Symlink("apps"),
    "links/via-hop": Symlink("../hop/cm.yaml"),
    "flip/x.yaml": CM,
    "f2d": b"a file, later a directory\n",
}
CHANGES: dict[str, dict[str, FileContent]] = {
    "a file added": {"apps/new.yaml": OTHER},
    "a file deleted": {"docs/readme.md": None},
    "a file renamed": {"apps/sub/deep.yaml": None, "apps/moved/deep.yaml": OTHER},
    "a file edited": {"apps/cm.yaml": OTHER},
    "a file made executable": {"apps/cm.yaml": Executable(CM)},
    "an executable made plain": {"bin/run.sh": b"#!/bin/sh\necho hi\n"},
    "a symlink retargeted": {"links/to-cm": Symlink("../apps/sub/deep.yaml")},
    "a symlink made a file": {"links/to-dir": CM},
    # One blob for both: only the mode tells a link from a file.
    "a symlink made a file of the same text": {"links/to-dir": b"../apps"},
    "a file made a symlink": {"docs/readme.md": Symlink("../apps/cm.yaml")},
    "a directory made a file": {"flip/x.yaml": None, "flip": CM},
    "a file made a directory": {"f2d": None, "f2d/inner.yaml": CM},
    "an escaping link brought inside": {"links/out": Symlink("../docs/readme.md")},
    "a link made to escape": {"links/to-cm": Symlink("../../../x")},
    # links/via-hop is the same blob, but hop now leads out: it must not be written.
    "an unchanged link led out by a changed one": {"hop": Symlink("..")},
    "a link's target removed": {"apps/cm.yaml": None},
}


def _source(clone: Path, state: Path, confined: bool = True) -> GitSource:
    """`confined`: as if tools ran under Landlock's filesystem rules."""
    config = RepoConfig("demo", clone, None, "refs/heads/main", ())
    return GitSource(config, state, link_checkouts=lambda: confined)


class Lab:
    def __init__(self, tmp: Path, files: dict[str, FileContent], confined: bool = True) -> None:
        self.tmp = tmp
        _, self.clone = make_upstream_and_clone(tmp, "demo", files)
        self.source = _source(self.clone, tmp / "state", confined)
        self.fresh = 0

    def commit(self, files: dict[str, FileContent]) -> None:
        commit_files(pygit2.Repository(str(self.clone)), "refs/heads/main", files, "change")

    def tree(self) -> GitTree:
        return self.source.snapshot()

    def fresh_checkout(self) -> Path:
        """The current commit written from nothing, in a state of its own."""
        self.fresh += 1
        return _source(self.clone, self.tmp / f"fresh-{self.fresh}").snapshot().materialise()


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path, START)


def _contents(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root`: kind and exact mode, and the bytes or the link text."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_checkout_made_from_the_last_equals_one_written_from_nothing(
    lab: Lab, change: str
) -> None:
    before = lab.tree().materialise()
    lab.commit(CHANGES[change])
    after = lab.tree().materialise()
    assert after != before
    assert _contents(after) == _contents(lab.fresh_checkout())


def test_each_checkout_of_a_run_of_commits_equals_one_written_from_nothing(lab: Lab) -> None:
    """Every change in turn, a checkout every other commit: each is made from one
    several commits back."""
    lab.tree().materialise()
    for n, change in enumerate(CHANGES.values()):
        lab.commit(change)
        if n % 2:
            assert _contents(lab.tree().materialise()) == _contents(lab.fresh_checkout())


def test_unchanged_files_are_linked_and_changed_ones_written(lab: Lab) -> None:
    before = lab.tree().materialise()
    lab.commit({"apps/cm.yaml": OTHER})
    after = lab.tree().materialise()
    shared = (before / "apps/sub/deep.yaml").stat(), (after / "apps/sub/deep.yaml").stat()
    assert shared[0].st_ino == shared[1].st_ino, "an unchanged file is one inode"
    assert (before / "apps/cm.yaml").read_bytes() == CM, "the earlier checkout is untouched"
    assert (after / "apps/cm.yaml").read_bytes() == OTHER
    assert (before / "apps/cm.yaml").stat().st_ino != (after / "apps/cm.yaml").stat().st_ino


def test_checkout_files_are_read_only_and_directories_private(lab: Lab) -> None:
    root = lab.tree().materialise()
    modes = {rel: entry[1] for rel, entry in _contents(root).items() if entry[0] != "link"}
    assert modes["apps/cm.yaml"] == 0o400 and modes["bin/run.sh"] == 0o500
    assert modes["apps"] == 0o700 and stat.S_IMODE(root.stat().st_mode) == 0o700


def test_a_link_an_earlier_commit_changed_is_decided_again_at_the_new_one(lab: Lab) -> None:
    lab.tree().materialise()
    lab.commit({"hop": Symlink("..")})
    tree = lab.tree()
    with pytest.raises(TreeError, match=r"links/via-hop .* points outside the repository"):
        tree.read("links/via-hop")
    root = tree.materialise()
    assert not (root / "links/via-hop").is_symlink() and not (root / "links/out").is_symlink()
    assert os.readlink(root / "links/to-cm") == "../apps/cm.yaml"


def test_a_base_file_changed_on_disk_is_written_again_not_linked(lab: Lab) -> None:
    before = lab.tree().materialise()
    planted = before / "apps/sub/deep.yaml"
    planted.chmod(0o600)
    planted.write_bytes(b"planted\n")
    lab.commit({"apps/cm.yaml": OTHER})
    after = lab.tree().materialise()
    assert (after / "apps/sub/deep.yaml").read_bytes() == OTHER
    assert _contents(after) == _contents(lab.fresh_checkout())


def test_a_base_file_rewritten_with_its_mode_restored_is_written_again_not_linked(
    lab: Lab,
) -> None:
    before = lab.tree().materialise()
    planted = before / "apps/sub/deep.yaml"
    planted.chmod(0o600)
    planted.write_bytes(b"planted, and longer than the blob\n")
    planted.chmod(0o400)
    lab.commit({"apps/cm.yaml": OTHER})
    after = lab.tree().materialise()
    assert (after / "apps/sub/deep.yaml").read_bytes() == OTHER
    assert (after / "apps/sub/deep.yaml").stat().st_ino != planted.stat().st_ino


def test_without_landlock_file_rules_every_checkout_is_written_whole(tmp_path: Path) -> None:
    lab = Lab(tmp_path, START, confined=False)
    before = lab.tree().materialise()
    lab.commit({"apps/cm.yaml": OTHER})
    after = lab.tree().materialise()
    inodes = [(root / "apps/sub/deep.yaml").stat().st_ino for root in (before, after)]
    assert inodes[0] != inodes[1], "a tool able to write one checkout reaches no other"
    assert _contents(after) == _contents(lab.fresh_checkout())


def test_sources_opened_to_render_link_checkouts_exactly_when_the_sandbox_confines_files(
    tmp_path: Path,
) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "demo", START)
    repo = {"name": "demo", "path": str(clone), "ref": "refs/heads/main"}
    config = agentic_config(tmp_path, [repo], "https://10.20.0.40:6443")
    before = open_sources(config).trees["demo"].materialise()
    commit_files(pygit2.Repository(str(clone)), "refs/heads/main", {"apps/cm.yaml": OTHER}, "c")
    after = open_sources(config).trees["demo"].materialise()
    inodes = [(root / "apps/sub/deep.yaml").stat().st_ino for root in (before, after)]
    assert (inodes[0] == inodes[1]) == confines_files()


def test_a_base_pruned_meanwhile_leaves_a_whole_checkout(lab: Lab) -> None:
    before = lab.tree().materialise()
    (before / "apps/sub/deep.yaml").unlink()  # a prune caught half way
    (before / "bin/run.sh").unlink()
    lab.commit({"apps/cm.yaml": OTHER})
    assert _contents(lab.tree().materialise()) == _contents(lab.fresh_checkout())

    lab.source.prune_checkouts(set(), idle_s=0)  # every checkout gone, the base too
    lab.commit({"apps/cm.yaml": CM})
    assert _contents(lab.tree().materialise()) == _contents(lab.fresh_checkout())


def test_tree_entries_named_to_leave_the_checkout_or_make_it_a_repository_are_not_written(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, {"apps/cm.yaml": CM})
    repo = pygit2.Repository(str(lab.clone))
    blob = repo.create_blob(b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    git_dir = repo.odb.write(ObjectType.TREE, _entry(FileMode.BLOB, "config", blob))
    # git would refuse such a tree; a crafted object database need not.
    raw = b"".join(
        [
            _entry(FileMode.BLOB, "..", blob),
            _entry(FileMode.TREE, ".GIT", git_dir),
            _entry(FileMode.TREE, "apps", repo.head.peel(pygit2.Commit).tree["apps"].id),
        ]
    )
    tree = repo.odb.write(ObjectType.TREE, raw)
    head = repo.head.target
    repo.create_commit("refs/heads/main", SIGNATURE, SIGNATURE, "crafted", tree, [head])
    root = lab.tree().materialise()
    assert sorted(p.name for p in root.iterdir()) == ["apps"]
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]


def _entry(mode: FileMode, name: str, oid: pygit2.Oid) -> bytes:
    return f"{int(mode):o} {name}".encode() + b"\0" + oid.raw

"""Real git repositories built with pygit2, for the tests and the demo: an
upstream (bare) repo, an operator's clone of it, and commits made without a
working tree. The homelab's fixture repositories are read from ../shared
(RECONCILER_FIXTURES overrides) and never copied into this project."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ResetMode

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get(
        "RECONCILER_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures" / "homelab-repos"
    )
)
# The real GitHub URLs the fixture Applications use as repoURL.
FIXTURE_URLS = {
    "prod_homelab": "https://github.com/charlieshreck/prod_homelab.git",
    "agentic_lab": "https://github.com/charlieshreck/agentic_lab.git",
    "monit_homelab": "https://github.com/charlieshreck/monit_homelab.git",
}
SIGNATURE = pygit2.Signature("reconciler tests", "tests@example.invalid", 1_767_225_600, 0)


@dataclass(frozen=True)
class Symlink:
    """A file entry that is a symbolic link to `target`."""

    target: str


@dataclass(frozen=True)
class Executable:
    """A file entry with the executable bit (git mode 100755)."""

    data: bytes


FileContent = bytes | Symlink | Executable | None  # None deletes the path


def files_of(directory: Path) -> dict[str, bytes]:
    """Every regular file under `directory`, keyed by its posix path relative to it."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def commit_files(
    repo: pygit2.Repository, ref: str, files: Mapping[str, FileContent], message: str
) -> str:
    """Commit `files` on top of `ref` (or as its first commit) without a working tree."""
    index = pygit2.Index()
    parents: list[pygit2.Oid] = []
    existing = repo.references.get(ref)
    if existing is not None:
        head = repo[existing.target].peel(pygit2.Commit)
        index.read_tree(head.tree)
        parents = [head.id]
    for path, content in files.items():
        if content is None:
            index.remove(path)
        elif isinstance(content, Symlink):
            blob = repo.create_blob(content.target.encode())
            index.add(pygit2.IndexEntry(path, blob, FileMode.LINK))
        elif isinstance(content, Executable):
            blob = repo.create_blob(content.data)
            index.add(pygit2.IndexEntry(path, blob, FileMode.BLOB_EXECUTABLE))
        else:
            index.add(pygit2.IndexEntry(path, repo.create_blob(content), FileMode.BLOB))
    tree = index.write_tree(repo)
    oid = repo.create_commit(ref, SIGNATURE, SIGNATURE, message, tree, parents)
    return str(oid)


def make_upstream_and_clone(
    base: Path, name: str, files: Mapping[str, FileContent]
) -> tuple[Path, Path]:
    """A bare upstream with `files` committed on main, and an operator's clone of it."""
    upstream_path = base / "upstream" / f"{name}.git"
    upstream = pygit2.init_repository(str(upstream_path), bare=True)
    commit_files(upstream, "refs/heads/main", files, f"{name}: initial")
    upstream.set_head("refs/heads/main")
    clone_path = base / "clones" / name
    pygit2.clone_repository(str(upstream_path), str(clone_path), checkout_branch="main")
    return upstream_path, clone_path


def fixture_files(name: str) -> dict[str, bytes]:
    """A fixture repo as its real layout: the `kubernetes/` tree at the repo root."""
    return {f"kubernetes/{k}": v for k, v in files_of(FIXTURES / name / "kubernetes").items()}


def pull(clone_path: Path) -> None:
    """What `git pull --ff-only` does to an operator's clone, via pygit2."""
    clone = pygit2.Repository(str(clone_path))
    clone.remotes["origin"].fetch()
    target = clone.references["refs/remotes/origin/main"].target
    clone.reset(target, ResetMode.HARD)

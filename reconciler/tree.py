"""The read-only view of committed trees that catalogue and render use.

Defined here rather than in `sources` so the pure stages depend on an
interface, not on pygit2; `sources.git.GitTree` is the implementation.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from reconciler.errors import TreeError

EntryKind = Literal["file", "dir", "missing"]


def clean_path(path: str) -> str:
    """Normalise a repo-relative path ('./a//b/' -> 'a/b', '' -> '').

    Raises TreeError for paths that climb out of the repository."""
    stripped = path.strip().lstrip("/")
    normal = posixpath.normpath(stripped) if stripped else "."
    if normal == ".":
        return ""
    if normal == ".." or normal.startswith("../"):
        raise TreeError(f"path {path!r} leaves the repository")
    return normal


class Tree(Protocol):
    """Files of one repository at one commit, never the working tree."""

    @property
    def repo(self) -> str: ...

    @property
    def commit(self) -> str: ...

    def kind(self, path: str) -> EntryKind:
        """What is at `path`, following in-repository symlinks."""
        ...

    def size(self, path: str) -> int:
        """Size in bytes of the file at `path`."""
        ...

    def read(self, path: str) -> bytes:
        """Content of the file at `path`; TreeError if missing or unsafe."""
        ...

    def files(self, path: str, recurse: bool) -> list[str]:
        """Sorted repo-relative paths of the files under directory `path`."""
        ...

    def materialise(self) -> Path:
        """A directory holding this commit's files, for tools that need real files."""
        ...


@runtime_checkable
class Fingerprinted(Tree, Protocol):
    """A tree that can say, cheaply, whether what is at a path differs between two
    commits: what lets an app's earlier render be reused (render.memo)."""

    def fingerprint(self, path: str) -> str | None:
        """Equal at two commits exactly when what is at `path` (following in-repository
        symlinks, including those under a directory) is equal; None when nothing is."""
        ...


class Revisions(Protocol):
    """The other commits of one repository, for sources pinned by `targetRevision`
    (`sources.git.GitRevisions` is the implementation)."""

    def at(self, revision: str) -> Tree:
        """The tree at a branch, a tag or a commit SHA (full or abbreviated), as git
        resolves it; TreeError naming the revision when there is none."""
        ...

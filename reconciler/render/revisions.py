"""The commit each git source of an app renders at: its `targetRevision`.

Applications are read at each repo's tracked ref, as Argo CD's app-of-apps
reads them; each git source (a path, or a `ref` lending value files) then
renders at the revision it names. Empty, `HEAD` or the tracked ref's own name
is the tracked commit; anything else is a branch, a tag or a commit SHA that
the repository resolves (reconciler.tree.Revisions). A revision that does not
exist fails its app alone, naming the key that asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.errors import RenderError, TreeError
from reconciler.model import App
from reconciler.tree import Revisions, Tree

_SHORTENED = ("refs/heads/", "refs/tags/")


@dataclass(frozen=True)
class SourceTrees:
    """The tree of each source of one app (None for a chart source or an unreadable
    repo), and each pinned revision resolved: `repo@revision` -> commit."""

    trees: tuple[Tree | None, ...]
    pinned: Mapping[str, str]


def tracked_names(ref: str) -> frozenset[str]:
    """The revisions that mean the tracked ref itself: '', HEAD, the ref and its short
    name (`main` for refs/remotes/origin/main, refs/heads/main or refs/tags/main)."""
    names = {"", "HEAD", ref}
    parts = ref.split("/")
    if ref.startswith("refs/remotes/") and len(parts) > 3:
        short = "/".join(parts[3:])
        names |= {short, f"refs/heads/{short}", "/".join(parts[2:])}
    for prefix in _SHORTENED:
        if ref.startswith(prefix):
            names.add(ref.removeprefix(prefix))
    return frozenset(names)


def source_trees(
    app: App,
    trees: Mapping[str, Tree],
    revisions: Mapping[str, Revisions],
    refs: Mapping[str, str],
) -> SourceTrees:
    """`trees` holds each readable repo at its tracked commit, `revisions` its other
    commits and `refs` its tracked ref (repo name -> each). RenderError names the
    app's key and revision when a revision cannot be resolved."""
    out: list[Tree | None] = []
    pinned: dict[str, str] = {}
    for index, source in enumerate(app.sources):
        tracked = trees.get(source.repo or "") if source.chart is None else None
        revision = source.target_revision
        if tracked is None or revision in tracked_names(refs.get(tracked.repo, "")):
            out.append(tracked)
            continue
        key = source.key or f"spec.sources[{index}]"
        other = revisions.get(tracked.repo)
        try:
            if other is None:
                raise TreeError(
                    f"revision {revision[:80]!r}: repo {tracked.repo} offers only its tracked ref"
                )
            tree = other.at(revision)
        except TreeError as exc:
            raise RenderError(f"{key}.targetRevision: {exc}") from None
        out.append(tree)
        pinned[f"{tracked.repo}@{revision}"] = tree.commit
    return SourceTrees(tuple(out), pinned)

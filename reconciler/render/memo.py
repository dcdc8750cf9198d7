"""Reuse an app's last render when nothing it read has changed.

A commit usually touches one app, and rendering every app again for it costs
every kustomize build and Helm template of every repository. The memo keeps,
per app, what its last successful render produced and what it read: each path
asked of its trees, with what was there (`Fingerprinted.fingerprint`: the git
object id, which for a directory covers everything under it and the targets
of the symlinks in it). The next render of the app reuses that output when the
App, the render settings (tools, limits, the destination's capabilities) and
everything read are unchanged at the new commits; only the objects' origin
commit is re-stamped.

What a render reads is recorded, not predicted: each tree handed to the
renderers is wrapped in a `_Recorder`. Tools that read the checkout on disk
(kustomize, helm) read what their renderer first walked through the tree
(kustomize's `check_references`, the chart's files), and the source's own path
is recorded besides. Inputs that no tree vouches for are never reused: value
files fetched by URL, and kustomize builds while [render] allow_remote lets
them fetch remote bases. A failed render is not kept, so it is retried (a
chart server may be back).
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.model import App, Capabilities
from reconciler.render import Rendered, Tools, render_app
from reconciler.render.cache import binary_stamp
from reconciler.render.kustomize import KUSTOMIZATION_FILES
from reconciler.render.semver import is_constraint
from reconciler.tree import EntryKind, Fingerprinted, Tree, clean_path


@dataclass(frozen=True)
class _Read:
    """One thing a render asked of the tree of the app's source number `source`:
    what is at `path` (`content`: its fingerprint) or only its kind."""

    source: int
    path: str
    content: bool
    value: str | None


@dataclass(frozen=True)
class _Entry:
    app: App  # with the declaring commit blanked: it moves with every commit
    setting: tuple[object, ...]
    # The destination's capabilities, when Helm rendered (only charts read them): a
    # CRD installed on the cluster must not re-render its kustomize and plain apps.
    capabilities: tuple[bool, Capabilities | None]
    trees: tuple[tuple[str, str] | None, ...]  # each source's (repo, commit) read
    reads: tuple[_Read, ...]
    rendered: tuple[Rendered, ...]


class _Recorder:
    """A `Tree` handing every call to `tree` and noting what was asked."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree
        self.kinds: dict[str, EntryKind] = {}
        self.contents: set[str] = set()  # files read
        self.dirs: set[str] = set()  # directories listed
        self.materialised = False

    @property
    def repo(self) -> str:
        return self._tree.repo

    @property
    def commit(self) -> str:
        return self._tree.commit

    def kind(self, path: str) -> EntryKind:
        found = self._tree.kind(path)
        self.kinds[path] = found
        return found

    def size(self, path: str) -> int:
        self.contents.add(path)
        return self._tree.size(path)

    def read(self, path: str) -> bytes:
        self.contents.add(path)
        return self._tree.read(path)

    def files(self, path: str, recurse: bool) -> list[str]:
        self.dirs.add(path)
        return self._tree.files(path, recurse)

    def materialise(self) -> Path:
        self.materialised = True
        return self._tree.materialise()


class RenderMemo:
    """The last successful render of each app, shared by the renders of a daemon's
    life (the render threads at once). Apps that left the catalogue are dropped
    (`retain`), so it holds at most one render per app."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        # Renders run and renders reused so far, for the log and the metrics.
        self.renders = 0
        self.reuses = 0

    def reuse(self, app: App, trees: Sequence[Tree | None], tools: Tools) -> list[Rendered] | None:
        """The objects of the app's last render, re-stamped with the commits of `trees`,
        if the app, the settings and everything that render read are the same; else None."""
        with self._lock:
            entry = self._entries.get(app.name)
        if entry is None or entry.app != unstamped(app) or entry.setting != _setting(tools):
            return None
        helm, capabilities = entry.capabilities
        if helm and capabilities != tools.capabilities.get(app.cluster):
            return None
        found = _reuse(entry, trees)
        if found is not None:
            with self._lock:
                self.reuses += 1
        return found

    def render(self, app: App, trees: Sequence[Tree | None], tools: Tools) -> list[Rendered]:
        """`render_app(app, trees, tools)`, remembering what it read and produced.
        A failure raises as `render_app` does and is not kept, so the next render tries
        again; an earlier success stays, for inputs that come back to what it read."""
        with self._lock:
            self.renders += 1
        recorders = [None if tree is None else _Recorder(tree) for tree in trees]
        rendered = render_app(app, recorders, tools)
        reads = _reads(app, tools, trees, recorders)
        with self._lock:
            if reads is None:
                self._entries.pop(app.name, None)
            else:
                where = tuple(None if t is None else (t.repo, t.commit) for t in trees)
                helm = _helm_rendered(app, recorders)
                self._entries[app.name] = _Entry(
                    unstamped(app),
                    _setting(tools),
                    (helm, tools.capabilities.get(app.cluster) if helm else None),
                    where,
                    reads,
                    tuple(rendered),
                )
        return rendered

    def retain(self, apps: Collection[str]) -> None:
        """Forget every app not named in `apps` (the catalogue's)."""
        with self._lock:
            for name in [n for n in self._entries if n not in apps]:
                del self._entries[name]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def unstamped(app: App) -> App:
    """`app` without the commit that declared it, which moves with every commit of its
    repository whether or not the app changed."""
    return replace(app, origin=replace(app.origin, commit=""))


def _setting(tools: Tools) -> tuple[object, ...]:
    """Everything besides the trees and the capabilities that a render depends on: the
    tools' settings and the binaries themselves."""
    return (replace(tools, capabilities={}), binary_stamp(tools.kubectl), binary_stamp(tools.helm))


def _helm_rendered(app: App, recorders: Sequence[_Recorder | None]) -> bool:
    """Whether Helm rendered a source of `app`: a chart source, `helm` options, or a
    path that holds a Chart.yaml (as reconciler.render decides)."""
    if any(s.chart is not None or s.helm is not None for s in app.sources):
        return True
    return any(
        kind == "file" and posixpath.basename(path) == "Chart.yaml"
        for recorder in recorders
        if recorder is not None
        for path, kind in recorder.kinds.items()
    )


def _reads(
    app: App,
    tools: Tools,
    trees: Sequence[Tree | None],
    recorders: Sequence[_Recorder | None],
) -> tuple[_Read, ...] | None:
    """What a render read, to compare later; None when some input cannot be."""
    if _fetches(app, tools, recorders):
        return None
    reads: list[_Read] = []
    try:
        for index, (tree, recorder) in enumerate(zip(trees, recorders, strict=True)):
            if tree is None or recorder is None:
                continue
            if not isinstance(tree, Fingerprinted):
                return None
            dirs = set(recorder.dirs)
            path = app.sources[index].path
            if recorder.materialised and path is not None:
                dirs.add(clean_path(path))  # whatever else the tool reads lies there
            # A directory's fingerprint covers every path under it: those need no other.
            within = {clean_path(d) for d in dirs if _plain(d)}
            contents = {p for p in dirs | recorder.contents if not _inside(p, within)}
            kinds = {p: k for p, k in recorder.kinds.items() if not _inside(p, within, True)}
            reads += [_Read(index, p, True, tree.fingerprint(p)) for p in sorted(contents)]
            reads += [_Read(index, p, False, k) for p, k in sorted(kinds.items())]
    except ReconcilerError:
        return None
    return tuple(reads)


def _plain(path: str) -> bool:
    """Whether `path` has no `..`: after a symlink, `..` climbs from the link's target,
    so where such a path leads cannot be told from its text."""
    return ".." not in path.split("/")


def _inside(path: str, dirs: Collection[str], or_at: bool = False) -> bool:
    """Whether `path` lies under one of `dirs` (clean paths), or is one with `or_at`."""
    if not _plain(path):
        return False
    clean = clean_path(path)
    return any(
        (or_at and clean == d) or (clean.startswith(f"{d}/") if d else bool(clean)) for d in dirs
    )


def _fetches(app: App, tools: Tools, recorders: Sequence[_Recorder | None]) -> bool:
    """Whether the render may have read something from the network, which no tree
    fingerprints: a value file by URL, a chart version range, or a kustomize build
    allowed remote bases."""
    for source in app.sources:
        if source.helm is not None and any("://" in f for f in source.helm.value_files):
            return True
        if source.chart is not None and is_constraint(source.target_revision):
            return True  # a version range may resolve to a newer chart at any time
    if not tools.allow_remote:
        return False
    return any(
        posixpath.basename(path) in KUSTOMIZATION_FILES
        for recorder in recorders
        if recorder is not None
        for path in recorder.contents
    )


def _reuse(entry: _Entry, trees: Sequence[Tree | None]) -> list[Rendered] | None:
    """The entry's objects re-stamped with the new commits, or None if anything it read
    differs at `trees` (or cannot be compared)."""
    if len(entry.trees) != len(trees):
        return None
    moved: dict[tuple[str, str], str] = {}
    for before, tree in zip(entry.trees, trees, strict=True):
        if before is None or tree is None:
            if (before is None) != (tree is None):
                return None
            continue
        if before[0] != tree.repo or moved.setdefault(before, tree.commit) != tree.commit:
            # One commit read then is two now: which object came from which is lost.
            return None
    try:
        for read in entry.reads:
            tree, before = trees[read.source], entry.trees[read.source]
            assert tree is not None and before is not None
            if tree.commit == before[1]:
                continue  # a commit's files never change
            if not isinstance(tree, Fingerprinted):
                return None
            now = tree.fingerprint(read.path) if read.content else tree.kind(read.path)
            if now != read.value:
                return None
    except ReconcilerError:
        return None
    if all(before[1] == after for before, after in moved.items()):
        return list(entry.rendered)
    return [
        Rendered(
            r.obj,
            replace(r.origin, commit=moved.get((r.origin.repo, r.origin.commit), r.origin.commit)),
        )
        for r in entry.rendered
    ]

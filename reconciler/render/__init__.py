"""Render one app's sources into Kubernetes objects.

Each source is rendered the way Argo CD would: a chart source with Helm, a
path with a kustomization with kustomize, a path with a Chart.yaml with Helm,
anything else as a directory of manifests. Rendering takes trees and options
and returns objects; failures are RenderErrors for that app alone. Each git
source comes with the tree of the commit it renders at (render.revisions).
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.errors import ReconcilerError, RenderError
from reconciler.model import App, Source
from reconciler.render.directory import render_directory
from reconciler.render.helm import render_helm
from reconciler.render.kustomize import KUSTOMIZATION_FILES, render_kustomize
from reconciler.render.objects import Rendered, check_count
from reconciler.render.tools import Tools
from reconciler.tree import Tree

__all__ = ["Rendered", "Tools", "render_app"]


def render_app(app: App, trees: Sequence[Tree | None], tools: Tools) -> list[Rendered]:
    """Every object of every source of `app`, in source order; `trees` holds each
    source's tree (None for a chart source), in the same order."""
    rendered: list[Rendered] = []
    for source, tree in zip(app.sources, trees, strict=True):
        try:
            rendered.extend(_render_source(app, source, tree, trees, tools))
        except ReconcilerError as exc:
            raise RenderError(_keyed(source.key, str(exc))) from None
        check_count(len(rendered), tools.max_objects, f"app {app.name}")
    return rendered


def _keyed(key: str, message: str) -> str:
    """`message` led by the key the Application declares the source at (`spec.source`,
    `spec.sources[1]`), as the user wrote it, unless it already names it."""
    return message if not key or message.startswith(key) else f"{key}: {message}"


def _render_source(
    app: App, source: Source, tree: Tree | None, trees: Sequence[Tree | None], tools: Tools
) -> list[Rendered]:
    if source.chart is not None:
        return render_helm(app, source, None, trees, tools)
    if source.path is None:  # a `ref`-only source just lends files to the others
        return []
    if tree is None:
        raise RenderError(f"repo {source.repo} is not available (see the repo's error)")
    if tree.kind(source.path) != "dir":
        raise RenderError(
            f"path {source.path} does not exist at commit {tree.commit[:12]} of repo {tree.repo}"
        )
    base = source.path.rstrip("/")
    if source.helm is not None or tree.kind(f"{base}/Chart.yaml") == "file":
        return render_helm(app, source, tree, trees, tools)
    if source.kustomize or any(tree.kind(f"{base}/{f}") == "file" for f in KUSTOMIZATION_FILES):
        return render_kustomize(app, source, tree, tools)
    return render_directory(app, source, tree, tools.max_file_bytes, tools.max_objects)

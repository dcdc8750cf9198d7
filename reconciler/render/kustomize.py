"""A path with a kustomization, built by the real kustomize (`kubectl kustomize`)
from the commit's files materialised on disk, never from the working tree.

A build depends only on the commit, the path and the kustomize binary, so its
output is kept under state_dir and reused while those stay the same (as Argo
CD's repo-server caches manifests per revision): reconciles of an unchanged
commit then cost no kustomize runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from reconciler.errors import RenderError
from reconciler.model import App, Origin, Source
from reconciler.render.directory import check_size
from reconciler.render.objects import Rendered, objects_from_stream
from reconciler.render.tools import Tools, run_tool
from reconciler.tree import Tree, clean_path

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def render_kustomize(app: App, source: Source, tree: Tree, tools: Tools) -> list[Rendered]:
    base = clean_path(source.path or "")
    # Listing raises on symlinks leaving the repository; sizes are checked like any read.
    for path in tree.files(base, recurse=True):
        check_size(tree, path, tools.max_file_bytes)
    if tools.kubectl is None:
        raise RenderError(
            "kustomize: kubectl not found (set RECONCILER_KUBECTL or [render] kubectl)"
        )
    cached = _cache_file(tools.kubectl, tree, base, tools.cache_dir)
    if cached is not None and cached.is_file():
        output = cached.read_text(encoding="utf-8")
    else:
        output = run_tool(
            [tools.kubectl, "kustomize", str(tree.materialise() / base)],
            tools.timeout,
            f"kustomize build of {base or '.'} failed",
        )
        if cached is not None:
            _store(cached, output)
    return objects_from_stream(output, base, Origin(tree.repo, tree.commit, app.name, base))


def _cache_file(kubectl: str, tree: Tree, base: str, cache_dir: Path) -> Path | None:
    """Where this build's output is kept; None when the binary cannot be identified."""
    try:
        binary = os.stat(kubectl)
    except OSError:
        return None
    key = "\0".join(
        [kubectl, str(binary.st_size), str(binary.st_mtime_ns), tree.repo, tree.commit, base]
    )
    return cache_dir / "rendered" / "kustomize" / f"{hashlib.sha256(key.encode()).hexdigest()}"


def _store(file: Path, output: str) -> None:
    # Written whole then renamed, so a concurrent reader never sees half a build.
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(output)
    os.replace(tmp, file)

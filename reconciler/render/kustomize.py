"""A path with a kustomization, built by the real kustomize (`kubectl kustomize`)
from the commit's files materialised on disk, never from the working tree.

Before kustomize runs, the app's kustomization and the local ones it builds
on are read (`check_references`): an entry leaving the repository or naming
an absolute path is refused, and so is a remote one (a URL, `git@host:` or
`github.com/org/repo`) whose host `[render] allow_remote` does not list.
kustomize itself then runs with its root-only load restrictor.

A build depends only on the commit, the path and the kustomize binary, so its
output is kept under state_dir and reused while those stay the same (as Argo
CD's repo-server caches manifests per revision): reconciles of an unchanged
commit then cost no kustomize runs.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from reconciler.documents import parse_documents
from reconciler.errors import RenderError, TreeError
from reconciler.model import App, Origin, Source
from reconciler.render.directory import check_size, read_limited
from reconciler.render.objects import Rendered, objects_from_stream
from reconciler.render.redaction import app_secret_values
from reconciler.render.remote import check_remote, is_url, remote_host
from reconciler.render.sandbox import Grant
from reconciler.render.tools import Tools, run_tool
from reconciler.tree import Tree, clean_path

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_KUSTOMIZATIONS = 200  # read per app, following local bases
# Entries that may name another kustomization (a directory) or, when not found
# locally, a remote one; the other reference fields name files.
_BUILD_LISTS = ("resources", "bases", "components", "generators", "transformers", "validators")
_FILE_LISTS = ("crds", "configurations", "patchesStrategicMerge")
_ITEM_PATHS = ("patches", "patchesJson6902", "replacements")
_GENERATORS = ("configMapGenerator", "secretGenerator")


def render_kustomize(app: App, source: Source, tree: Tree, tools: Tools) -> list[Rendered]:
    base = clean_path(source.path or "")
    check_references(tree, base, tools.allow_remote, tools.max_file_bytes)
    if tools.kubectl is None:
        raise RenderError(
            "kustomize: kubectl not found (set RECONCILER_KUBECTL or [render] kubectl)"
        )
    cached = _cache_file(tools.kubectl, tree, base, tools.cache_dir)
    if cached is not None and cached.is_file():
        output = cached.read_text(encoding="utf-8")
    else:
        root = tree.materialise()
        output = run_tool(
            [
                tools.kubectl,
                "kustomize",
                "--load-restrictor=LoadRestrictionsRootOnly",
                "--",
                str(root / base),
            ],
            tools,
            f"kustomize build of {base or '.'} failed",
            # Network only for remote bases, which [render] allow_remote vetted.
            Grant(read=(root,), network=bool(tools.allow_remote)),
            # git, run for remote bases, must not need /etc/gitconfig: the sandbox hides
            # /etc, and git stops at a system config it cannot read.
            env={"GIT_CONFIG_NOSYSTEM": "1"},
            secrets=lambda: app_secret_values(tree, base),
        )
        if cached is not None:
            _store(cached, output)
    origin = Origin(tree.repo, tree.commit, app.name, base)
    return objects_from_stream(output, base, origin, tools.max_objects)


def check_references(tree: Tree, base: str, allow: Collection[str], max_file_bytes: int) -> None:
    """Refuse the app if a directory it builds on (its own, then each local base) holds
    a symlink leaving the repository or a file over the size limit, or if one of their
    kustomizations names a path outside the repository or a remote `allow` does not list."""
    todo: list[str] = [base]
    seen: set[str] = set()
    while todo:
        directory = todo.pop()
        if directory in seen:
            continue
        seen.add(directory)
        if len(seen) > MAX_KUSTOMIZATIONS:
            raise RenderError(
                f"{base or '.'}: builds on more than {MAX_KUSTOMIZATIONS} directories"
            )
        # Listing raises on symlinks leaving the repository; sizes are checked like any read.
        for path in tree.files(directory, recurse=True):
            check_size(tree, path, max_file_bytes)
        names = (posixpath.join(directory, n) for n in KUSTOMIZATION_FILES)
        file = next((f for f in names if tree.kind(f) == "file"), None)
        if file is None:
            continue
        for doc in parse_documents(read_limited(tree, file, max_file_bytes), file):
            if isinstance(doc, dict):
                for key, reference in _references(doc):
                    todo.extend(_check(tree, directory, f"{file}: {key}", reference, allow))


def _references(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, entry) for every entry of a kustomization that names a file, directory
    or URL. Inline patches and plugin configs (text with newlines) are not references."""

    def strings(value: Any) -> list[str]:
        items = value if isinstance(value, list) else [value]
        return [v for v in items if isinstance(v, str) and "\n" not in v]

    for key in (*_BUILD_LISTS, *_FILE_LISTS):
        for entry in strings(doc.get(key)):
            yield key, entry
    for key in _ITEM_PATHS:
        for i, item in enumerate(doc.get(key) or []):
            if isinstance(item, dict):
                for entry in strings(item.get("path")):
                    yield f"{key}[{i}].path", entry
    openapi = doc.get("openapi")
    if isinstance(openapi, dict):
        for entry in strings(openapi.get("path")):
            yield "openapi.path", entry
    for key in _GENERATORS:
        for i, item in enumerate(doc.get(key) or []):
            if not isinstance(item, dict):
                continue
            for entry in strings(item.get("files")):
                yield f"{key}[{i}].files", entry.partition("=")[2] or entry
            for field in ("envs", "env"):
                for entry in strings(item.get(field)):
                    yield f"{key}[{i}].{field}", entry


def _check(
    tree: Tree, directory: str, where: str, reference: str, allow: Collection[str]
) -> list[str]:
    """The local kustomization directories `reference` leads to (to be read in turn)."""
    if is_url(reference):
        check_remote(reference, allow, f"{where} entry")
        return []
    if reference.startswith("/"):
        raise RenderError(f"{where} entry {reference} is an absolute path")
    try:
        path = clean_path(posixpath.join(directory, reference))
    except TreeError:
        raise RenderError(f"{where} entry {reference} leaves the repository") from None
    kind = tree.kind(path)
    builds = where.rpartition(": ")[2] in _BUILD_LISTS
    if kind == "dir" and builds:
        return [path]
    if kind == "missing" and builds and remote_host(reference) is not None:
        # Not in the repository, so kustomize would fetch it (`github.com/org/repo//dir`).
        check_remote(reference, allow, f"{where} entry")
    return []


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

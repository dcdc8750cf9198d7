"""A path with a kustomization, built by the real kustomize (`kubectl kustomize`)
from the commit's files materialised on disk, never from the working tree.

Before kustomize runs, the app's kustomization and the local ones it builds
on are read (`check_references`): an entry leaving the repository or naming
an absolute path is refused, and so is a remote one (a URL, `git@host:` or
`github.com/org/repo`) whose host `[render] allow_remote` does not list.
kustomize itself then runs with its root-only load restrictor, or with the
options `[render] kustomize_build_options` allows (Argo CD's `buildOptions`):
`--enable-helm` makes kustomize inflate `helmCharts` with the reconciler's
helm, from chart repositories `allow_remote` lists, in a private copy of the
checkout (kustomize pulls charts into the kustomization's chart home).

A build depends only on the commit, the path, the options and the binaries, so its
output is kept under state_dir and reused while those stay the same (as Argo
CD's repo-server caches manifests per revision): reconciles of an unchanged
commit then cost no kustomize runs.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from reconciler.documents import parse_documents
from reconciler.errors import RenderError, TreeError
from reconciler.model import App, Origin, Source
from reconciler.render.cache import binary_stamp, store_whole
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
    charts = check_references(tree, base, tools.allow_remote, tools.max_file_bytes)
    if tools.kubectl is None:
        raise RenderError(
            "kustomize: kubectl not found (set RECONCILER_KUBECTL or [render] kubectl)"
        )
    flags = _flags(tools, charts)
    cached = _cache_file([tools.kubectl, *flags], tree, base, tools.cache_dir)
    if cached is not None and cached.is_file():
        output = cached.read_text(encoding="utf-8")
    else:
        with tempfile.TemporaryDirectory(prefix="reconciler-kustomize-") as tmp:
            root = tree.materialise()
            if charts is not None:
                # kustomize writes the charts it pulls into the checkout: a private copy.
                root = Path(shutil.copytree(root, Path(tmp) / "checkout", symlinks=True))
            output = run_tool(
                [tools.kubectl, "kustomize", *flags, "--", str(root / base)],
                tools,
                f"kustomize build of {base or '.'} failed",
                # Network only for remote bases and charts, which allow_remote vetted.
                Grant(
                    read=(root,),
                    write=(root,) if charts is not None else (),
                    network=bool(tools.allow_remote),
                    run=tuple(Path(h) for h in _helm_command(flags)),
                ),
                # git, run for remote bases, must not need /etc/gitconfig: the sandbox hides
                # /etc, and git stops at a system config it cannot read.
                env={"GIT_CONFIG_NOSYSTEM": "1"},
                secrets=lambda: app_secret_values(tree, base),
            )
        if cached is not None:
            store_whole(cached, output.encode("utf-8"))
    origin = Origin(tree.repo, tree.commit, app.name, base)
    return objects_from_stream(output, base, origin, tools.max_objects)


def _flags(tools: Tools, charts: str | None) -> list[str]:
    """kustomize's flags: [render] kustomize_build_options (config.py let only safe ones
    through), the root-only load restrictor unless they lift it, and with `helmCharts`
    the reconciler's helm."""
    options = tools.kustomize_build_options
    restrictor = [o for o in options if o.startswith("--load-restrictor=")]
    flags = restrictor or ["--load-restrictor=LoadRestrictionsRootOnly"]
    if charts is None:
        return flags
    if "--enable-helm" not in options:
        raise RenderError(
            f"{charts}: helmCharts need kustomize's --enable-helm "
            '(set [render] kustomize_build_options = "--enable-helm")'
        )
    helm = shutil.which(tools.helm) if tools.helm else None
    if helm is None:
        raise RenderError(f"{charts}: helm not found (set RECONCILER_HELM or [render] helm)")
    return [*flags, "--enable-helm", f"--helm-command={Path(helm).resolve()}"]


def _helm_command(flags: list[str]) -> list[str]:
    return [f.removeprefix("--helm-command=") for f in flags if f.startswith("--helm-command=")]


def check_references(
    tree: Tree, base: str, allow: Collection[str], max_file_bytes: int
) -> str | None:
    """Refuse the app if a directory it builds on (its own, then each local base) holds
    a symlink leaving the repository or a file over the size limit, or if one of their
    kustomizations names a path outside the repository or a remote `allow` does not list
    (a `helmCharts` repository included). Returns the first kustomization that inflates
    `helmCharts`, or None."""
    charts: str | None = None
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
                    where = f"{file}: {key}"
                    todo.extend(_check(tree, directory, where, reference, allow, max_file_bytes))
                if _helm_charts(doc, file, allow):
                    charts = charts or file
    return charts


def _helm_charts(doc: dict[str, Any], file: str, allow: Collection[str]) -> bool:
    """Whether the kustomization inflates `helmCharts`; each chart repository must be
    one `allow` lists, and the chart home must stay inside the kustomization."""
    charts = doc.get("helmCharts") or []
    if not isinstance(charts, list):
        raise RenderError(f"{file}: helmCharts must be a list")
    for i, chart in enumerate(charts):
        repo = chart.get("repo") if isinstance(chart, dict) else None
        if isinstance(repo, str) and repo:
            check_remote(repo, allow, f"{file}: helmCharts[{i}].repo")
    helm_globals = doc.get("helmGlobals")
    home = helm_globals.get("chartHome") if isinstance(helm_globals, dict) else None
    if isinstance(home, str) and (home.startswith("/") or ".." in home.split("/")):
        raise RenderError(f"{file}: helmGlobals.chartHome {home} leaves the kustomization")
    return bool(charts)


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
    tree: Tree,
    directory: str,
    where: str,
    reference: str,
    allow: Collection[str],
    max_file_bytes: int,
) -> list[str]:
    """The local kustomization directories `reference` leads to (to be read in turn).
    A file it names is size-checked through the tree, like the directories' files:
    outside them (LoadRestrictionsNone) it is otherwise read by kustomize alone, unseen
    by the limit and by the render memo."""
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
    if kind == "file":
        check_size(tree, path, max_file_bytes)
    if kind == "missing" and builds and remote_host(reference) is not None:
        # Not in the repository, so kustomize would fetch it (`github.com/org/repo//dir`).
        check_remote(reference, allow, f"{where} entry")
    return []


def _cache_file(command: list[str], tree: Tree, base: str, cache_dir: Path) -> Path | None:
    """Where this build's output is kept: keyed by the binary, every flag (the options,
    and the helm binary they name), the commit and the path; None when a binary cannot
    be identified."""
    kubectl, *flags = command
    stamps = [binary_stamp(b) for b in (kubectl, *_helm_command(flags))]
    if None in stamps:
        return None
    key = "\0".join([kubectl, *map(str, stamps), *flags, tree.repo, tree.commit, base])
    return cache_dir / "rendered" / "kustomize" / f"{hashlib.sha256(key.encode()).hexdigest()}"

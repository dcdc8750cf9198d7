"""Helm sources, rendered by the real helm binary as Argo CD renders them:
`helm template` with value files, then inline values, then parameters.

Charts from a repository (HTTP index or OCI) are pulled once per
repo+chart+version into state_dir and reused; a chart that cannot be pulled
is a "chart not available" error on that app. Helm runs with its config,
cache and data homes under state_dir so it never reads or writes the
operator's Helm setup.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from reconciler.errors import RenderError
from reconciler.model import App, HelmOptions, Origin, Source
from reconciler.render.directory import check_size, read_limited
from reconciler.render.objects import Rendered, objects_from_stream
from reconciler.render.tools import Tools, run_tool
from reconciler.tree import Tree, clean_path
from reconciler.urls import normalise_url, redact_url

_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def helm_env(cache_dir: Path) -> dict[str, str]:
    home = cache_dir / "helm"
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


def set_value(value: str) -> str:
    """Escape commas so `--set a=x,y` sets one string, as Argo CD does; `{a,b}` is a
    Helm list and stays as written."""
    if value.startswith("{") and value.endswith("}"):
        return value
    return _UNESCAPED_COMMA.sub(r"\\,", value)


def _oci_reference(repo_url: str, chart: str) -> str | None:
    """Argo CD names OCI registries either `oci://host/path` or `host/path` (no scheme)."""
    if repo_url.startswith("oci://"):
        return f"{repo_url.rstrip('/')}/{chart}"
    if "://" not in repo_url:
        return f"oci://{repo_url.rstrip('/')}/{chart}"
    return None


def fetch_chart(repo_url: str, chart: str, version: str, helm: str, tools: Tools) -> Path:
    """The unpacked chart, pulled on first use and cached per repo+chart+version."""
    key = hashlib.sha256(normalise_url(repo_url).encode()).hexdigest()[:16]
    dest = tools.cache_dir / "charts" / key / f"{chart}-{version}"
    if (dest / "Chart.yaml").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    pull_url = tools.chart_mirrors.get(normalise_url(repo_url), repo_url)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pull-") as tmp:
        oci = _oci_reference(pull_url, chart)
        where = ["--repo", pull_url] if oci is None else []
        argv = [
            helm,
            "pull",
            oci or chart,
            *where,
            "--version",
            version,
            "--untar",
            "--untardir",
            tmp,
        ]
        try:
            run_tool(argv, tools.timeout, "helm pull", env=helm_env(tools.cache_dir))
        except RenderError as exc:
            raise RenderError(
                f"chart not available: {chart} {version} from {redact_url(repo_url)} ({exc})"
            ) from None
        pulled = Path(tmp) / chart
        if not (pulled / "Chart.yaml").is_file():
            raise RenderError(
                f"chart not available: {chart} {version} from "
                f"{redact_url(repo_url)} (the download holds no chart {chart})"
            )
        try:
            os.rename(pulled, dest)
        except OSError:
            if not dest.is_dir():  # otherwise another render cached it first
                raise
    return dest


def render_helm(
    app: App, source: Source, tree: Tree | None, trees: Mapping[str, Tree], tools: Tools
) -> list[Rendered]:
    """`tree` is None for a chart from a repository, else the repo holding the chart path."""
    if tools.helm is None:
        raise RenderError("helm not found (set RECONCILER_HELM or [render] helm)")
    options = source.helm or HelmOptions()
    if tree is None:
        chart = source.chart or ""
        chart_dir = fetch_chart(source.repo_url, chart, source.target_revision, tools.helm, tools)
        root = chart_dir
        origin = Origin(
            redact_url(source.repo_url), f"{chart}@{source.target_revision}", app.name, chart
        )
    else:
        base = clean_path(source.path or "")
        for path in tree.files(base, recurse=True):
            check_size(tree, path, tools.max_file_bytes)
        root = tree.materialise()
        chart_dir = root / base
        origin = Origin(tree.repo, tree.commit, app.name, base)

    with tempfile.TemporaryDirectory(prefix="reconciler-helm-") as tmp:
        argv = [
            tools.helm,
            "template",
            options.release_name or app.name,
            str(chart_dir),
            "--namespace",
            app.namespace or "default",
        ]
        if not options.skip_crds:
            argv.append("--include-crds")
        if options.skip_tests:
            argv.append("--skip-tests")
        for i, name in enumerate(options.value_files):
            argv += [
                "--values",
                _value_file(name, i, app, trees, chart_dir, root, Path(tmp), tools.max_file_bytes),
            ]
        inline = _inline_values(options)
        if inline is not None:
            inline_file = Path(tmp) / "inline-values.yaml"
            inline_file.write_text(inline)
            argv += ["--values", str(inline_file)]
        for p in options.parameters:
            argv += [
                "--set-string" if p.force_string else "--set",
                f"{p.name}={set_value(p.value)}",
            ]
        output = run_tool(
            argv,
            tools.timeout,
            f"helm template of {origin.path} failed",
            env=helm_env(tools.cache_dir),
        )
    return objects_from_stream(output, origin.path, origin)


def _inline_values(options: HelmOptions) -> str | None:
    # Argo CD uses valuesObject when set and `values` otherwise, never both.
    if options.values_object is not None:
        return yaml.safe_dump(dict(options.values_object), sort_keys=False)
    return options.values


def _value_file(
    name: str,
    index: int,
    app: App,
    trees: Mapping[str, Tree],
    chart_dir: Path,
    root: Path,
    tmp: Path,
    max_file_bytes: int,
) -> str:
    """A path helm can read for one `valueFiles` entry: `$ref/path` from a ref source's
    repo, a URL as is, otherwise a file of the chart (which must stay inside it)."""
    if name.startswith("$"):
        ref, _, path = name[1:].partition("/")
        source = next((s for s in app.sources if s.ref == ref), None)
        if source is None:
            raise RenderError(f"value file {name}: no source of this app has ref {ref!r}")
        tree = trees.get(source.repo or "")
        if tree is None:
            raise RenderError(f"value file {name}: repo {source.repo} is not available")
        local = tmp / f"values-{index}.yaml"
        local.write_bytes(read_limited(tree, clean_path(path), max_file_bytes))
        return str(local)
    if re.match(r"^https?://", name):
        return name
    local_path = (chart_dir / name).resolve()
    if not local_path.is_relative_to(root.resolve()):
        raise RenderError(f"value file {name} leaves the chart")
    if not local_path.is_file():
        raise RenderError(f"value file {name} does not exist in the chart")
    return str(local_path)

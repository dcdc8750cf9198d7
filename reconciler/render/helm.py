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
from collections.abc import Sequence
from pathlib import Path

import yaml

from reconciler.errors import RenderError
from reconciler.model import App, HelmOptions, Origin, Source
from reconciler.render.arguments import invalid_release_name
from reconciler.render.directory import check_size, read_limited
from reconciler.render.objects import Rendered, objects_from_stream
from reconciler.render.redaction import app_secret_values
from reconciler.render.remote import fetch, is_url
from reconciler.render.sandbox import Grant
from reconciler.render.tools import Tools, run_tool
from reconciler.tree import Tree, clean_path
from reconciler.urls import normalise_url, redact_url

_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def helm_env(cache_dir: Path) -> dict[str, str]:
    """Helm's homes, added to the sandbox's clean environment; created here so the
    sandbox can grant them (it leaves out paths that do not exist)."""
    home = cache_dir / "helm"
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    for directory in env.values():
        os.makedirs(directory, exist_ok=True)
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
        where = [f"--repo={pull_url}"] if oci is None else []
        # Values as `--flag=value` and the chart after `--`: none can be read as a flag.
        argv = [
            helm,
            "pull",
            *where,
            f"--version={version}",
            "--untar",
            f"--untardir={tmp}",
            "--",
            oci or chart,
        ]
        try:
            # The one render step with network: a pull the reconciler itself asks for.
            grant = Grant(write=(dest.parent, tools.cache_dir / "helm"), network=True)
            run_tool(argv, tools, "helm pull", grant, env=helm_env(tools.cache_dir))
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
    app: App, source: Source, tree: Tree | None, trees: Sequence[Tree | None], tools: Tools
) -> list[Rendered]:
    """`tree` is None for a chart from a repository, else the repo holding the chart path;
    `trees` holds the tree of each source of `app` (for `$ref` value files)."""
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

    release = options.release_name or app.name
    problem = invalid_release_name(release)
    if problem:
        key = "releaseName" if options.release_name else "name (set helm.releaseName)"
        raise RenderError(f"app {app.name}: helm {key}: {problem}")
    with tempfile.TemporaryDirectory(prefix="reconciler-helm-") as tmp:
        # Every value as `--flag=value` and the positionals after `--`, so nothing an
        # Application says can become a flag (see render/arguments.py).
        argv = [tools.helm, "template", f"--namespace={app.namespace or 'default'}"]
        if not options.skip_crds:
            argv.append("--include-crds")
        if options.skip_tests:
            argv.append("--skip-tests")
        for i, name in enumerate(options.value_files):
            value_file = _value_file(name, i, app, trees, chart_dir, root, Path(tmp), tools)
            argv.append(f"--values={value_file}")
        inline = _inline_values(options)
        if inline is not None:
            inline_file = Path(tmp) / "inline-values.yaml"
            inline_file.write_text(inline)
            argv.append(f"--values={inline_file}")
        for p in options.parameters:
            flag = "--set-string" if p.force_string else "--set"
            argv.append(f"{flag}={p.name}={set_value(p.value)}")
        argv += ["--", release, str(chart_dir)]
        output = run_tool(
            argv,
            tools,
            f"helm template of {origin.path} failed",
            # No network: `valueFiles` URLs were fetched by the reconciler (render/remote.py).
            Grant(read=(root, Path(tmp), tools.cache_dir / "helm"), network=False),
            env=helm_env(tools.cache_dir),
            secrets=lambda: app_secret_values(tree, origin.path) if tree is not None else (),
        )
    return objects_from_stream(output, origin.path, origin, tools.max_objects)


def _inline_values(options: HelmOptions) -> str | None:
    # Argo CD uses valuesObject when set and `values` otherwise, never both.
    if options.values_object is not None:
        return yaml.safe_dump(dict(options.values_object), sort_keys=False)
    return options.values


def _value_file(
    name: str,
    index: int,
    app: App,
    trees: Sequence[Tree | None],
    chart_dir: Path,
    root: Path,
    tmp: Path,
    tools: Tools,
) -> str:
    """A path helm can read for one `valueFiles` entry: `$ref/path` from a ref source's
    repo, a URL fetched if [render] allow_remote names its host, otherwise a file of
    the checkout (which must stay inside it)."""
    if name.startswith("$"):
        ref, _, path = name[1:].partition("/")
        found = next((i for i, s in enumerate(app.sources) if s.ref == ref), None)
        if found is None:
            raise RenderError(f"value file {name}: no source of this app has ref {ref!r}")
        tree = trees[found]
        if tree is None:
            raise RenderError(f"value file {name}: repo {app.sources[found].repo} is not available")
        local = tmp / f"values-{index}.yaml"
        local.write_bytes(read_limited(tree, clean_path(path), tools.max_file_bytes))
        return str(local)
    if is_url(name):
        local = tmp / f"values-{index}.yaml"
        data = fetch(name, tools.allow_remote, "value file", tools.max_file_bytes, tools.timeout)
        local.write_bytes(data)
        return str(local)
    local_path = (chart_dir / name).resolve()
    if not local_path.is_relative_to(root.resolve()):
        raise RenderError(f"value file {name} leaves the chart")
    if not local_path.is_file():
        raise RenderError(f"value file {name} does not exist in the chart")
    return str(local_path)

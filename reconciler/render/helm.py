"""Helm sources, rendered by the real helm binary as Argo CD renders them:
`helm template` with value files, then inline values, then parameters, and the
destination cluster's version and API versions (`.Capabilities`).

Charts from a repository (HTTP index or OCI) come from the content-addressed
chart cache (render/charts.py); a chart that cannot be fetched is a "chart not
available" error on that app. Helm runs with its config, cache and data homes
under state_dir so it never reads or writes the operator's Helm setup. Its
output is kept under state_dir keyed by everything it depends on, so a render
whose inputs did not change runs no helm.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from reconciler.errors import RenderError
from reconciler.model import App, Capabilities, HelmOptions, Origin, Source
from reconciler.render.arguments import invalid_release_name
from reconciler.render.cache import binary_stamp, store_whole
from reconciler.render.charts import Chart, chart_archive, helm_env, unpack
from reconciler.render.directory import check_size, read_limited
from reconciler.render.objects import Rendered, objects_from_stream
from reconciler.render.redaction import app_secret_values
from reconciler.render.remote import fetch, is_url
from reconciler.render.sandbox import Grant
from reconciler.render.tools import Tools, run_tool
from reconciler.tree import Tree, clean_path
from reconciler.urls import redact_url

_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


def set_value(value: str) -> str:
    """Escape commas so `--set a=x,y` sets one string, as Argo CD does; `{a,b}` is a
    Helm list and stays as written."""
    if value.startswith("{") and value.endswith("}"):
        return value
    return _UNESCAPED_COMMA.sub(r"\\,", value)


def fetch_chart(chart: Chart, helm: str, tools: Tools, into: Path) -> tuple[Path, str]:
    """The chart unpacked into `into` from its verified archive in the chart cache
    (render/charts.py), and the archive's sha256."""
    archive, digest = chart_archive(chart, helm, tools)
    return unpack(archive, chart, into, tools.max_output_bytes), digest


def render_helm(
    app: App, source: Source, tree: Tree | None, trees: Sequence[Tree | None], tools: Tools
) -> list[Rendered]:
    """`tree` is None for a chart from a repository, else the repo holding the chart path;
    `trees` holds the tree of each source of `app` (for `$ref` value files)."""
    if tools.helm is None:
        raise RenderError("helm not found (set RECONCILER_HELM or [render] helm)")
    options = source.helm or HelmOptions()
    release = options.release_name or app.name
    problem = invalid_release_name(release)
    if problem:
        key = "releaseName" if options.release_name else "name (set helm.releaseName)"
        raise RenderError(f"app {app.name}: helm {key}: {problem}")
    with tempfile.TemporaryDirectory(prefix="reconciler-helm-") as tmp:
        if tree is None:
            chart = Chart(source.repo_url, source.chart or "", source.target_revision)
            chart_dir, digest = fetch_chart(chart, tools.helm, tools, Path(tmp) / "chart")
            root = chart_dir
            chart_id = f"sha256:{digest}"
            origin = Origin(
                redact_url(source.repo_url), f"{chart.name}@{chart.version}", app.name, chart.name
            )
        else:
            base = clean_path(source.path or "")
            for path in tree.files(base, recurse=True):
                check_size(tree, path, tools.max_file_bytes)
            root = tree.materialise()
            chart_dir = root / base
            chart_id = "\0".join([tree.repo, tree.commit, base])
            origin = Origin(tree.repo, tree.commit, app.name, base)
        # Every value as `--flag=value` and the positionals after `--`, so nothing an
        # Application says can become a flag (see render/arguments.py).
        argv = [tools.helm, "template", f"--namespace={app.namespace or 'default'}"]
        if not options.skip_crds:
            argv.append("--include-crds")
        if options.skip_tests:
            argv.append("--skip-tests")
        for i, name in enumerate(options.value_files):
            key = ".".join(filter(None, [source.key, f"helm.valueFiles[{i}]"]))
            where = f"{key}: value file"
            local = Path(tmp) / f"values-{i}.yaml"
            value_file = _value_file(name, where, app, trees, tree, chart_dir, root, local, tools)
            if value_file is not None:
                argv.append(f"--values={value_file}")
            elif not options.ignore_missing_value_files:
                hint = " (helm.ignoreMissingValueFiles skips such files)"
                raise RenderError(_missing(where, name) + hint)
        inline = _inline_values(options)
        if inline is not None:
            inline_file = Path(tmp) / "inline-values.yaml"
            inline_file.write_text(inline)
            argv.append(f"--values={inline_file}")
        for p in options.parameters:
            flag = "--set-string" if p.force_string else "--set"
            argv.append(f"{flag}={p.name}={set_value(p.value)}")
        for i, p in enumerate(options.file_parameters):
            key = ".".join(filter(None, [source.key, f"helm.fileParameters[{i}].path"]))
            if _SCHEME.match(p.value):
                raise RenderError(f"{key} {p.value}: expected a file of the checkout or $ref/path")
            # Copied under a name of ours: helm splits --set-file on commas.
            local = Path(tmp) / f"file-parameter-{i}"
            found = _value_file(p.value, key, app, trees, tree, chart_dir, root, local, tools)
            if found is None:
                raise RenderError(_missing(key, p.value))
            if found != str(local):
                shutil.copyfile(found, local)
            argv.append(f"--set-file={p.name}={local}")
        argv += _capabilities(tools.capabilities.get(app.cluster))
        argv += ["--", release, str(chart_dir)]
        cached = _cache_file(argv, chart_id, tools)
        if cached is not None and cached.is_file():
            output = cached.read_text(encoding="utf-8")
        else:
            output = run_tool(
                argv,
                tools,
                f"helm template of {origin.path} failed",
                # No network: `valueFiles` URLs were fetched by the reconciler (render/remote.py).
                Grant(read=(root, Path(tmp), tools.cache_dir / "helm"), network=False),
                env=helm_env(tools.cache_dir),
                secrets=lambda: app_secret_values(tree, origin.path) if tree is not None else (),
            )
            if cached is not None:
                store_whole(cached, output.encode("utf-8"))
    return objects_from_stream(output, origin.path, origin, tools.max_objects)


def _capabilities(capabilities: Capabilities | None) -> list[str]:
    """Argo CD's flags for the destination's `.Capabilities`; none (helm's defaults) for a
    cluster not reached."""
    if capabilities is None:
        return []
    flags = [f"--kube-version={capabilities.kube_version}"]
    return flags + [f"--api-versions={v}" for v in capabilities.api_versions]


def _cache_file(argv: Sequence[str], chart_id: str, tools: Tools) -> Path | None:
    """Where this `helm template` output is kept: keyed by the helm binary, the chart's
    content (`chart_id`), every flag, and each value file's content (its path is a
    temporary one); None when the binary or a value file cannot be read."""
    helm, *args = argv
    stamp = binary_stamp(helm)
    if stamp is None:
        return None
    key = hashlib.sha256(f"{helm}\0{stamp}\0{chart_id}".encode())
    try:
        for arg in args[:-1]:  # the last is the chart's (temporary) directory
            key.update(b"\0")
            if arg.startswith("--values="):
                key.update(b"--values=" + Path(arg.removeprefix("--values=")).read_bytes())
            elif arg.startswith("--set-file="):
                name, _, path = arg.partition("=")[2].partition("=")
                key.update(f"--set-file={name}=".encode() + Path(path).read_bytes())
            else:
                key.update(arg.encode())
    except OSError:
        return None
    return tools.cache_dir / "rendered" / "helm" / key.hexdigest()


def _inline_values(options: HelmOptions) -> str | None:
    # Argo CD uses valuesObject when set and `values` otherwise, never both.
    if options.values_object is not None:
        return yaml.safe_dump(dict(options.values_object), sort_keys=False)
    return options.values


def _value_file(
    name: str,
    where: str,
    app: App,
    trees: Sequence[Tree | None],
    tree: Tree | None,
    chart_dir: Path,
    root: Path,
    local: Path,
    tools: Tools,
) -> str | None:
    """A path helm can read for one `valueFiles` entry (`where` names it in messages:
    its key, as the Application wrote it): `$ref/path` from a ref source's repo, an
    http(s) URL fetched to `local` if [render] allow_remote names its host, otherwise a
    file of the checkout (which must stay inside it). Other URL schemes belong to Helm
    downloader plugins (helm-secrets, helm-s3, helm-git), which are refused by name.
    None: the file does not exist (Argo CD's ignoreMissingValueFiles skips it)."""
    if name.startswith("$"):
        ref, _, path = name[1:].partition("/")
        found = next((i for i, s in enumerate(app.sources) if s.ref == ref), None)
        if found is None:
            raise RenderError(f"{where} {name}: no source of this app has ref {ref!r}")
        ref_tree = trees[found]
        if ref_tree is None:
            raise RenderError(f"{where} {name}: repo {app.sources[found].repo} is not available")
        if ref_tree.kind(clean_path(path)) == "missing":
            return None
        local.write_bytes(read_limited(ref_tree, clean_path(path), tools.max_file_bytes))
        return str(local)
    scheme = _SCHEME.match(name)
    if scheme is not None and scheme["scheme"].lower() not in ("http", "https"):
        raise RenderError(f"{where} {_plugin_refusal(name, scheme['scheme'])}")
    if is_url(name):
        data = fetch(name, tools.allow_remote, where, tools.max_file_bytes, tools.timeout)
        local.write_bytes(data)
        return str(local)
    local_path = (chart_dir / name).resolve()
    if not local_path.is_relative_to(root.resolve()):
        raise RenderError(f"{where} {name} leaves the chart")
    if tree is not None:
        # Through the commit's tree, so an object the repository lacks says so.
        path = local_path.relative_to(root.resolve()).as_posix()
        if tree.kind(path) == "file":
            check_size(tree, path, tools.max_file_bytes)
    return str(local_path) if local_path.is_file() else None


def _missing(where: str, name: str) -> str:
    inside = "its ref source's repo" if name.startswith("$") else "the chart"
    return f"{where} {name} does not exist in {inside}"


def _plugin_refusal(name: str, scheme: str) -> str:
    """Why a `valueFiles` entry of a Helm downloader plugin's scheme is refused."""
    try:
        shown = redact_url(name)
    except ValueError:
        shown = f"{scheme}://..."
    if scheme.lower().partition("+")[0] == "secrets":
        return (
            f"{shown}: helm-secrets plugin value files ({scheme}://) are not supported; "
            "decrypt them outside the repository or use a Secret"
        )
    return (
        f"{shown}: value files by URL scheme {scheme}:// (a Helm downloader plugin) are not "
        "supported; only http and https URLs are fetched, from hosts in [render] allow_remote"
    )

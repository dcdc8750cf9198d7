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
import urllib.parse
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
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


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


def pull_grant(pull_url: str, into: Path, tools: Tools) -> Grant:
    """What a chart pull from `pull_url` may touch: `into` (in the chart cache), Helm's
    home, the chart CA file, and TCP connections to the URL's port only (Landlock cannot tell
    hosts apart, and registries send blob downloads to storage hosts on that port)."""
    parsed = urllib.parse.urlsplit(pull_url if "://" in pull_url else f"oci://{pull_url}")
    default = 80 if parsed.scheme == "http" else 443
    return Grant(
        read=(tools.chart_ca_file,) if tools.chart_ca_file else (),
        write=(into, tools.cache_dir / "helm"),
        network=True,
        ports=(parsed.port or default,),
    )


def pull_env(tools: Tools) -> dict[str, str]:
    """Helm's homes and, with [render] chart_ca_file, that file as Go's CA bundle: Go
    reads it instead of the system's bundle file but still reads the system's
    certificate directories, so the CA is trusted besides the system's, not instead."""
    env = helm_env(tools.cache_dir)
    if tools.chart_ca_file is not None:
        env["SSL_CERT_FILE"] = str(tools.chart_ca_file)
    return env


def fetch_chart(repo_url: str, chart: str, version: str, helm: str, tools: Tools) -> Path:
    """The unpacked chart, pulled on first use and cached per repo+chart+version."""
    key = hashlib.sha256(normalise_url(repo_url).encode()).hexdigest()[:16]
    dest = tools.cache_dir / "charts" / key / f"{chart}-{version}"
    if (dest / "Chart.yaml").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    pull_url = tools.chart_mirrors.get(normalise_url(repo_url), repo_url)
    unavailable = f"chart not available: {chart} {version} from {redact_url(repo_url)}"
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
            grant = pull_grant(pull_url, dest.parent, tools)
            run_tool(argv, tools, "helm pull", grant, env=pull_env(tools))
        except RenderError as exc:
            raise RenderError(f"{unavailable} ({exc}){_tls_hint(str(exc))}") from None
        pulled = Path(tmp) / chart
        if not (pulled / "Chart.yaml").is_file():
            raise RenderError(f"{unavailable} (the download holds no chart {chart})")
        try:
            os.rename(pulled, dest)
        except OSError:
            if not dest.is_dir():  # otherwise another render cached it first
                raise
    return dest


def _tls_hint(message: str) -> str:
    if "x509:" not in message and "tls:" not in message:
        return ""
    return (
        "; the server's TLS certificate is not trusted: its CA must be in the system's "
        "CA certificates or in [render] chart_ca_file"
    )


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
            key = ".".join(filter(None, [source.key, f"helm.valueFiles[{i}]"]))
            where = f"{key}: value file"
            local = Path(tmp) / f"values-{i}.yaml"
            value_file = _value_file(name, where, app, trees, tree, chart_dir, root, local, tools)
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
    where: str,
    app: App,
    trees: Sequence[Tree | None],
    tree: Tree | None,
    chart_dir: Path,
    root: Path,
    local: Path,
    tools: Tools,
) -> str:
    """A path helm can read for one `valueFiles` entry (`where` names it in messages:
    its key, as the Application wrote it): `$ref/path` from a ref source's repo, an
    http(s) URL fetched to `local` if [render] allow_remote names its host, otherwise a
    file of the checkout (which must stay inside it). Other URL schemes belong to Helm
    downloader plugins (helm-secrets, helm-s3, helm-git), which are refused by name."""
    if name.startswith("$"):
        ref, _, path = name[1:].partition("/")
        found = next((i for i, s in enumerate(app.sources) if s.ref == ref), None)
        if found is None:
            raise RenderError(f"{where} {name}: no source of this app has ref {ref!r}")
        ref_tree = trees[found]
        if ref_tree is None:
            raise RenderError(f"{where} {name}: repo {app.sources[found].repo} is not available")
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
    if not local_path.is_file():
        raise RenderError(f"{where} {name} does not exist in the chart")
    return str(local_path)


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

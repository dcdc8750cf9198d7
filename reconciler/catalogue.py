"""Argo CD Applications (and config-declared apps) -> the App list.

The repositories' own Application manifests are the catalogue, so the same
repositories work whether Argo CD or the reconciler owns a cluster. Each
Application is read on its own: a bad one becomes an AppError and the rest
are still catalogued. A file whose blob did not change since the last
catalogue is not parsed again (CatalogueMemo): a commit touches one or two
of the ~120 Application files, and parsing them all was most of its cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler import syncpolicy
from reconciler.config import Config
from reconciler.documents import MANIFEST_SUFFIXES, parse_documents
from reconciler.errors import ReconcilerError, internal_error
from reconciler.model import (
    SYNC_WAVE,
    App,
    AppError,
    AppOrigin,
    DirectoryOptions,
    HelmOptions,
    HelmParameter,
    Source,
    api_group,
)
from reconciler.pruneguard import deletes_resources
from reconciler.render.arguments import (
    invalid_app_name,
    invalid_chart,
    invalid_chart_repo,
    invalid_chart_version,
    invalid_namespace,
    invalid_parameter_name,
    invalid_release_name,
)
from reconciler.tree import Fingerprinted, Tree
from reconciler.urls import normalise_server, normalise_url, redact_url

ARGO_GROUP = "argoproj.io"
IN_CLUSTER = "in-cluster"
_HELM_KEYS = {
    "releaseName",
    "valueFiles",
    "values",
    "valuesObject",
    "parameters",
    "skipCrds",
    "skipTests",
    "passCredentials",
    "version",
    "fileParameters",
    "ignoreMissingValueFiles",
}
_DIRECTORY_KEYS = {"recurse", "include", "exclude", "jsonnet"}


class _Invalid(ReconcilerError):
    """One Application field is unusable; becomes that app's AppError."""

    def __init__(self, message: str, cluster: str | None = None) -> None:
        super().__init__(message)
        self.cluster = cluster


@dataclass(frozen=True)
class Catalogue:
    apps: tuple[App, ...]
    errors: tuple[AppError, ...]


@dataclass(frozen=True)
class _Context:
    servers: Mapping[str, str]  # normalised API URL -> cluster name
    clusters: frozenset[str]
    repos: Mapping[str, str]  # normalised repo URL -> repo name
    # Clusters the reconciler never syncs: how their Applications sync is Argo CD's business.
    report_only: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _FileRead:
    """What one file of Applications gave: its apps (stamped with the commit it was
    read at) and the errors of its documents, which name the file, never the commit."""

    blob: str | None  # None: the tree cannot tell it, so the reading is not kept
    apps: tuple[App, ...]
    errors: tuple[AppError, ...]


class CatalogueMemo:
    """Each Application file's reading, reused while the file's blob is the same and
    the config reads it alike (clusters, repo URLs, file limit). It holds the files of
    the last catalogue only, so it stays the size of the repositories' apps
    directories. A file that could not be read is read again every time: its error
    may be a missing object that the next fetch brings."""

    def __init__(self) -> None:
        self._setting: tuple[_Context, int] | None = None
        # Published whole and never changed after: a catalogue reads the last one.
        self._files: Mapping[tuple[str, str], _FileRead] = {}
        self.parses = 0  # files parsed (not reused) so far, for the tests and the bench

    def known(self, setting: tuple[_Context, int]) -> Mapping[tuple[str, str], _FileRead]:
        """The files the last catalogue read, if it read them with `setting`."""
        return self._files if setting == self._setting else {}

    def keep(self, setting: tuple[_Context, int], files: dict[tuple[str, str], _FileRead]) -> None:
        """Hold `files` (a catalogue's, read with `setting`) and drop the others."""
        self._setting, self._files = setting, files


@dataclass(frozen=True)
class _Reading:
    """One catalogue's view of the memo: the files the last one read, and those this
    one has read so far (which the memo keeps afterwards)."""

    memo: CatalogueMemo
    known: Mapping[tuple[str, str], _FileRead]
    seen: dict[tuple[str, str], _FileRead]


def build_catalogue(
    config: Config,
    trees: Mapping[str, Tree],
    repo_urls: Mapping[str, str],
    memo: CatalogueMemo | None = None,
) -> Catalogue:
    """Apps from every configured repo's `apps` directories plus config [[apps]].

    `trees` holds the repos that could be read; `repo_urls` maps each repo name
    to the URL Applications use for it. With a `memo` (the daemon's, kept from
    catalogue to catalogue), files whose blob is unchanged are not parsed again."""
    ctx = context(config, repo_urls)
    setting = (ctx, config.render.max_file_bytes)
    memo = memo if memo is not None else CatalogueMemo()
    reading = _Reading(memo, memo.known(setting), {})
    apps: list[App] = []
    errors: list[AppError] = []
    for repo in config.repos:
        tree = trees.get(repo.name)
        if tree is None:
            continue
        for directory in repo.apps:
            _read_directory(tree, directory, ctx, apps, errors, setting[1], reading)
    memo.keep(setting, reading.seen)
    for declared in config.apps:
        apps.append(
            App(
                name=declared.name,
                cluster=declared.cluster,
                namespace=declared.namespace,
                sources=(
                    Source(
                        repo_url=repo_urls.get(declared.repo, ""),
                        repo=declared.repo,
                        path=declared.path,
                    ),
                ),
                origin=AppOrigin(repo="config", commit="", path=str(config.file)),
            )
        )
    return _unique(apps, errors)


def context(config: Config, repo_urls: Mapping[str, str]) -> _Context:
    """What reading an Application needs: the clusters by API URL, the repos by URL."""
    return _Context(
        servers={normalise_server(s): c.name for c in config.clusters for s in c.servers},
        clusters=frozenset(c.name for c in config.clusters),
        repos={normalise_url(url): name for name, url in repo_urls.items()},
        report_only=frozenset(c.name for c in config.clusters if c.mode == "report"),
    )


def is_application(obj: Mapping[str, Any]) -> bool:
    """An Argo CD Application (or ApplicationSet) object."""
    group = api_group(str(obj.get("apiVersion", "")))
    return group == ARGO_GROUP and obj.get("kind") in ("Application", "ApplicationSet")


def adopts(parent: App, ctx: _Context) -> bool:
    """Whether the Applications `parent` renders are apps of the catalogue: only where
    no Argo CD runs (an apply-mode destination). Where Argo CD runs, they are objects
    it syncs itself, desired like any other."""
    return parent.cluster not in ctx.report_only


def rendered_apps(
    parent: App, documents: Iterable[tuple[Mapping[str, Any], str]], ctx: _Context
) -> Catalogue:
    """The Applications among the objects `parent` rendered (object, file it came from),
    read exactly as those of a repository's files are: a bad one is an AppError."""
    apps: list[App] = []
    errors: list[AppError] = []
    for doc, path in documents:
        origin = replace(parent.origin, parent=parent.name, rendered=path)
        _read_document(doc, origin, origin.where, ctx, apps, errors)
    return Catalogue(tuple(apps), tuple(errors))


def unknown_children(app: App, why: str) -> AppError:
    """Said of an app whose render did not happen or failed: the Applications it would
    render are unknown. The message names the file whose trace its children carry
    (AppOrigin), so pruneguard.departure keeps their objects rather than prune them."""
    return AppError(
        app.name,
        f"the Applications rendered by app {app.name} ({app.origin.repo}:{app.origin.path}) "
        f"are unknown: {why}",
        app.cluster,
    )


def nothing_declared(config: Config) -> str | None:
    """Why the catalogue of `config` is empty before any repository is read, or None:
    a config that declares no apps is valid, but the commands say they had nothing to do."""
    if config.apps or any(repo.apps for repo in config.repos):
        return None
    return (
        "no apps: none of the repos declares an apps directory and the config declares "
        "no [[apps]] (set `apps` of a [[repos]] to its directories of Applications)"
    )


def _unique(apps: list[App], errors: list[AppError]) -> Catalogue:
    """App names key status and `--app`; a second app of the same name is refused."""
    seen: dict[str, App] = {}
    for app in apps:
        first = seen.get(app.name)
        if first is None:
            seen[app.name] = app
            continue
        errors.append(
            AppError(
                app.name,
                f"declared in {app.origin.where} but the name is already "
                f"used by {first.origin.where}",
                app.cluster,
            )
        )
    return Catalogue(tuple(seen.values()), tuple(errors))


def _read_directory(
    tree: Tree,
    directory: str,
    ctx: _Context,
    apps: list[App],
    errors: list[AppError],
    max_file_bytes: int,
    reading: _Reading,
) -> None:
    try:
        paths = tree.files(directory, recurse=True)
    except ReconcilerError as exc:
        errors.append(AppError(f"{tree.repo}:{directory}", f"cannot list Applications: {exc}"))
        return
    fingerprinted = tree if isinstance(tree, Fingerprinted) else None
    for path in paths:
        if not path.endswith(MANIFEST_SUFFIXES):
            continue
        label = f"{tree.repo}:{path}"
        blob = _blob(fingerprinted, path)
        read = reading.known.get((tree.repo, path))
        if read is None or read.blob != blob:
            reading.memo.parses += 1
            try:
                read = _FileRead(blob, *_read_file(tree, path, ctx, max_file_bytes))
            except ReconcilerError as exc:
                errors.append(AppError(label, str(exc)))
                continue
        if blob is not None:
            reading.seen[(tree.repo, path)] = read
        apps.extend(_stamped(app, tree.commit) for app in read.apps)
        errors.extend(read.errors)


def _blob(tree: Fingerprinted | None, path: str) -> str | None:
    """The id of the file's content, or None when the tree cannot tell it (then the
    file is parsed and not kept)."""
    if tree is None:
        return None
    try:
        return tree.fingerprint(path)
    except ReconcilerError:
        return None  # reading it reports why


def _read_file(
    tree: Tree, path: str, ctx: _Context, max_file_bytes: int
) -> tuple[tuple[App, ...], tuple[AppError, ...]]:
    """The apps of one file of Applications and the errors of its documents;
    ReconcilerError when the file cannot be read or parsed at all."""
    size = tree.size(path)
    if size > max_file_bytes:
        raise _Invalid(f"{path}: {size} bytes is over the {max_file_bytes}-byte file limit")
    docs = parse_documents(tree.read(path), path)
    origin = AppOrigin(repo=tree.repo, commit=tree.commit, path=path)
    apps: list[App] = []
    errors: list[AppError] = []
    for doc in docs:
        if isinstance(doc, dict):
            _read_document(doc, origin, f"{tree.repo}:{path}", ctx, apps, errors)
    return tuple(apps), tuple(errors)


def _stamped(app: App, commit: str) -> App:
    """`app` as declared at `commit`: a file unchanged since it was read declares the
    same app at every later commit."""
    if app.origin.commit == commit:
        return app
    return replace(app, origin=replace(app.origin, commit=commit))


def _read_document(
    doc: Mapping[str, Any],
    origin: AppOrigin,
    label: str,
    ctx: _Context,
    apps: list[App],
    errors: list[AppError],
) -> None:
    """One document of a file of Applications (or of a parent app's output)."""
    if api_group(str(doc.get("apiVersion", ""))) != ARGO_GROUP:
        return
    kind = doc.get("kind")
    name = _name_of(doc) or label
    if kind == "ApplicationSet":
        errors.append(
            AppError(
                name,
                f"ApplicationSet in {label} is not supported; declare its Applications directly",
            )
        )
    elif kind == "Application":
        try:
            apps.append(parse_application(doc, origin, ctx))
        except _Invalid as exc:
            errors.append(AppError(name, f"{label}: {exc}", exc.cluster))
        except Exception as exc:  # a bug met by odd input fails this Application only
            errors.append(AppError(name, f"{label}: {internal_error(exc)}"))


def _name_of(doc: Mapping[str, Any]) -> str | None:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def parse_application(doc: Mapping[str, Any], origin: AppOrigin, ctx: _Context) -> App:
    name = _name_of(doc)
    if name is None:
        raise _Invalid("Application has no metadata.name")
    _check("metadata.name", name, invalid_app_name)
    spec = _mapping(doc.get("spec"), "spec")
    metadata = _mapping(doc.get("metadata"), "metadata")
    destination = _mapping(spec.get("destination"), "spec.destination")
    cluster = _cluster(destination, ctx)
    try:
        return _app(name, spec, metadata, destination, cluster, origin, ctx)
    except _Invalid as exc:
        raise _Invalid(str(exc), cluster) from None


def _app(
    name: str,
    spec: Mapping[str, Any],
    metadata: Mapping[str, Any],
    destination: Mapping[str, Any],
    cluster: str,
    origin: AppOrigin,
    ctx: _Context,
) -> App:
    namespace = destination.get("namespace") or ""
    if not isinstance(namespace, str):
        raise _Invalid("spec.destination.namespace must be a string")
    if namespace:
        _check("spec.destination.namespace", namespace, invalid_namespace)

    raw_sources: Any = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    if not isinstance(raw_sources, list) or not raw_sources:
        raise _Invalid("spec.source or spec.sources is required")
    keys = [f"spec.sources[{i}]" for i in range(len(raw_sources))]
    if not spec.get("sources"):
        keys = ["spec.source"]
    sources = tuple(_source(_mapping(s, k), ctx, k) for s, k in zip(raw_sources, keys, strict=True))
    sync_policy = _mapping(spec.get("syncPolicy") or {}, "spec.syncPolicy")
    sync_options = sync_policy.get("syncOptions") or []
    ignore = spec.get("ignoreDifferences") or []
    if not isinstance(sync_options, list) or not all(isinstance(o, str) for o in sync_options):
        raise _Invalid("spec.syncPolicy.syncOptions must be a list of strings")
    if not isinstance(ignore, list) or not all(isinstance(i, dict) for i in ignore):
        raise _Invalid("spec.ignoreDifferences must be a list of mappings")
    if cluster not in ctx.report_only and (refused := syncpolicy.problems(sync_policy)):
        raise _Invalid("; ".join(refused))
    return App(
        name=name,
        cluster=cluster,
        namespace=namespace,
        sources=sources,
        origin=origin,
        sync_wave=_sync_wave(metadata),
        sync_options=tuple(sync_options),
        sync_policy=sync_policy,
        ignore_differences=tuple(ignore),
        prune_on_delete=deletes_resources(metadata.get("finalizers")),
    )


def _check(key: str, value: str, invalid: Callable[[str], str | None]) -> None:
    problem = invalid(value)
    if problem:
        raise _Invalid(f"{key}: {problem}")


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{key} must be a mapping")
    return value


def _cluster(destination: Mapping[str, Any], ctx: _Context) -> str:
    server = destination.get("server")
    name = destination.get("name")
    if isinstance(server, str) and server:
        cluster = ctx.servers.get(normalise_server(server))
        if cluster is None:
            raise _Invalid(f"destination server {server} is not listed in any cluster's `servers`")
        return cluster
    if isinstance(name, str) and name:
        if name in ctx.clusters:
            return name
        if name == IN_CLUSTER and "https://kubernetes.default.svc" in ctx.servers:
            return ctx.servers["https://kubernetes.default.svc"]
        raise _Invalid(f"destination name {name!r} is not a configured cluster")
    raise _Invalid("spec.destination needs a server or a name")


def _sync_wave(metadata: Mapping[str, Any]) -> int:
    annotations = metadata.get("annotations") or {}
    raw = annotations.get(SYNC_WAVE, "0") if isinstance(annotations, dict) else "0"
    try:
        return int(str(raw).strip())
    except ValueError:
        raise _Invalid(f"annotation {SYNC_WAVE} must be an integer") from None


def _source(raw: Mapping[str, Any], ctx: _Context, key: str) -> Source:
    url = raw.get("repoURL")
    if not isinstance(url, str) or not url:
        raise _Invalid(f"{key}.repoURL is required")
    revision = str(raw.get("targetRevision") or "")
    if "plugin" in raw:
        raise _Invalid(f"{key}.plugin: config management plugins are not supported")
    helm = _helm(raw["helm"], f"{key}.helm") if "helm" in raw else None
    chart = raw.get("chart")
    if chart is not None:
        if not isinstance(chart, str) or not chart:
            raise _Invalid(f"{key}.chart must be a chart name")
        if not revision:
            raise _Invalid(f"{key}.targetRevision is required for chart {chart}")
        _check(f"{key}.chart", chart, invalid_chart)
        _check(f"{key}.targetRevision", revision, invalid_chart_version)
        _check(f"{key}.repoURL", url, invalid_chart_repo)
        return Source(
            repo_url=url, target_revision=revision, chart=chart, helm=helm or HelmOptions(), key=key
        )
    if url.startswith("oci://"):
        # Argo CD 3.1 also syncs plain manifests from OCI artifacts; only charts are pulled.
        raise _Invalid(
            f"{key}.repoURL {redact_url(url)}: OCI sources are supported as Helm charts only "
            "(set chart and targetRevision)"
        )
    repo = ctx.repos.get(normalise_url(url))
    if repo is None:
        raise _Invalid(f"{key}.repoURL {url} is not a configured repo (see [[repos]] url)")
    path = raw.get("path")
    ref = raw.get("ref")
    if path is None and ref is None:
        raise _Invalid(f"{key} needs a path, a chart or a ref")
    if path is not None and not isinstance(path, str):
        raise _Invalid(f"{key}.path must be a string")
    if ref is not None and not isinstance(ref, str):
        raise _Invalid(f"{key}.ref must be a string")
    kustomize = raw.get("kustomize")
    if kustomize is not None and not isinstance(kustomize, dict):
        raise _Invalid(f"{key}.kustomize must be a mapping")
    if kustomize:
        raise _Invalid(
            f"{key}.kustomize options ({', '.join(sorted(map(str, kustomize)))}) are not supported"
        )
    return Source(
        repo_url=url,
        target_revision=revision,
        repo=repo,
        path=path,
        ref=ref,
        directory=_directory(raw["directory"], f"{key}.directory") if "directory" in raw else None,
        helm=helm,
        kustomize="kustomize" in raw,
        key=key,
    )


def _directory(raw: Any, key: str) -> DirectoryOptions:
    table = _mapping(raw or {}, key)
    unknown = set(table) - _DIRECTORY_KEYS
    if unknown:
        raise _Invalid(f"{key}: unsupported option(s) {', '.join(sorted(unknown))}")
    if table.get("jsonnet"):
        raise _Invalid(f"{key}.jsonnet is not supported")
    include, exclude = table.get("include", ""), table.get("exclude", "")
    if not isinstance(include, str) or not isinstance(exclude, str):
        raise _Invalid(f"{key}.include and .exclude must be glob strings")
    return DirectoryOptions(recurse=table.get("recurse") is True, include=include, exclude=exclude)


def _helm(raw: Any, key: str) -> HelmOptions:
    table = _mapping(raw or {}, key)
    unknown = set(table) - _HELM_KEYS
    if unknown:
        raise _Invalid(f"{key}: unsupported option(s) {', '.join(sorted(unknown))}")
    files = table.get("valueFiles") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise _Invalid(f"{key}.valueFiles must be a list of paths")
    values = table.get("values")
    if values is not None and not isinstance(values, str | dict):
        raise _Invalid(f"{key}.values must be a YAML string")
    values_object = table.get("valuesObject")
    if values_object is not None and not isinstance(values_object, dict):
        raise _Invalid(f"{key}.valuesObject must be a mapping")
    release = table.get("releaseName")
    if release is not None and not isinstance(release, str):
        raise _Invalid(f"{key}.releaseName must be a string")
    if release:
        _check(f"{key}.releaseName", release, invalid_release_name)
    if _flag(table, key, "passCredentials"):
        raise _Invalid(
            f"{key}.passCredentials: true is not supported: [render] chart_credentials are "
            "sent to the chart repository's own scheme, host and port only"
        )
    return HelmOptions(
        release_name=release or None,
        value_files=tuple(files),
        # Argo CD accepts `values` as a mapping too; Helm sees the same YAML either way.
        values=values if isinstance(values, str) else None,
        values_object=values_object
        if values_object is not None
        else (values if isinstance(values, dict) else None),
        parameters=_parameters(table, key, "parameters", "value"),
        file_parameters=_parameters(table, key, "fileParameters", "path"),
        skip_crds=_flag(table, key, "skipCrds"),
        skip_tests=_flag(table, key, "skipTests"),
        ignore_missing_value_files=_flag(table, key, "ignoreMissingValueFiles"),
    )


def _parameters(
    table: Mapping[str, Any], key: str, field: str, value: str
) -> tuple[HelmParameter, ...]:
    """`parameters` ({name, value, forceString}) or `fileParameters` ({name, path})."""
    params = table.get(field) or []
    if not isinstance(params, list):
        raise _Invalid(f"{key}.{field} must be a list")
    parameters = []
    for i, p in enumerate(params):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise _Invalid(f"{key}.{field}[{i}] needs a name")
        _check(f"{key}.{field}[{i}].name", p["name"], invalid_parameter_name)
        raw = p.get(value, "")
        if field == "fileParameters" and (not isinstance(raw, str) or not raw):
            raise _Invalid(f"{key}.{field}[{i}].path must be a file path")
        parameters.append(HelmParameter(p["name"], str(raw), p.get("forceString") is True))
    return tuple(parameters)


def _flag(table: Mapping[str, Any], key: str, field: str) -> bool:
    value = table.get(field, False)
    if not isinstance(value, bool):
        raise _Invalid(f"{key}.{field} must be true or false")
    return value

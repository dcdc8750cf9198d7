"""Config + repositories -> the desired objects of each cluster, with origin.

This is where per-app failures are collected (a bad app never stops the
others) and where the cluster-wide rules are applied that no single app can
check alone: namespace defaulting (which needs CRD scopes from the whole
cluster) and one object rendered by two apps in one cluster (shared, like
Argo CD's SharedResourceWarning: that object is applied by neither, the rest
of both apps is).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler import logs
from reconciler.appofapps import grow
from reconciler.catalogue import Catalogue, CatalogueMemo, build_catalogue
from reconciler.config import Config
from reconciler.errors import ReconcilerError, internal_error
from reconciler.model import App, AppError, Manifest, ObjectRef, api_group
from reconciler.render import Rendered, Tools
from reconciler.render.memo import RenderMemo
from reconciler.render.revisions import source_trees
from reconciler.render.sandbox import confines_files
from reconciler.sources.git import GitSource
from reconciler.tree import Revisions, Tree

# Kinds served cluster-wide by a plain API server; other kinds are cluster-scoped
# only if a CRD in the rendered set (or in WELL_KNOWN_CLUSTER_SCOPED) says so.
BUILTIN_CLUSTER_SCOPED = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("node.k8s.io", "RuntimeClass"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("resource.k8s.io", "DeviceClass"),
    }
)
# Cluster-scoped custom kinds used in the homelab whose CRDs are usually absent from
# the rendered set: Cilium's agent installs its own CRDs, and cert-manager's come from
# a chart that may be unavailable while the resources path still renders.
WELL_KNOWN_CLUSTER_SCOPED = frozenset(
    {
        ("cilium.io", "CiliumLoadBalancerIPPool"),
        ("cilium.io", "CiliumL2AnnouncementPolicy"),
        ("cilium.io", "CiliumClusterwideNetworkPolicy"),
        ("cert-manager.io", "ClusterIssuer"),
    }
)


@dataclass(frozen=True)
class ClusterDesired:
    """What one cluster should hold. Apps in `failed` rendered nothing usable: later
    stages must leave their live objects alone rather than prune them."""

    cluster: str
    manifests: tuple[Manifest, ...]
    apps: tuple[str, ...]
    failed: tuple[str, ...]
    errors: tuple[AppError, ...] = ()  # why the apps in `failed` failed
    # The whole catalogue and the repos read (name -> commit): an app missing from this
    # cluster's apps counts as removed from git only if these show it (pruneguard.departure).
    catalogue: Catalogue = field(default_factory=lambda: Catalogue((), ()))
    commits: Mapping[str, str] = field(default_factory=dict)
    # Objects several apps render: app -> where it renders it (`repo:path`). They are
    # not in `manifests`: no app applies them, and none prunes them.
    contested: Mapping[ObjectRef, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Desired:
    """Every cluster's desired objects, and what they were rendered from: the commit
    read of each repo, and why the others could not be read. The daemon decides from
    these whether anything moved; recording them is its caller's step."""

    clusters: Mapping[str, ClusterDesired]
    errors: tuple[AppError, ...]
    catalogue: Catalogue
    commits: Mapping[str, str] = field(default_factory=dict)  # repo name -> commit read
    unreadable: Mapping[str, str] = field(default_factory=dict)  # repo name -> why not
    # Sources pinned by targetRevision: `repo@revision` -> the commit it resolved to.
    revisions: Mapping[str, str] = field(default_factory=dict)
    # Apps rendered, and apps whose earlier render was reused (render.memo).
    rendered: int = 0
    reused: int = 0


@dataclass(frozen=True)
class RepoTrees:
    """The readable repositories at their tracked commits (and at the revisions their
    sources pin), plus what went wrong."""

    trees: Mapping[str, Tree]
    urls: Mapping[str, str]  # repo name -> URL Applications use for it
    problems: Mapping[str, str]  # repo name -> why it cannot be read
    notes: tuple[str, ...]
    revisions: Mapping[str, Revisions] = field(default_factory=dict)


def open_sources(config: Config, fetch: bool = False) -> RepoTrees:
    """Resolve every repo's tracked ref (fetching first if asked); a repo that cannot
    be read is a problem for the apps that need it, not for the others."""
    trees: dict[str, Tree] = {}
    revisions: dict[str, Revisions] = {}
    urls: dict[str, str] = {}
    problems: dict[str, str] = {}
    notes: list[str] = []
    for repo in config.repos:
        # Checkouts share files only while the tools that read them cannot write them.
        source = GitSource(repo, config.state_dir, link_checkouts=confines_files)
        try:
            url = source.url()
            if url:
                urls[repo.name] = url
            if fetch:
                # A failed fetch is only a note: the last fetched commit still renders.
                notes.append(source.fetch().message)
            tracked = source.snapshot()
            revisions[repo.name] = source.revisions(tracked)
            trees[repo.name] = tracked
        except ReconcilerError as exc:
            if repo.url:
                urls[repo.name] = repo.url
            problems[repo.name] = str(exc)
    return RepoTrees(trees, urls, problems, tuple(notes), revisions)


def prune_checkouts(config: Config, desired: Desired, before: Desired | None = None) -> int:
    """Remove the checkouts of commits `desired` no longer renders (every repo's; see
    GitSource.prune_checkouts); how many went. Only when a commit moved since `before`
    (the last render): that lists every repo's checkouts, and without a move nothing
    was written. A checkout spared then as recently used goes at the next move."""
    keep = _rendered_commits(desired)
    if before is not None and _rendered_commits(before) == keep:
        return 0
    return sum(GitSource(repo, config.state_dir).prune_checkouts(keep) for repo in config.repos)


def _rendered_commits(desired: Desired) -> set[str]:
    return {*desired.commits.values(), *desired.revisions.values()}


def tools_for(config: Config) -> Tools:
    return Tools.locate(config.render, config.state_dir)


def build_desired(
    config: Config,
    sources: RepoTrees,
    tools: Tools,
    clusters: Collection[str] | None = None,
    memo: RenderMemo | None = None,
    catalogue_memo: CatalogueMemo | None = None,
) -> Desired:
    """Catalogue every app, render those destined for `clusters` (all when None), and
    assemble each cluster's desired objects. With a `memo` (the daemon's, kept from
    render to render), an app whose inputs did not change is not rendered again; with
    a `catalogue_memo`, an Application file that did not change is not parsed again."""
    catalogue = build_catalogue(config, sources.trees, sources.urls, catalogue_memo)
    wanted = [a for a in catalogue.apps if clusters is None or a.cluster in clusters]
    errors = [e for e in catalogue.errors if clusters is None or e.cluster in (None, *clusters)]

    memo = memo if memo is not None else RenderMemo()
    before = (memo.renders, memo.reuses)
    # Applications the apps render join the catalogue (reconciler.appofapps).
    grown = grow(
        config,
        sources.urls,
        catalogue,
        wanted,
        lambda apps: _render_all(apps, sources, config, tools, memo),
        clusters,
    )
    catalogue, wanted, results = grown.catalogue, list(grown.apps), list(grown.results)
    errors += grown.errors
    rendered, reused = memo.renders - before[0], memo.reuses - before[1]
    memo.retain({app.name for app in catalogue.apps})

    by_cluster: dict[str, list[tuple[App, list[Rendered]]]] = defaultdict(list)
    failed: dict[str, list[str]] = defaultdict(list)
    revisions: dict[str, str] = {}
    for app, result in zip(wanted, results, strict=True):
        if isinstance(result, AppError):
            errors.append(result)
            failed[app.cluster].append(app.name)
        else:
            by_cluster[app.cluster].append((app, result[0]))
            revisions.update(result[1])

    commits = {name: tree.commit for name, tree in sources.trees.items()}
    out: dict[str, ClusterDesired] = {}
    for cluster in config.clusters:
        if clusters is not None and cluster.name not in clusters:
            continue
        assembled = assemble_cluster(cluster.name, by_cluster[cluster.name])
        errors.extend(assembled.errors)
        bad = {e.app for e in assembled.errors}
        out[cluster.name] = ClusterDesired(
            cluster=cluster.name,
            manifests=tuple(assembled.manifests),
            apps=tuple(a.name for a, _ in by_cluster[cluster.name] if a.name not in bad),
            failed=tuple(failed[cluster.name] + sorted(bad)),
            errors=tuple(e for e in errors if e.cluster == cluster.name),
            contested=assembled.contested,
            catalogue=catalogue,
            commits=commits,
        )
    return Desired(
        out,
        tuple(errors),
        catalogue,
        commits,
        dict(sources.problems),
        dict(sorted(revisions.items())),
        rendered,
        reused,
    )


def _render_all(
    apps: list[App],
    sources: RepoTrees,
    config: Config,
    tools: Tools,
    memo: RenderMemo,
) -> list[tuple[list[Rendered], Mapping[str, str]] | AppError]:
    """Each app's objects and the revisions its sources pinned, or why it failed, in
    the order of `apps`. An app whose inputs did not change since `memo` last rendered
    it is reused, not rendered."""
    refs = {repo.name: repo.ref for repo in config.repos}

    def reused(app: App) -> tuple[list[Rendered], Mapping[str, str]] | None:
        try:
            pinned = source_trees(app, sources.trees, sources.revisions, refs)
            found = memo.reuse(app, pinned.trees, tools)
        except Exception:  # whatever stops a reuse, rendering the app reports
            return None
        return None if found is None else (found, pinned.pinned)

    def attempt(app: App) -> tuple[list[Rendered], Mapping[str, str]] | AppError:
        try:
            pinned = source_trees(app, sources.trees, sources.revisions, refs)
            return memo.render(app, pinned.trees, tools), pinned.pinned
        except ReconcilerError as exc:
            return AppError(app.name, str(exc), app.cluster)
        except OSError as exc:  # the state_dir caches (checkouts, charts) could not be written
            return AppError(app.name, f"{exc.filename or 'state_dir'}: {exc.strerror}", app.cluster)
        except Exception as exc:  # a bug met by odd input still fails only this app
            message = internal_error(exc)
            logs.get(app=app.name).error("render.internal_error", error=message)
            return AppError(app.name, message, app.cluster)

    # A reuse costs a few tree lookups, so it is tried here; only the apps to render go
    # to the threads, which overlap the kustomize/helm subprocesses.
    results: list[tuple[list[Rendered], Mapping[str, str]] | AppError | None]
    results = [reused(app) for app in apps]
    todo = [i for i, result in enumerate(results) if result is None]
    if todo:
        with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 2) * 2)) as pool:
            for i, result in zip(todo, pool.map(attempt, [apps[i] for i in todo]), strict=True):
                results[i] = result
    done = [r for r in results if r is not None]
    assert len(done) == len(apps)
    return done


def cluster_scoped_kinds(objects: list[Rendered]) -> frozenset[tuple[str, str]]:
    """Built-in and well-known cluster-scoped kinds, corrected by the CRDs among `objects`."""
    scoped = set(BUILTIN_CLUSTER_SCOPED | WELL_KNOWN_CLUSTER_SCOPED)
    for r in objects:
        obj = r.obj
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        names = spec.get("names")
        names = names if isinstance(names, dict) else {}
        key = (str(spec.get("group", "")), str(names.get("kind", "")))
        if spec.get("scope") == "Cluster":
            scoped.add(key)
        else:
            scoped.discard(key)
    return frozenset(scoped)


@dataclass(frozen=True)
class Assembled:
    """One cluster's keyed objects; apps that rendered one object twice (`errors`);
    objects several apps render (`contested`: app -> `repo:path`), kept out of
    `manifests`."""

    manifests: list[Manifest]
    errors: list[AppError]
    contested: Mapping[ObjectRef, Mapping[str, str]]


def assemble_cluster(cluster: str, rendered: list[tuple[App, list[Rendered]]]) -> Assembled:
    """Key every object (defaulting namespaces) and set aside objects rendered twice.

    An object several apps render is contested: none of them applies it (each copy
    is one app's word against another's), and their other objects are unaffected.
    An app that renders one object twice itself fails, since its copies disagree."""
    scoped = cluster_scoped_kinds([r for _, objs in rendered for r in objs])
    keyed: list[tuple[App, Manifest]] = []
    owners: dict[ObjectRef, list[tuple[App, Manifest]]] = defaultdict(list)
    for app, objects in rendered:
        for r in objects:
            manifest = _keyed(r, app, scoped)
            keyed.append((app, manifest))
            owners[manifest.ref].append((app, manifest))

    errors: list[AppError] = []
    bad: set[str] = set()
    contested: dict[ObjectRef, dict[str, str]] = {}
    for ref, entries in owners.items():
        if len(entries) < 2:
            continue
        where = {a.name: f"{m.origin.repo}:{m.origin.path}" for a, m in entries}
        if len(where) > 1:
            contested[ref] = where
            continue
        name = entries[0][0].name
        if name not in bad:
            bad.add(name)
            paths = " and ".join(f"{m.origin.repo}:{m.origin.path}" for _, m in entries)
            message = f"{ref} is rendered twice in cluster {cluster}: {paths}"
            errors.append(AppError(name, message, cluster))
    manifests = [m for a, m in keyed if a.name not in bad and m.ref not in contested]
    return Assembled(manifests, errors, contested)


def shared_lines(clusters: Iterable[ClusterDesired], app: str | None = None) -> list[str]:
    """One line per contested object (of `app`, or all), for `render` and `diff`."""
    return [
        f"cluster {desired.cluster}: {ref} is rendered by "
        + " and ".join(f"app {name} ({where})" for name, where in by.items())
        + ": shared, applied by none of them"
        for desired in clusters
        for ref, by in sorted(desired.contested.items())
        if app is None or app in by
    ]


def _keyed(r: Rendered, app: App, scoped: frozenset[tuple[str, str]]) -> Manifest:
    obj = r.obj
    group, kind = api_group(str(obj["apiVersion"])), str(obj["kind"])
    metadata: dict[str, Any] = dict(obj["metadata"])
    if (group, kind) in scoped:
        metadata.pop("namespace", None)  # the API server ignores it; so must the key
        namespace = ""
    else:
        # No destination namespace means kubectl's default, as with Argo CD.
        namespace = metadata.get("namespace") or app.namespace or "default"
        metadata["namespace"] = namespace
    return Manifest(
        ref=ObjectRef(group, kind, namespace, str(metadata["name"])),
        obj={**obj, "metadata": metadata},
        origin=r.origin,
    )

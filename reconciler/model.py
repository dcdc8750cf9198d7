"""The small immutable types passed between pipeline stages.

Stages exchange only these, so each stage can be tested with plain data and
no stage needs to know how another one obtained it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# How a cluster is treated: "apply" converges it, "report" only says how it drifts.
Mode = Literal["apply", "report"]

# The field manager of the reconciler's server-side applies: the diff reads its fields by it.
FIELD_MANAGER = "reconciler"
# Argo CD's ordering annotation, read on Applications and on the objects they render.
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
# Marks what the reconciler applied, with its app's name: its inventory can be read back
# from the cluster itself (as Flux's and ApplySet's labels allow), and a hook may only
# delete objects that carry it (invariant 4).
TRACKING_LABEL = "reconciler.kernow.io/app"


class Result(enum.Enum):
    """What happened to one object in one reconcile (shared by plan, apply, status)."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    SKIPPED = "skipped"
    FAILED = "failed"


def api_group(api_version: str) -> str:
    """The group part of an apiVersion: objects are keyed by group, never by version,
    because the API server serves the same object under every version of its group."""
    return api_version.rpartition("/")[0]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The canonical key of a Kubernetes object within one cluster."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        group_kind = f"{self.kind}.{self.group}" if self.group else self.kind
        if self.namespace:
            return f"{group_kind} {self.namespace}/{self.name}"
        return f"{group_kind} {self.name}"

    @staticmethod
    def parse(text: str) -> ObjectRef:
        """The ref whose `str` is `text` (a kind has no dot, a name no slash)."""
        group_kind, _, where = text.partition(" ")
        kind, _, group = group_kind.partition(".")
        namespace, _, name = where.rpartition("/")
        return ObjectRef(group, kind, namespace, name)


@dataclass(frozen=True)
class Origin:
    """Where a desired object came from, so every report can point back at git."""

    repo: str
    commit: str
    app: str
    path: str


@dataclass(frozen=True)
class Manifest:
    """One desired object, ready for diffing: namespace defaulted, keyed, traced."""

    ref: ObjectRef
    obj: Mapping[str, Any]
    origin: Origin


def parse_options(items: Iterable[str]) -> dict[str, str]:
    """Argo CD's `Name=value` sync options by name, as an Application lists them or an
    object's `argocd.argoproj.io/sync-options` annotation joins them with commas; the
    one reading of them, so an app and an object never disagree on what an option says."""
    options: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name.strip():
            options[name.strip()] = value.strip()
    return options


@dataclass(frozen=True)
class DirectoryOptions:
    """Argo CD's `source.directory`: how a plain-manifest path is read."""

    recurse: bool = False
    include: str = ""
    exclude: str = ""


@dataclass(frozen=True)
class HelmParameter:
    name: str
    value: str
    force_string: bool = False


@dataclass(frozen=True)
class HelmOptions:
    """Argo CD's `source.helm`, in the order Helm applies it: files, inline values, --set."""

    release_name: str | None = None
    value_files: tuple[str, ...] = ()
    values: str | None = None
    values_object: Mapping[str, Any] | None = None
    parameters: tuple[HelmParameter, ...] = ()
    # `fileParameters`: `--set-file name=path`, each path read like a value file.
    file_parameters: tuple[HelmParameter, ...] = ()
    skip_crds: bool = False
    skip_tests: bool = False
    ignore_missing_value_files: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a destination cluster serves, as Helm's `.Capabilities` sees it: Argo CD
    passes these to `helm template` as `--kube-version` and `--api-versions`."""

    kube_version: str  # e.g. "v1.35.4"
    api_versions: tuple[str, ...] = ()  # "group/version" and "group/version/Kind", sorted


@dataclass(frozen=True)
class Source:
    """One source of an app. `repo` is the configured repo name for git sources;
    chart sources (`chart` set) name a Helm repository by `repo_url` instead.
    `target_revision` is a chart's version, or the branch, tag or commit a git
    source renders at (empty, `HEAD` or the tracked ref's name: the repo's tracked
    commit; see reconciler.render.revisions). `key` is where the Application
    declares it (`spec.source`, `spec.sources[i]`), for messages."""

    repo_url: str
    target_revision: str = ""
    repo: str | None = None
    path: str | None = None
    chart: str | None = None
    ref: str | None = None
    directory: DirectoryOptions | None = None
    helm: HelmOptions | None = None
    kustomize: bool = False
    key: str = ""


@dataclass(frozen=True)
class AppOrigin:
    """The file that declared an app: an Application manifest or the config file.

    An Application rendered by another app (app-of-apps) keeps the file of the
    Application at the top of its chain as `repo`/`path`, so what the store traces
    for it is known again when that app fails to render; `parent` names the app that
    rendered it and `rendered` the file of that app's source it came from."""

    repo: str
    commit: str
    path: str
    parent: str = ""
    rendered: str = ""

    @property
    def where(self) -> str:
        """The declaring file, as messages name it."""
        if self.parent:
            return f"app {self.parent} rendered {self.rendered}"
        return f"{self.repo}:{self.path}"


@dataclass(frozen=True)
class App:
    """One deployable unit: sources rendered into one destination cluster and namespace."""

    name: str
    cluster: str
    namespace: str
    sources: tuple[Source, ...]
    origin: AppOrigin
    sync_wave: int = 0
    sync_options: tuple[str, ...] = ()
    sync_policy: Mapping[str, Any] = field(default_factory=dict)
    ignore_differences: tuple[Mapping[str, Any], ...] = ()
    # Argo CD's resources finalizer: removing the Application from git deletes its objects.
    prune_on_delete: bool = False

    def sync_option(self, name: str) -> str | None:
        """The value of a `Name=value` sync option, or None when it is not set."""
        return parse_options(self.sync_options).get(name)


@dataclass(frozen=True)
class SyncRequest:
    """A person asked to sync one app now (`reconciler sync --app A`), as Argo CD's
    manual sync: it applies whatever the app's syncPolicy would leave for a person.
    `prune` also confirms the prunes the guard held back: all of them, or only
    `objects` when given (an approval from the room covers what its message showed,
    no more; the rest stay held)."""

    prune: bool = False
    objects: frozenset[ObjectRef] | None = None


@dataclass(frozen=True)
class AppError:
    """A problem confined to one app (or one catalogue file, when no app name is known)."""

    app: str
    message: str
    cluster: str | None = None

    def __str__(self) -> str:
        where = f" (cluster {self.cluster})" if self.cluster else ""
        return f"app {self.app}{where}: {self.message}"


class DriftType(enum.Enum):
    """How a live object differs from git: absent live, different, or no longer in git."""

    MISSING = "missing"
    CHANGED = "changed"
    EXTRA = "extra"


@dataclass(frozen=True)
class Change:
    """One differing field. `path` is a JSON pointer; a side is None where the field is absent.
    Values are already redacted: a Change is safe to log, store and print."""

    path: str
    desired: Any
    live: Any


@dataclass(frozen=True)
class Drift:
    """The difference between one desired object and its live counterpart.

    `desired` and `live` are the redacted, normalised views that were compared
    (what a text diff renders); they stay out of repr and equality so a Drift
    prints and compares by its changes."""

    type: DriftType
    ref: ObjectRef
    api_version: str
    changes: tuple[Change, ...] = ()
    desired: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    live: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, order=True)
class GroupKind:
    """A kind of object, independent of version: what API discovery and the live cache key on."""

    group: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


NAMESPACE = GroupKind("", "Namespace")
CRD = GroupKind("apiextensions.k8s.io", "CustomResourceDefinition")


def object_ref(obj: Mapping[str, Any]) -> ObjectRef:
    """The key of an object given as a dict (a live object, or a rendered one)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return ObjectRef(
        api_group(str(obj.get("apiVersion", ""))),
        str(obj.get("kind", "")),
        str(metadata.get("namespace") or ""),
        str(metadata.get("name") or ""),
    )


@dataclass(frozen=True)
class InventoryItem:
    """One object the reconciler applied for an app: the only objects it may prune."""

    app: str
    ref: ObjectRef
    api_version: str


@dataclass(frozen=True)
class Violation:
    """One object breaking one policy; reported like drift, under the policy's name.

    `source` says which side broke it: "desired" (git) or "live" (the cluster).
    `app` is None for a live object no app is known to own."""

    policy: str
    cluster: str
    ref: ObjectRef
    app: str | None
    message: str
    source: str

    def __str__(self) -> str:
        app = f" (app {self.app})" if self.app else ""
        return f"{self.cluster}: {self.ref}{app} [{self.source}]: {self.policy}: {self.message}"

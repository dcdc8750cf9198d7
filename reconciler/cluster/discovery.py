"""API discovery: which resource serves a (group, kind), at which version, in which scope.

Desired state names objects by apiVersion and kind; the API is addressed by
group, version and resource plural. Discovery bridges the two from the
cluster's own aggregated discovery documents (two requests for the whole
API, Kubernetes >= 1.27), and is refreshed when a kind is missing, because
CRDs (and so kinds) come and go while the reconciler runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.cluster.errors import ClusterError, UnknownKind
from reconciler.model import GroupKind

# Aggregated discovery, newest first; both versions share the document shape.
AGGREGATED_DISCOVERY = ",".join(
    f"application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
    for v in ("v2", "v2beta1")
)
DISCOVERY_PATHS = ("/api", "/apis")


@dataclass(frozen=True)
class Resource:
    """One served kind: enough to build its URLs and to know whether it is namespaced."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        """The collection URL (across all namespaces when `namespace` is empty) or an object's."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


def parse_aggregated(documents: Iterable[Mapping[str, Any]]) -> dict[GroupKind, Resource]:
    """Resources by kind from APIGroupDiscoveryList documents.

    Versions are listed in the server's order of preference, so the first
    version serving a kind wins; subresources are not kinds and are skipped.
    """
    resources: dict[GroupKind, Resource] = {}
    for document in documents:
        for group in document.get("items") or ():
            group_name = group.get("metadata", {}).get("name", "")
            for version in group.get("versions") or ():
                for entry in version.get("resources") or ():
                    kind = (entry.get("responseKind") or {}).get("kind")
                    if not kind:
                        continue
                    resources.setdefault(
                        GroupKind(group_name, kind),
                        Resource(
                            group=group_name,
                            version=version["version"],
                            kind=kind,
                            plural=entry["resource"],
                            namespaced=entry.get("scope") == "Namespaced",
                        ),
                    )
    return resources


def api_versions(documents: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Every served group/version, and group/version/Kind of each kind it serves, sorted:
    what Argo CD passes to `helm template --api-versions` (`.Capabilities.APIVersions`)."""
    found: set[str] = set()
    for document in documents:
        for group in document.get("items") or ():
            group_name = group.get("metadata", {}).get("name", "")
            for version in group.get("versions") or ():
                served = f"{group_name}/{version['version']}" if group_name else version["version"]
                found.add(served)
                for entry in version.get("resources") or ():
                    kind = (entry.get("responseKind") or {}).get("kind")
                    if kind:
                        found.add(f"{served}/{kind}")
    return tuple(sorted(found))


class Discovery:
    """A thread-safe (group, kind) -> Resource map, refreshed on a miss at most every
    `min_refresh_interval` seconds so a kind that stays unknown does not flood the server."""

    def __init__(
        self,
        cluster: str,
        fetch: Callable[[str], Mapping[str, Any]],
        min_refresh_interval: float = 1.0,
    ) -> None:
        self._cluster = cluster
        self._fetch = fetch
        self._min_refresh_interval = min_refresh_interval
        self._resources: dict[GroupKind, Resource] = {}
        self._api_versions: tuple[str, ...] = ()
        self._refreshed_at: float | None = None
        self._lock = threading.Lock()

    def resource(self, gk: GroupKind) -> Resource:
        found = self._resources.get(gk)
        if found is not None:
            return found
        with self._lock:
            stale = (
                self._refreshed_at is None
                or time.monotonic() - self._refreshed_at >= self._min_refresh_interval
            )
            if stale:
                self._refresh_locked()
        found = self._resources.get(gk)
        if found is None:
            raise UnknownKind(self._cluster, f"the API does not serve {gk}")
        return found

    def refresh(self) -> None:
        """Re-read discovery now, e.g. after the API said a known kind is gone."""
        with self._lock:
            self._refresh_locked()

    def api_versions(self, max_age: float) -> tuple[str, ...]:
        """See `api_versions`; re-read when the last read is older than `max_age` seconds,
        so CRDs installed since are seen."""
        with self._lock:
            if self._refreshed_at is None or time.monotonic() - self._refreshed_at > max_age:
                self._refresh_locked()
            return self._api_versions

    def _refresh_locked(self) -> None:
        documents = [self._fetch(path) for path in DISCOVERY_PATHS]
        for path, document in zip(DISCOVERY_PATHS, documents, strict=True):
            if document.get("kind") != "APIGroupDiscoveryList":
                raise ClusterError(
                    self._cluster,
                    f"{path} did not return aggregated discovery (Kubernetes >= 1.27 is required)",
                )
        # One assignment: readers never see a half-built map.
        self._resources = parse_aggregated(documents)
        self._api_versions = api_versions(documents)
        self._refreshed_at = time.monotonic()

"""Set-up for tests on the real test clusters: polling with a deadline, throwaway
namespaces and CRDs created with the admin identity, audit-log counts."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

from testenv.charts import CustomKind, crd
from testenv.clusters import RECONCILER_USER, Cluster
from tests import builders


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def namespace(cluster: Cluster, prefix: str = "t") -> Iterator[str]:
    """A fresh namespace, created and deleted by the admin identity."""
    name = unique(prefix)
    cluster.request("POST", "/api/v1/namespaces", builders.namespace(name))
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            cluster.request("DELETE", f"/api/v1/namespaces/{name}")


def create_crd(cluster: Cluster, group: str, kind: str) -> str:
    """Install a namespaced CRD for `kind` in `group` (served as v1); returns its plural."""
    plural = kind.lower() + "s"
    cluster.request(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd(CustomKind(group, "v1", kind, plural)),
    )
    return plural


def reconciler_requests(cluster: Cluster, verbs: frozenset[str] | None = None) -> int:
    """How many completed requests the reconciler identity made (with one of `verbs`)."""
    return sum(1 for e in cluster.requests_by(RECONCILER_USER) if verbs is None or e.verb in verbs)

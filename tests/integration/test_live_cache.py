"""LiveCache against the real test clusters: answers from memory after the initial
list (proven by the audit log), follows watch events, picks up kinds whose CRD
appears later, and recovers from an API server restart without affecting the
other clusters' caches."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest

from reconciler.cluster import ClusterClient, LiveCache, NotSynced
from reconciler.model import GroupKind, Mode, ObjectRef
from testenv.clusters import ClusterSet
from tests.builders import config_map
from tests.helpers_cluster import (
    create_crd,
    namespace,
    reconciler_requests,
    unique,
    wait_for,
)

CONFIG_MAP = GroupKind("", "ConfigMap")
READS = frozenset({"get", "list"})


@pytest.fixture
def caches(clusters: ClusterSet) -> Iterator[list[LiveCache]]:
    """Caches made by a test, stopped after it, so no watch outlives its test."""
    made: list[LiveCache] = []
    yield made
    for cache in made:
        cache.stop()


def start_cache(
    caches: list[LiveCache], clusters: ClusterSet, name: str, events: queue.Queue[str] | None = None
) -> LiveCache:
    cluster = clusters[name]
    mode: Mode = "report" if cluster.report_only else "apply"
    client = ClusterClient(name, cluster.reconciler_kubeconfig, mode=mode)
    on_change = None if events is None else lambda ref, kind, _version: events.put(f"{kind} {ref}")
    cache = LiveCache(client, on_change=on_change, max_backoff=1.0)
    caches.append(cache)
    cache.track([CONFIG_MAP])
    assert cache.wait_synced(10), cache.errors()
    return cache


def test_cache_answers_get_without_api_calls(clusters: ClusterSet, caches: list[LiveCache]) -> None:
    prod = clusters["prod"]  # report-only: reading is all the cache ever does
    with namespace(prod) as ns:
        prod.request("POST", f"/api/v1/namespaces/{ns}/configmaps", config_map("a", {"k": "v"}, ns))
        cache = start_cache(caches, clusters, "prod")
        before = reconciler_requests(prod, READS)

        for _ in range(100):
            live = cache.get(ObjectRef("", "ConfigMap", ns, "a"))
            assert live is not None and live["data"] == {"k": "v"}
            assert cache.get(ObjectRef("", "ConfigMap", ns, "absent")) is None
            assert cache.objects("", "ConfigMap")

        assert reconciler_requests(prod, READS) == before
        with pytest.raises(NotSynced, match="Secret is not tracked"):
            cache.get(ObjectRef("", "Secret", ns, "a"))


def test_cache_sees_watch_events(clusters: ClusterSet, caches: list[LiveCache]) -> None:
    agentic = clusters["agentic"]
    events: queue.Queue[str] = queue.Queue()
    cache = start_cache(caches, clusters, "agentic", events)
    with namespace(agentic) as ns:
        path = f"/api/v1/namespaces/{ns}/configmaps"
        ref = ObjectRef("", "ConfigMap", ns, "w")
        agentic.request("POST", path, config_map("w", {"k": "1"}, ns))
        agentic.request("PUT", f"{path}/w", config_map("w", {"k": "2"}, ns))
        agentic.request("DELETE", f"{path}/w")

        seen: list[str] = []
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            if f" ConfigMap {ns}/w" in event:
                seen.append(event.split()[0])
        assert seen == ["ADDED", "MODIFIED", "DELETED"]
        assert cache.get(ref) is None
        managed = cache.objects("", "ConfigMap")[0]["metadata"].get("managedFields")
        assert managed, "managedFields are kept for the diff"


def test_cache_follows_a_kind_whose_crd_appears_and_goes(
    clusters: ClusterSet, caches: list[LiveCache]
) -> None:
    monit = clusters["monit"]
    group = f"{unique('c')}.example.com"
    widget = GroupKind(group, "Widget")
    cache = start_cache(caches, clusters, "monit")
    cache.track([widget])
    assert cache.wait_synced(10), cache.errors()
    assert cache.unknown_kinds() == {widget}
    assert cache.get(ObjectRef(group, "Widget", "default", "w")) is None

    plural = create_crd(monit, group, "Widget")
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}}

    def created() -> bool:
        try:
            monit.request("POST", f"/apis/{group}/v1/namespaces/default/{plural}", body)
        except OSError:  # not served until the CRD is established
            return False
        return True

    wait_for(created, 10, "the Widget to be created")
    wait_for(
        lambda: cache.get(ObjectRef(group, "Widget", "default", "w")) is not None,
        10,
        "the cache to list the new kind",
    )
    assert cache.unknown_kinds() == set()

    monit.request(
        "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{group}"
    )
    wait_for(lambda: cache.unknown_kinds() == {widget}, 10, "the cache to see the kind go")
    assert cache.get(ObjectRef(group, "Widget", "default", "w")) is None


def test_cache_relists_after_apiserver_restart(
    clusters: ClusterSet, caches: list[LiveCache]
) -> None:
    monit, agentic = clusters["monit"], clusters["agentic"]
    restarted = start_cache(caches, clusters, "monit")
    other = start_cache(caches, clusters, "agentic")

    # Its graceful shutdown takes 10 s; a crash is as good a test, and faster.
    monit.stop_process("kube-apiserver", timeout=0.5)
    try:
        name = unique("during")
        agentic.request(
            "POST", "/api/v1/namespaces/default/configmaps", config_map(name, {}, "default")
        )
        wait_for(
            lambda: other.get(ObjectRef("", "ConfigMap", "default", name)) is not None,
            5,
            "agentic's cache to follow agentic while monit is down",
        )
    finally:
        monit.start_apiserver()
        monit.wait_ready(time.monotonic() + 30)

    name = unique("after")
    monit.request("POST", "/api/v1/namespaces/default/configmaps", config_map(name, {}, "default"))
    wait_for(
        lambda: restarted.get(ObjectRef("", "ConfigMap", "default", name)) is not None,
        10,
        "monit's cache to follow monit again",
    )
    stats = restarted.stats()
    assert stats.watch_restarts >= 1
    # The new API server's watch cache starts at the current revision: 410, then a relist.
    assert stats.relists >= 1
    assert other.stats().relists == 0

"""The test clusters are real: checked through the official Kubernetes Python client.

Every later integration test trusts these properties (server-side apply with
defaults, watches, controller-manager finalization, RBAC, audit, TLS), so each
one is proven here against all three clusters.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from testenv.clusters import RECONCILER_USER, Cluster, ClusterSet, write_kubeconfig
from testenv.pki import make_ca
from tests import builders
from tests.helpers_cluster import wait_for

CLUSTER_NAMES = ["prod", "agentic", "monit"]
FIELD_MANAGER = "smoke-test"


def dynamic_client(kubeconfig: Path) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(config.new_client_from_config(config_file=str(kubeconfig)))


@pytest.fixture(params=CLUSTER_NAMES)
def cluster(request: pytest.FixtureRequest, clusters: ClusterSet) -> Cluster:
    return clusters[request.param]


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(OSError):
        cluster.request("DELETE", f"/api/v1/namespaces/{name}")


def test_server_side_apply_fills_in_server_defaults(cluster: Cluster, namespace: str) -> None:
    dyn = dynamic_client(cluster.admin_kubeconfig)
    namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")

    namespaces.server_side_apply(
        body=builders.namespace(namespace),
        field_manager=FIELD_MANAGER,
    )
    deployments.server_side_apply(
        body=builders.deployment("web", "nginx:1.27", namespace), field_manager=FIELD_MANAGER
    )

    live = deployments.get(name="web", namespace=namespace).to_dict()
    assert live["spec"]["strategy"]["type"] == "RollingUpdate"
    assert live["spec"]["revisionHistoryLimit"] == 10
    assert live["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert FIELD_MANAGER in managers


def test_watch_sees_a_change(cluster: Cluster, namespace: str) -> None:
    dyn = dynamic_client(cluster.admin_kubeconfig)
    dyn.resources.get(api_version="v1", kind="Namespace").server_side_apply(
        body=builders.namespace(namespace),
        field_manager=FIELD_MANAGER,
    )
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    created = deployments.server_side_apply(
        body=builders.deployment("web", "nginx:1.27", namespace), field_manager=FIELD_MANAGER
    )

    wanted = ("MODIFIED", "nginx:1.28")
    seen: list[tuple[str, str]] = []
    apps = client.AppsV1Api(
        config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    )
    w = watch.Watch()

    def stream() -> None:
        # The deployment controller's own status updates arrive too; read past them.
        for event in w.stream(
            apps.list_namespaced_deployment,
            namespace,
            resource_version=created.metadata.resourceVersion,
            timeout_seconds=20,
        ):
            seen.append((event["type"], event["object"].spec.template.spec.containers[0].image))
            if seen[-1] == wanted:
                w.stop()

    watcher = threading.Thread(target=stream, daemon=True)
    watcher.start()
    deployments.server_side_apply(
        body=builders.deployment("web", "nginx:1.28", namespace), field_manager=FIELD_MANAGER
    )
    watcher.join(timeout=25)
    assert wanted in seen


def test_deleting_a_namespace_finishes(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(
        config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    )
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    core.delete_namespace(namespace)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    # Finalization (emptying the namespace, then removing it) is controller-manager's work.
    wait_for(gone, 60, f"namespace {namespace} to be finalized")


def test_prod_reconciler_identity_is_refused_writes_and_audited(clusters: ClusterSet) -> None:
    prod = clusters["prod"]
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(
        config.new_client_from_config(config_file=str(prod.reconciler_kubeconfig))
    )

    assert core.list_namespace().items, "prod's reconciler identity can read"
    with pytest.raises(ApiException) as refused:
        core.create_namespace({"metadata": {"name": marker}})
    assert refused.value.status == 403

    def audited() -> bool:
        return any(
            e.verb == "create" and e.resource == "namespaces" and e.code == 403
            for e in prod.requests_by(RECONCILER_USER)
        )

    wait_for(audited, 10, "the refused create to appear in prod's audit log")
    assert not any(e.is_write and e.code < 400 for e in prod.requests_by(RECONCILER_USER)), (
        "prod's reconciler identity never had a write accepted"
    )


@pytest.mark.parametrize("name", ["agentic", "monit"])
def test_apply_mode_reconciler_identity_can_write(clusters: ClusterSet, name: str) -> None:
    cluster = clusters[name]
    core = client.CoreV1Api(
        config.new_client_from_config(config_file=str(cluster.reconciler_kubeconfig))
    )
    ns = f"rw-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.delete_namespace(ns)
    assert any(
        e.verb == "create" and e.resource == "namespaces" and e.code == 201
        for e in cluster.requests_by(RECONCILER_USER)
    )


def test_client_trusting_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca", "not-the-cluster-ca")
    kubeconfig = tmp_path / "other.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.name, cluster.server, other.cert_file, "irrelevant")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.retries = 0
    core = client.CoreV1Api(api)

    with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
        core.list_namespace(_request_timeout=5)
    assert isinstance(refused.value.reason, urllib3.exceptions.SSLError)
    assert isinstance(refused.value.reason.args[0], ssl.SSLCertVerificationError)

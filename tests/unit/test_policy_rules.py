"""The shipped homelab policies judge objects as the seed's rules say: MCP servers
only on agentic, LoadBalancer IPs inside the cluster's network, no Argo CD
Application deploying into a cluster the reconciler applies to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import load_config
from reconciler.model import ObjectRef, Violation
from reconciler.policy import SHIPPED_POLICIES, load_policies
from tests.unit.policy_helpers import CLUSTERS, cluster, deployment, manifest, obj, shipped

REPO_ROOT = Path(__file__).resolve().parents[2]
MCP = "mcp-servers-only-on-agentic"
LB = "loadbalancer-ip-in-cluster-network"
DUAL = "argocd-application-dual-ownership"


def violations(cluster_name: str, *objects: dict[str, Any], live: bool = False) -> list[Violation]:
    policies = shipped()
    if live:
        return policies.evaluate(cluster_name, live=objects)
    return policies.evaluate(cluster_name, desired=[manifest(o) for o in objects])


def by(policy: str, found: list[Violation]) -> list[Violation]:
    return [v for v in found if v.policy == policy]


def test_shipped_policies_load_for_the_homelab_config() -> None:
    config = load_config(REPO_ROOT / "config.toml")
    policies = load_policies(SHIPPED_POLICIES, config.clusters)
    assert {p.name for p in policies.validating} == {MCP, LB, DUAL}
    assert policies.protections and policies.ignoring and policies.cluster_modes


# --- MCP servers belong only on agentic ---


def test_mcp_deployment_on_monit_is_reported_for_migration_to_agentic() -> None:
    [found] = violations("monit", deployment("grafana-mcp"))
    assert found.policy == MCP
    assert found.cluster == "monit" and found.source == "desired" and found.app == "demo"
    assert found.ref == ObjectRef("apps", "Deployment", "ai-platform", "grafana-mcp")
    assert "migrate to agentic" in found.message and "name grafana-mcp" in found.message


def test_the_same_mcp_deployment_on_agentic_is_not_reported() -> None:
    assert violations("agentic", deployment("grafana-mcp")) == []


def test_live_mcp_server_on_prod_is_reported_as_live_without_app() -> None:
    [found] = violations("prod", deployment("mcp-gateway"), live=True)
    assert (found.policy, found.source, found.app) == (MCP, "live", None)


@pytest.mark.parametrize(
    ("workload", "evidence"),
    [
        (deployment("tools", labels={"component": "mcp"}), "label component=mcp"),
        (
            deployment("tools", labels={"app.kubernetes.io/component": "mcp"}),
            "label app.kubernetes.io/component=mcp",
        ),
        (deployment("tools", image="mcp/grafana:latest"), "container server (mcp/grafana:latest)"),
        (deployment("tools", image="ghcr.io/x/Home-MCP:1"), "container server"),
    ],
)
def test_mcp_server_is_recognised_by_label_or_image(
    workload: dict[str, Any], evidence: str
) -> None:
    [found] = violations("monit", workload)
    assert found.policy == MCP and evidence in found.message


def test_mcp_cronjob_and_bare_pod_are_recognised() -> None:
    cron_pod = {"containers": [{"name": "mcp-server", "image": "python:3.14-slim"}]}
    cron = obj(
        "batch/v1",
        "CronJob",
        "nightly",
        "ai",
        {"jobTemplate": {"spec": {"template": {"spec": cron_pod}}}},
    )
    pod = obj("v1", "Pod", "media-mcp", "ai", {"containers": [{"name": "c", "image": "x"}]})
    found = violations("monit", cron, pod)
    assert {(v.ref.kind, v.ref.name) for v in by(MCP, found)} == {
        ("CronJob", "nightly"),
        ("Pod", "media-mcp"),
    }


@pytest.mark.parametrize(
    "workload",
    [
        # agentic's knowledge-reconcile: calls the MCP server, is not one.
        obj(
            "batch/v1",
            "CronJob",
            "knowledge-reconcile",
            "ai-platform",
            {
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": "reconcile", "image": "curlimages/curl:latest"}
                                ]
                            }
                        }
                    }
                }
            },
            labels={"app": "knowledge-mcp", "component": "reconcile"},
        ),
        # prod's route to agentic: a Service, not a workload.
        obj("v1", "Service", "mcp-config-sync-external", "apps", {"ports": [{"port": 80}]}),
        # "mcp" inside a longer word is not the word.
        deployment("smcpd"),
        # a Pod made by a ReplicaSet: its Deployment is the one reported.
        obj(
            "v1",
            "Pod",
            "infrastructure-mcp-7d9f",
            "ai",
            {"containers": [{"name": "mcp-server", "image": "x"}]},
            ownerReferences=[{"kind": "ReplicaSet", "name": "infrastructure-mcp-7d9f"}],
        ),
    ],
)
def test_objects_that_only_mention_mcp_are_not_mcp_servers(workload: dict[str, Any]) -> None:
    assert by(MCP, violations("monit", workload)) == []


# --- LoadBalancer IPs lie in the cluster's network ---


def service(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    o = obj(
        "v1", "Service", "traefik", "traefik", {"type": "LoadBalancer", **(spec or {})}, **metadata
    )
    if status is not None:
        o["status"] = status
    return o


MakeService = Callable[[str], dict[str, Any]]
# Every place a LoadBalancer IP is asked for or given, as a Service with that IP there.
LB_IP_FIELDS: dict[str, MakeService] = {
    "spec.loadBalancerIP": lambda ip: service({"loadBalancerIP": ip}),
    "metallb.universe.tf": lambda ip: service(
        annotations={"metallb.universe.tf/loadBalancerIPs": f"10.20.0.9, {ip}"}
    ),
    "metallb.io": lambda ip: service(annotations={"metallb.io/loadBalancerIPs": ip}),
    "kube-vip": lambda ip: service(annotations={"kube-vip.io/loadbalancerIPs": ip}),
    "cilium": lambda ip: service(annotations={"lbipam.cilium.io/ips": ip}),
    "status": lambda ip: service(status={"loadBalancer": {"ingress": [{"ip": ip}]}}),
}


@pytest.mark.parametrize("make", LB_IP_FIELDS.values(), ids=LB_IP_FIELDS.keys())
def test_loadbalancer_ip_outside_the_network_is_reported_and_inside_is_not(
    make: MakeService,
) -> None:
    [found] = violations("agentic", make("10.10.0.90"))
    assert found.policy == LB
    assert "10.10.0.90 is outside cluster agentic network 10.20.0.0/24" in found.message
    assert violations("agentic", make("10.20.0.90")) == []


def test_cilium_pool_label_is_not_read_as_an_ip() -> None:
    # agentic's Traefik: the label selects a Cilium IP pool by name.
    traefik = service({"loadBalancerIP": "10.20.0.90"}, labels={"io.cilium/lb-ipam-ips": "traefik"})
    assert violations("agentic", traefik) == []


def test_loadbalancer_value_that_is_no_ip_is_reported() -> None:
    [found] = violations("agentic", service(annotations={"metallb.io/loadBalancerIPs": "traefik"}))
    assert found.policy == LB and "traefik" in found.message


def test_other_services_and_clusters_without_network_are_not_checked() -> None:
    cluster_ip = obj(
        "v1", "Service", "web", "apps", {"type": "ClusterIP", "loadBalancerIP": "1.2.3.4"}
    )
    assert violations("agentic", cluster_ip) == []
    lab = (*CLUSTERS, cluster("lab", "apply", "https://10.99.0.1:6443", None))
    policies = load_policies(SHIPPED_POLICIES, lab)
    anywhere = service({"loadBalancerIP": "1.2.3.4"})
    assert policies.evaluate("lab", desired=[manifest(anywhere)]) == []


# --- Argo CD Applications must not deploy into apply-mode clusters ---


def application(destination: dict[str, str]) -> dict[str, Any]:
    spec = {"project": "default", "destination": {"namespace": "arc", **destination}}
    return obj("argoproj.io/v1alpha1", "Application", "arc-controller", "argocd", spec)


@pytest.mark.parametrize(
    "destination",
    [
        {"server": "https://10.20.0.40:6443"},
        {"server": "HTTPS://10.20.0.40:6443/"},
        {"name": "agentic"},
    ],
)
def test_prod_application_deploying_into_agentic_is_dual_ownership(
    destination: dict[str, str],
) -> None:
    [found] = violations("prod", application(destination))
    assert found.policy == DUAL and found.ref.name == "arc-controller"
    assert found.message.startswith(
        "dual ownership: Argo CD on prod deploys this Application into agentic"
    )


@pytest.mark.parametrize(
    "destination",
    [
        {"server": "https://kubernetes.default.svc"},
        {"name": "in-cluster"},
        {"server": "https://192.0.2.1:6443"},  # not a configured cluster: not ours
    ],
)
def test_prod_application_deploying_elsewhere_is_not_dual_ownership(
    destination: dict[str, str],
) -> None:
    assert violations("prod", application(destination)) == []


def test_applications_on_clusters_without_argocd_are_not_judged() -> None:
    assert violations("agentic", application({"server": "https://10.20.0.40:6443"})) == []


def test_live_application_on_prod_is_judged_too() -> None:
    [found] = violations("prod", application({"name": "monit"}), live=True)
    assert (found.policy, found.source) == (DUAL, "live")

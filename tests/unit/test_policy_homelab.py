"""The shipped policies over the real homelab repositories, rendered by the real
desired-state pipeline (git repos built from the fixtures; Helm apps offline, so
they fail and the rest render): the real MCP servers are recognised, nothing
else is, and prod's Applications into agentic are dual ownership."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import yaml

from reconciler.config import load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.model import Manifest, Origin, Violation, object_ref
from reconciler.policy import Policies
from testenv.gitrepos import FIXTURE_URLS, FIXTURES, fixture_files, make_upstream_and_clone
from tests.desired.conftest import chart_sources, fixture_applications, unused_port, write_config
from tests.unit.policy_helpers import shipped

MCP = "mcp-servers-only-on-agentic"
DUAL = "argocd-application-dual-ownership"
# An MCP server committed into monit's repo, in the path of its `gatus` app.
ADDED = "kubernetes/platform/gatus/grafana-mcp.yaml"
GRAFANA_MCP = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "grafana-mcp"},
    "spec": {
        "selector": {"matchLabels": {"app": "grafana-mcp"}},
        "template": {
            "metadata": {"labels": {"app": "grafana-mcp"}},
            "spec": {"containers": [{"name": "server", "image": "mcp/grafana:latest"}]},
        },
    },
}


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    base = tmp_path_factory.mktemp("policy-homelab")
    clones = {}
    for name in FIXTURE_URLS:
        files = fixture_files(name)
        if name == "monit_homelab":
            files[ADDED] = yaml.safe_dump(GRAFANA_MCP).encode()
        _, clones[name] = make_upstream_and_clone(base, name, files)
    charts = {s["repoURL"] for app in fixture_applications() for s in chart_sources(app)}
    config_file = write_config(
        base, clones, mirror=f"http://127.0.0.1:{unused_port()}", chart_urls=charts
    )
    config = load_config(config_file)
    return build_desired(config, open_sources(config), tools_for(config))


@pytest.fixture(scope="module")
def policies() -> Policies:
    # The test config has no networks; the policies get the homelab's clusters.
    return shipped()


def judge(
    policies: Policies, desired: Desired, cluster: str, as_cluster: str = ""
) -> list[Violation]:
    return policies.evaluate(as_cluster or cluster, desired.clusters[cluster].manifests)


def names(found: list[Violation], policy: str) -> set[str]:
    return {v.ref.name for v in found if v.policy == policy}


def test_mcp_deployment_in_monit_repo_is_reported_with_the_policy_name(
    policies: Policies, desired: Desired
) -> None:
    found = judge(policies, desired, "monit")
    # Everything else monit's repo holds (gatus probes of MCP URLs, alert rules
    # about MCP jobs) is left alone.
    assert [(v.policy, v.ref.kind, v.ref.name, v.app) for v in found] == [
        (MCP, "Deployment", "grafana-mcp", "gatus")
    ]
    assert "migrate to agentic" in found[0].message
    assert found[0].ref.namespace == "monitoring"


def test_agentic_repo_breaks_no_policy_on_agentic(policies: Policies, desired: Desired) -> None:
    assert desired.clusters["agentic"].manifests
    assert judge(policies, desired, "agentic") == []


def test_agentics_rendered_workloads_would_be_reported_only_for_mcp_config_sync(
    policies: Policies, desired: Desired
) -> None:
    # The real MCP servers now come from an unconfigured repo (domain-mcps); of what
    # renders, searxng and the knowledge-reconcile CronJob (labelled app: knowledge-mcp)
    # are no MCP servers.
    found = judge(policies, desired, "agentic", as_cluster="monit")
    rendered = {m.ref.name for m in desired.clusters["agentic"].manifests}
    assert {"searxng", "knowledge-reconcile"} <= rendered
    assert names(found, MCP) == {"mcp-config-sync"}


def test_agentics_mcp_server_files_are_recognised_object_by_object(policies: Policies) -> None:
    # Still in the repo though no longer rendered: each holds an MCP server and the
    # ServiceAccount, RBAC, ConfigMap and Service around it.
    directory = FIXTURES / "agentic_lab" / "kubernetes" / "applications" / "mcp-servers"
    docs = [
        d
        for f in ("infrastructure-mcp.yaml", "knowledge-mcp.yaml")
        for d in yaml.safe_load_all((directory / f).read_text(encoding="utf-8"))
        if d
    ]
    manifests = [
        Manifest(object_ref(d), d, Origin("agentic_lab", "", "mcp-servers", "")) for d in docs
    ]
    found = policies.evaluate("prod", manifests)
    assert len(docs) > 8
    assert [(v.ref.kind, v.ref.name) for v in found] == [
        ("Deployment", "infrastructure-mcp"),
        ("Deployment", "knowledge-mcp"),
    ]


def test_prod_applications_into_agentic_are_dual_ownership(
    policies: Policies, desired: Desired
) -> None:
    found = judge(policies, desired, "prod")
    assert {v.policy for v in found} == {DUAL}
    into_agentic = {
        doc["metadata"]["name"]
        for doc in fixture_applications()
        if _server(doc) == "https://10.20.0.40:6443"
    }
    rendered = {
        m.ref.name for m in desired.clusters["prod"].manifests if m.ref.kind == "Application"
    }
    # prod's own arc-* Applications and agentic_lab's, synced by agentic-applications.
    assert names(found, DUAL) == into_agentic & rendered
    assert {"arc-controller", "homepage-rbac-agentic"} <= names(found, DUAL)
    assert {v.app for v in found} == {"app-of-apps", "agentic-applications"}


def _server(doc: Mapping[str, object]) -> str:
    spec = doc["spec"]
    assert isinstance(spec, dict)
    return str(spec["destination"].get("server", ""))

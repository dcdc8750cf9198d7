"""A desired object that breaks a shipped policy is never created, by `reconciler sync`
or by the daemon; the violation is printed, logged, counted and kept as a finding of
its app, and the app's other objects are applied all the same.

The violations are those of the homelab: a LoadBalancer Service whose IP lies outside
agentic's network (configured as in config.toml) and an MCP server on monit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from testenv.clusters import RECONCILER_USER, Cluster
from tests.builders import deployment, yaml_file
from tests.faults.conftest import fault_lab  # noqa: F401 (the fault tests' lab, as a fixture)
from tests.faults.lab import Daemon, FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import Lab, live, no_canary
from tests.helpers_lab import reconciler_cli as cli

LB_POLICY = "loadbalancer-ip-in-cluster-network"
MCP_POLICY = "mcp-servers-only-on-agentic"
OUTSIDE = "10.10.0.90"  # prod's Traefik IP: outside agentic's 10.20.0.0/24


def with_agentic_network(config: Path) -> None:
    text = config.read_text()
    config.write_text(
        text.replace('name = "agentic"\n', 'name = "agentic"\nnetwork = "10.20.0.0/24"\n')
    )


def traefik(ip: str = OUTSIDE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "traefik"},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerIP": ip,
            "selector": {"app": "traefik"},
            "ports": [{"name": "websecure", "port": 443, "targetPort": 8443}],
        },
    }


def grafana_mcp() -> dict[str, Any]:
    return deployment("grafana-mcp", "mcp/grafana:1.0")


def exists(cluster: Cluster, path: str) -> bool:
    try:
        live(cluster, path)
    except OSError:
        return False
    return True


def writes_to(cluster: Cluster, fragment: str) -> list[str]:
    return [
        f"{e.verb} {e.uri}"
        for e in cluster.requests_by(RECONCILER_USER)
        if e.is_write and fragment in e.uri
    ]


def test_sync_refuses_violating_objects_prints_them_and_applies_the_rest(lab: Lab) -> None:
    agentic, monit = lab.clusters["agentic"], lab.clusters["monit"]
    ns_agentic, ns_monit = lab.namespaces["agentic"], lab.namespaces["monit"]
    with_agentic_network(lab.config)
    lab.commit(
        {
            "deploy/agentic/traefik.yaml": yaml_file(traefik()),
            "deploy/monit/grafana-mcp.yaml": yaml_file(grafana_mcp()),
        },
        "a LoadBalancer IP outside agentic's network, an MCP server on monit",
    )
    done = lab.run("sync")
    assert done.returncode == 1, done.stderr
    no_canary(done.stdout, done.stderr)
    violations = [line for line in done.stderr.splitlines() if line.startswith("policy violation")]
    assert any(
        f"Service {ns_agentic}/traefik (app web-agentic) [desired]: {LB_POLICY}: "
        f"LoadBalancer IP {OUTSIDE} is outside cluster agentic network 10.20.0.0/24" in line
        for line in violations
    ), done.stderr
    assert any(
        f"Deployment.apps {ns_monit}/grafana-mcp (app web-monit) [desired]: {MCP_POLICY}" in line
        for line in violations
    ), done.stderr
    failed = [line for line in done.stdout.splitlines() if ": failed (policy violation: " in line]
    assert len(failed) == 2, done.stdout
    assert f"agentic/web-agentic Service {ns_agentic}/traefik: failed (policy violation: " in (
        done.stdout
    )

    # Neither was created, nor even dry-run; the apps' other objects were applied.
    assert not exists(agentic, f"/api/v1/namespaces/{ns_agentic}/services/traefik")
    assert not exists(monit, f"/apis/apps/v1/namespaces/{ns_monit}/deployments/grafana-mcp")
    assert writes_to(agentic, "/services/traefik") == []
    assert writes_to(monit, "/deployments/grafana-mcp") == []
    for cluster, ns in ((agentic, ns_agentic), (monit, ns_monit)):
        assert exists(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        assert live(cluster, f"/api/v1/namespaces/{ns}/configmaps/settings")["data"]["mode"] == (
            "steady"
        )

    # status shows each violation as a finding of its app.
    shown = cli(lab.config, "status", "-o", "json")
    no_canary(shown.stdout)
    clusters = {c["name"]: c for c in yaml.safe_load(shown.stdout)["clusters"]}
    [app] = [a for a in clusters["agentic"]["apps"] if a["name"] == "web-agentic"]
    assert {"kind": "violation", "object": f"Service {ns_agentic}/traefik"}.items() <= (
        app["findings"][0].items()
    ), app
    assert app["findings"][0]["message"].startswith(f"{LB_POLICY}: LoadBalancer IP {OUTSIDE}")


def test_the_daemon_never_creates_a_violating_service_and_logs_counts_and_shows_it(
    fault_lab: FaultLab,  # noqa: F811 (the fixture imported above)
) -> None:
    agentic, ns = fault_lab.clusters["agentic"], fault_lab.namespaces["agentic"]
    fault_lab.write_config()
    with_agentic_network(fault_lab.config)
    daemon = Daemon(fault_lab, fault_lab.tmp / "daemon.log")  # with the config as edited
    fault_lab.daemons.append(daemon)
    daemon.wait_event("daemon.ready", 120)
    fault_lab.commit({"deploy/agentic/traefik.yaml": yaml_file(traefik())}, "traefik")

    failed = daemon.wait_event(
        "object", 60, cluster="agentic", object=f"Service {ns}/traefik", result="failed"
    )
    assert failed["reason"].startswith(f"policy violation: {LB_POLICY}: LoadBalancer IP {OUTSIDE}")
    finding = daemon.wait_event("app.finding", 30, cluster="agentic", kind="violation")
    assert finding["app"] == "web-agentic"
    assert finding["object"] == f"Service {ns}/traefik"
    done = [e for e in daemon.events("reconcile.done") if e.get("cluster") == "agentic"]
    assert any(e.get("failed") == 1 and e["result"] == "failed" for e in done), done
    assert daemon.metric("reconciler_policy_violations", cluster="agentic", policy=LB_POLICY) == 1

    # Resyncs keep refusing it; the app's other objects are there.
    resyncs = daemon.reconciles("agentic")
    wait_for(lambda: daemon.reconciles("agentic") > resyncs, 30, "a resync of agentic")
    assert not exists(agentic, f"/api/v1/namespaces/{ns}/services/traefik")
    assert writes_to(agentic, "/services/traefik") == []
    assert exists(agentic, f"/apis/apps/v1/namespaces/{ns}/deployments/web")

    # Fixed in git: the Service is created and the violation count drops to 0.
    fault_lab.commit({"deploy/agentic/traefik.yaml": yaml_file(traefik("10.20.0.90"))}, "fix")
    wait_for(
        lambda: exists(agentic, f"/api/v1/namespaces/{ns}/services/traefik"),
        60,
        "the fixed Service to be created",
    )
    wait_for(
        lambda: (
            daemon.metric("reconciler_policy_violations", cluster="agentic", policy=LB_POLICY) == 0
        ),
        30,
        "the violation gauge to drop to 0",
    )
    fault_lab.assert_prod_untouched()

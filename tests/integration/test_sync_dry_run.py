"""`reconciler sync --dry-run` on an apply-mode cluster: it says what the apply would
do (create, update, prune) and sends no write; a report-mode cluster stays refused.

Run as an operator runs it, on the tests' own GitOps lab (tests/helpers_lab.py); the
API servers' audit logs show what it sent.
"""

from __future__ import annotations

from tests.helpers_lab import Lab, kubectl, live, writes_by_reconciler


def test_a_dry_run_says_what_apply_would_do_and_writes_nothing(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    kubectl(agentic, "-n", ns, "scale", "deployment", "web", "--replicas=5")
    kubectl(agentic, "-n", ns, "delete", "secret", "token")
    lab.commit({"deploy/agentic/configmap.yaml": None}, "drop the configmap")
    before = len(writes_by_reconciler(agentic))

    dry = lab.run("sync", "--cluster", "agentic", "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert f"Deployment.apps {ns}/web: skipped (dry run: would update)" in dry.stdout
    assert f"Secret {ns}/token: skipped (dry run: would create)" in dry.stdout
    assert f"ConfigMap {ns}/settings: skipped (dry run: would prune)" in dry.stdout
    assert "report-only" not in dry.stdout + dry.stderr
    sent = writes_by_reconciler(agentic)[before:]
    assert all("dryRun=All" in w for w in sent), "\n".join(sent)
    assert live(agentic, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["replicas"] == 5
    assert live(agentic, f"/api/v1/namespaces/{ns}/configmaps/settings")


def test_a_dry_run_on_the_report_mode_cluster_is_refused_like_a_sync(lab: Lab) -> None:
    refused = lab.run("sync", "--cluster", "prod", "--dry-run")
    assert refused.returncode == 2
    assert "report-only" in refused.stderr
    assert writes_by_reconciler(lab.clusters["prod"]) == []

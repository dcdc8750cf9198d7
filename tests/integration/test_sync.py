"""`reconciler diff` and `reconciler sync` against the real test clusters.

The reconciler runs as a subprocess, as an operator runs it, on the tests' own
GitOps lab (tests/helpers_lab.py); the API servers' audit logs show what it sent.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error

import yaml

from tests.builders import namespace, yaml_file
from tests.helpers_cluster import create_crd, unique, wait_for
from tests.helpers_kubelet import RUNNER, Kubelet
from tests.helpers_lab import (
    Lab,
    app_files,
    drift_json,
    kubectl,
    live,
    no_canary,
    writes_by_reconciler,
)


def test_sync_creates_then_a_second_sync_sends_no_write(lab: Lab) -> None:
    first = lab.run("sync", "--cluster", "agentic")
    assert first.returncode == 0, first.stderr
    ns = lab.namespaces["agentic"]
    deployment = live(lab.clusters["agentic"], f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["metadata"]["labels"]["reconciler.kernow.io/app"] == "web-agentic"
    assert "created" in first.stdout

    before = len(writes_by_reconciler(lab.clusters["agentic"]))
    second = lab.run("sync", "--cluster", "agentic")
    assert second.returncode == 0, second.stderr
    assert "configured" not in second.stdout, second.stdout
    assert writes_by_reconciler(lab.clusters["agentic"])[before:] == [], "\n".join(
        writes_by_reconciler(lab.clusters["agentic"])[before:]
    )
    diff = lab.run("diff", "--cluster", "agentic")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    no_canary(first.stdout, first.stderr, second.stdout, diff.stdout, diff.stderr)


def test_each_kind_of_drift_is_reported_once_with_its_path(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    assert drift_json(lab, "agentic") == []

    kubectl(agentic, "-n", ns, "patch", "configmap", "settings", "-p", '{"data":{"mode":"edited"}}')
    kubectl(agentic, "-n", ns, "delete", "secret", "token")
    lab.commit(
        app_files("agentic", ns, replicas=2, extra_label=True, level=False),
        "two replicas and a new label; the configmap's level removed from git",
    )
    rows = drift_json(lab, "agentic")
    found = sorted(
        (r["ref"]["kind"], r["type"], tuple(c["path"] for c in r["changes"])) for r in rows
    )
    assert found == [
        ("ConfigMap", "changed", ("/data/level", "/data/mode")),
        ("Deployment", "changed", ("/metadata/labels/tier", "/spec/replicas")),
        ("Secret", "missing", ()),
    ]


def test_an_object_removed_from_git_is_extra_then_pruned_and_nothing_else(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    kubectl(agentic, "-n", ns, "create", "configmap", "made-by-hand", "--from-literal=a=b")
    lab.commit({"deploy/agentic/configmap.yaml": None}, "drop the configmap")

    rows = drift_json(lab, "agentic")
    assert [(r["ref"]["name"], r["type"]) for r in rows] == [("settings", "extra")]

    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 0, synced.stderr
    assert f"ConfigMap {ns}/settings: pruned" in synced.stdout
    names = {
        i["metadata"]["name"] for i in live(agentic, f"/api/v1/namespaces/{ns}/configmaps")["items"]
    }
    assert "settings" not in names
    assert "made-by-hand" in names, "an object the reconciler did not create stays"
    assert live(agentic, f"/apis/apps/v1/namespaces/{ns}/deployments/web")


def test_a_namespace_is_not_pruned_without_a_policy(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    extra_ns = unique("lab-extra")
    lab.commit({"deploy/agentic/namespace.yaml": yaml_file(namespace(extra_ns))}, "add ns")
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    assert live(agentic, f"/api/v1/namespaces/{extra_ns}")

    lab.commit({"deploy/agentic/namespace.yaml": None}, "remove ns")
    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 0, synced.stderr
    assert f"Namespace {extra_ns}: skipped (protected" in synced.stdout
    assert live(agentic, f"/api/v1/namespaces/{extra_ns}")["metadata"]["name"] == extra_ns
    assert live(agentic, f"/api/v1/namespaces/{ns}")
    agentic.request("DELETE", f"/api/v1/namespaces/{extra_ns}")


def test_a_manual_edit_is_reverted_by_sync(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    kubectl(agentic, "-n", ns, "scale", "deployment", "web", "--replicas=5")
    kubectl(agentic, "-n", ns, "patch", "configmap", "settings", "-p", '{"data":{"mode":"x"}}')

    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 0, synced.stderr
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert live(agentic, path)["spec"]["replicas"] == 1
    assert live(agentic, f"/api/v1/namespaces/{ns}/configmaps/settings")["data"] == {
        "mode": "steady",
        "level": "3",
    }
    assert drift_json(lab, "agentic") == []


def test_prod_is_only_reported_on_and_never_written(lab: Lab) -> None:
    prod = lab.clusters["prod"]
    refused = lab.run("sync", "--cluster", "prod")
    assert refused.returncode == 2
    assert "report-only" in refused.stderr

    # Argo CD's doing on prod, simulated by the admin: the object exists, then drifts.
    ns = lab.namespaces["prod"]
    kubectl(prod, "create", "namespace", ns)
    kubectl(
        prod,
        "-n",
        ns,
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=edited",
        "--from-literal=level=3",
    )
    done = lab.run("diff", "--cluster", "prod", "-o", "json")
    assert done.returncode == 1, done.stderr
    rows = {(r["ref"]["kind"], r["type"]): r for r in json.loads(done.stdout)}
    assert rows[("ConfigMap", "changed")]["changes"] == [
        {"path": "/data/mode", "desired": "steady", "live": "edited"}
    ]
    assert ("Deployment", "missing") in rows
    no_canary(done.stdout, done.stderr)
    assert writes_by_reconciler(prod) == []


def test_a_post_sync_hook_runs_after_the_sync_and_is_replaced_on_the_next(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "smoke",
            "annotations": {
                "argocd.argoproj.io/hook": "PostSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        },
        "spec": {
            "managedBy": RUNNER,  # completed by the test's Kubelet, as the sync awaits it
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "check", "image": "busybox:1.36"}],
                }
            },
        },
    }
    lab.commit({"deploy/agentic/hook.yaml": yaml.safe_dump(job).encode()}, "a PostSync hook")
    # PostSync waits for the Deployment to be available: the test plays its node.
    with Kubelet(agentic, ns).running():
        first = lab.run("sync", "--cluster", "agentic")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    hook_line = next(i for i, line in enumerate(lines) if "Job.batch" in line)
    deployment_line = next(i for i, line in enumerate(lines) if "Deployment.apps" in line)
    assert hook_line > deployment_line, "PostSync runs after the sync phase"
    uid = live(agentic, f"/apis/batch/v1/namespaces/{ns}/jobs/smoke")["metadata"]["uid"]

    lab.commit(app_files("agentic", ns, replicas=2), "a change, so the hook runs again")
    with Kubelet(agentic, ns).running():
        second = lab.run("sync", "--cluster", "agentic")
    assert second.returncode == 0, second.stderr
    new = live(agentic, f"/apis/batch/v1/namespaces/{ns}/jobs/smoke")["metadata"]["uid"]
    assert new != uid, "BeforeHookCreation deleted the previous run first"


def test_argo_cds_own_status_is_shown_beside_the_reconcilers_view_on_prod(lab: Lab) -> None:
    prod = lab.clusters["prod"]
    create_crd(prod, "argoproj.io", "Application")
    with contextlib.suppress(urllib.error.HTTPError):
        prod.request("POST", "/api/v1/namespaces", {"metadata": {"name": "argocd"}})
    application = {
        "apiVersion": "argoproj.io/v1",
        "kind": "Application",
        "metadata": {"name": "web-prod", "namespace": "argocd"},
        "spec": {},
        "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}},
    }

    def created() -> bool:
        try:
            prod.request("POST", "/apis/argoproj.io/v1/namespaces/argocd/applications", application)
        except urllib.error.HTTPError as exc:
            return exc.code == 409  # already there
        return True

    try:
        wait_for(created, 30, "the Application CRD to be served")
        done = lab.run("diff", "--cluster", "prod")
    finally:
        # The CRD is this test's alone: other tests see prod without Argo CD's kinds.
        prod.request(
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/applications.argoproj.io",
        )
    assert done.returncode == 1, done.stderr
    assert (
        "prod/web-prod: reconciler OutOfSync (3 drifted), Argo CD Synced/Healthy  <- they disagree"
        in done.stderr
    )

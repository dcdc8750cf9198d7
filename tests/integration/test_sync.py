"""`reconciler diff` and `reconciler sync` against the real test clusters.

A small GitOps repository of the tests' own (one Application per cluster) is
committed with pygit2; the reconciler runs as a subprocess, as an operator runs
it; the API servers' audit logs show what it sent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from testenv.clusters import RECONCILER_USER, Cluster, ClusterSet
from tests.helpers_cluster import unique
from tests.helpers_git import commit_files, make_upstream_and_clone, pull

CANARY = "canary-9f1c2e-do-not-print"
SERVERS = {
    "prod": "https://prod.test:6443",
    "agentic": "https://agentic.test:6443",
    "monit": "https://monit.test:6443",
}


def application(name: str, cluster: str, path: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.test/lab.git",
                "path": path,
                "targetRevision": "main",
            },
            "destination": {"server": SERVERS[cluster], "namespace": namespace},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    }


def manifests(
    namespace: str, replicas: int = 1, extra_label: bool = False, level: bool = True
) -> dict[str, bytes]:
    labels = {"app": "web", **({"tier": "front"} if extra_label else {})}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "steady", **({"level": "3"} if level else {})},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token"},
        "data": {"token": base64.b64encode(CANARY.encode()).decode()},
    }
    return {
        "deployment.yaml": yaml.safe_dump(deployment).encode(),
        "configmap.yaml": yaml.safe_dump(config_map).encode(),
        "secret.yaml": yaml.safe_dump(secret).encode(),
    }


@dataclass
class Lab:
    """The tests' GitOps repo, its operator clone, and a config for the test clusters."""

    upstream: pygit2.Repository
    clone: Path
    config: Path
    namespaces: dict[str, str]
    clusters: ClusterSet

    def commit(self, files: dict[str, bytes | None], message: str) -> None:
        commit_files(self.upstream, "refs/heads/main", files, message)
        pull(self.clone)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=300,
        )


def app_files(cluster: str, namespace: str, **kw: Any) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {
        f"apps/{cluster}.yaml": yaml.safe_dump(
            application(f"web-{cluster}", cluster, f"deploy/{cluster}", namespace)
        ).encode()
    }
    files.update({f"deploy/{cluster}/{k}": v for k, v in manifests(namespace, **kw).items()})
    return files


@pytest.fixture
def lab(clusters: ClusterSet, tmp_path: Path) -> Iterator[Lab]:
    namespaces = {name: unique(f"lab-{name}") for name in SERVERS}
    files: dict[str, bytes | None] = {}
    for cluster, namespace in namespaces.items():
        files.update(app_files(cluster, namespace))
    upstream_path, clone = make_upstream_and_clone(tmp_path, "lab", files)
    lines = [
        "[daemon]",
        f'state_dir = "{tmp_path / "state"}"',
        'metrics_address = ""',
        "[[repos]]",
        'name = "lab"',
        f'path = "{clone}"',
        'url = "https://git.test/lab.git"',
        'apps = ["apps"]',
    ]
    for c in clusters:
        lines += [
            "[[clusters]]",
            f'name = "{c.name}"',
            f'mode = "{"report" if c.report_only else "apply"}"',
            f"argocd = {'true' if c.report_only else 'false'}",
            f'kubeconfig = "{c.reconciler_kubeconfig}"',
            f'servers = ["{SERVERS[c.name]}"]',
        ]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    yield Lab(pygit2.Repository(str(upstream_path)), clone, config, namespaces, clusters)
    for c in clusters:
        with contextlib.suppress(urllib.error.HTTPError):
            c.request("DELETE", f"/api/v1/namespaces/{namespaces[c.name]}")


def writes_by_reconciler(cluster: Cluster) -> list[str]:
    return [f"{e.verb} {e.uri}" for e in cluster.requests_by(RECONCILER_USER) if e.is_write]


def live(cluster: Cluster, path: str) -> Any:
    return cluster.request("GET", path)


def no_canary(*outputs: str) -> None:
    for out in outputs:
        assert CANARY not in out
        assert base64.b64encode(CANARY.encode()).decode() not in out


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


def kubectl(cluster: Cluster, *args: str) -> str:
    """A person's manual change, made with the real kubectl as admin."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubectl"),
            "--kubeconfig",
            str(cluster.admin_kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def drift_json(lab: Lab, cluster: str) -> list[dict[str, Any]]:
    done = lab.run("diff", "--cluster", cluster, "-o", "json")
    assert done.returncode in (0, 1), done.stderr
    no_canary(done.stdout, done.stderr)
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


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
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra_ns}}
    lab.commit({"deploy/agentic/namespace.yaml": yaml.safe_dump(namespace).encode()}, "add ns")
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

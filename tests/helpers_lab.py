"""A small GitOps lab of the tests' own, wired to the real test clusters.

One Application per cluster, committed with pygit2 to an upstream repo and
pulled into an operator's clone; a config points the reconciler at the test
clusters with their reconciler identities. Shared by the CLI and daemon tests.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from testenv import config as configs
from testenv.clusters import RECONCILER_USER, Cluster, ClusterSet
from testenv.gitrepos import commit_files, pull
from tests.builders import config_map, deployment, secret, yaml_file

CANARY = "canary-9f1c2e-do-not-print"
SERVERS = {
    "prod": "https://prod.test:6443",
    "agentic": "https://agentic.test:6443",
    "monit": "https://monit.test:6443",
}


def application(name: str, cluster: str, path: str, namespace: str) -> dict[str, Any]:
    return configs.application(name, "https://git.test/lab.git", path, SERVERS[cluster], namespace)


def manifests(
    namespace: str, replicas: int = 1, extra_label: bool = False, level: bool = True
) -> dict[str, bytes]:
    labels = {"app": "web", **({"tier": "front"} if extra_label else {})}
    settings = {"mode": "steady", **({"level": "3"} if level else {})}
    return {
        "deployment.yaml": yaml_file(
            deployment("web", "nginx:1.27", labels=labels, replicas=replicas)
        ),
        "configmap.yaml": yaml_file(config_map("settings", settings)),
        "secret.yaml": yaml_file(secret("token", {"token": CANARY})),
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
        return reconciler_cli(self.config, *args)


def reconciler_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The reconciler CLI as an operator runs it: a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def app_files(cluster: str, namespace: str, **kw: Any) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {
        f"apps/{cluster}.yaml": yaml_file(
            application(f"web-{cluster}", cluster, f"deploy/{cluster}", namespace)
        )
    }
    files.update({f"deploy/{cluster}/{k}": v for k, v in manifests(namespace, **kw).items()})
    return files


def writes_by_reconciler(cluster: Cluster) -> list[str]:
    return [f"{e.verb} {e.uri}" for e in cluster.requests_by(RECONCILER_USER) if e.is_write]


def live(cluster: Cluster, path: str) -> Any:
    return cluster.request("GET", path)


def no_canary(*outputs: str) -> None:
    for out in outputs:
        assert CANARY not in out
        assert base64.b64encode(CANARY.encode()).decode() not in out


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

"""A GitOps lab for fault tests: two repositories, the three test clusters, and the
daemon as the homelab runs it (a subprocess), with the means to hurt each part.

Repo `lab` holds one app per cluster (`web-<cluster>`, as tests/helpers_lab.py
builds them); repo `side` holds one more app on monit (`side-monit`), so a fault
in one repository can be shown not to stop the other.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pygit2

from testenv import config as configs
from testenv.clusters import Cluster, ClusterSet
from testenv.gitrepos import commit_files, make_upstream_and_clone, pull
from tests.builders import config_map, yaml_file
from tests.helpers_cluster import wait_for
from tests.helpers_lab import SERVERS, app_files, application, writes_by_reconciler

SIDE_URL = "https://git.test/side.git"


def side_files(namespace: str, mode: str = "steady") -> dict[str, bytes | None]:
    app = application("side-monit", "monit", "deploy/side", namespace)
    app["spec"]["source"]["repoURL"] = SIDE_URL
    return {
        "apps/side.yaml": yaml_file(app),
        "deploy/side/configmap.yaml": yaml_file(config_map("side", {"mode": mode})),
    }


def config_maps(prefix: str, n: int, value: str = "1") -> dict[str, bytes | None]:
    """`n` ConfigMaps, one file each, for an app with many objects."""
    return {
        f"{prefix}/cm-{i:04d}.yaml": yaml_file(config_map(f"cm-{i:04d}", {"value": value}))
        for i in range(n)
    }


@dataclass
class Repo:
    name: str
    upstream: pygit2.Repository
    upstream_path: Path
    clone: Path

    def commit(self, files: dict[str, bytes | None], message: str, pull_clone: bool = True) -> str:
        oid = commit_files(self.upstream, "refs/heads/main", files, message)
        if pull_clone:
            pull(self.clone)
        return oid


@dataclass
class FaultLab:
    tmp: Path
    clusters: ClusterSet
    repos: dict[str, Repo]
    namespaces: dict[str, str]  # cluster -> namespace of web-<cluster>
    side_namespace: str
    render: dict[str, Any] = field(default_factory=dict)
    # More tables of the config, by name ("notify.matrix"), written as given.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    daemons: list[Daemon] = field(default_factory=list)
    # cluster -> the kubeconfig the daemon uses instead of the cluster's own (a proxy's)
    kubeconfigs: dict[str, Path] = field(default_factory=dict)
    # Writes on prod by the reconciler identity before this lab (the smoke test's
    # deliberate refused one, when that test ran earlier): not this lab's doing.
    prod_writes_before: int = 0

    @property
    def config(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def write_config(self) -> None:
        daemon = {
            "state_dir": self.state,
            "metrics_address": "127.0.0.1:0",
            "debounce_s": 0.2,
            "resync_interval_s": 5,
            "fetch_interval_s": 3600,
        }
        configs.write_config(
            self.config,
            [
                configs.Repo("lab", self.repos["lab"].clone, "https://git.test/lab.git"),
                configs.Repo("side", self.repos["side"].clone, SIDE_URL),
            ],
            [
                replace(t, kubeconfig=self.kubeconfigs.get(t.name, t.kubeconfig))
                for t in configs.targets(self.clusters, SERVERS)
            ],
            {"daemon": daemon, **({"render": self.render} if self.render else {}), **self.tables},
        )

    def commit(self, files: dict[str, bytes | None], message: str, repo: str = "lab") -> str:
        return self.repos[repo].commit(files, message)

    def start(self, name: str = "daemon", env: dict[str, str] | None = None) -> Daemon:
        self.write_config()
        daemon = Daemon(self, self.tmp / f"{name}.log", env)
        self.daemons.append(daemon)
        daemon.wait_event("daemon.ready", 120)
        return daemon

    def get(self, cluster: str, path: str) -> Any:
        return self.clusters[cluster].request("GET", path)

    def config_map(self, cluster: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.get(
                cluster, f"/api/v1/namespaces/{namespace}/configmaps/{name}"
            )
        except OSError:
            return None
        return found

    def edit(self, cluster: str, namespace: str, name: str, data: dict[str, str]) -> None:
        """A person's edit of a ConfigMap's data (as `kubectl edit` sends it), as admin."""
        _merge_patch(
            self.clusters[cluster],
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            {"data": data},
        )

    def config_maps(self, cluster: str, namespace: str, prefix: str = "cm-") -> dict[str, Any]:
        listing = self.get(cluster, f"/api/v1/namespaces/{namespace}/configmaps")
        return {
            i["metadata"]["name"]: i
            for i in listing["items"]
            if i["metadata"]["name"].startswith(prefix)
        }

    def assert_prod_untouched(self) -> None:
        assert writes_by_reconciler(self.clusters["prod"])[self.prod_writes_before :] == []

    def assert_side_reconciles(self, timeout: float, what: str) -> None:
        """monit, the cluster no fault touches, still reverts a live edit in time."""
        self.edit("monit", self.side_namespace, "side", {"mode": "edited"})
        wait_for(
            lambda: (
                (self.config_map("monit", self.side_namespace, "side") or {})["data"]["mode"]
                == "steady"
            ),
            timeout,
            what,
        )


def _merge_patch(
    cluster: Cluster, path: str, body: dict[str, Any], manager: str = "kubectl-edit"
) -> None:
    req = urllib.request.Request(
        cluster.server + path + f"?fieldManager={manager}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={
            "Authorization": f"Bearer {cluster.tokens['admin']}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    with urllib.request.urlopen(req, context=cluster.ssl_context(), timeout=10):
        pass


def build_lab(clusters: ClusterSet, tmp: Path, namespaces: dict[str, str], side: str) -> FaultLab:
    files: dict[str, bytes | None] = {}
    for cluster, ns in namespaces.items():
        files.update(app_files(cluster, ns))
    repos: dict[str, Repo] = {}
    for name, content in (("lab", files), ("side", side_files(side))):
        upstream_path, clone = make_upstream_and_clone(tmp, name, content)
        repos[name] = Repo(name, pygit2.Repository(str(upstream_path)), upstream_path, clone)
    lab = FaultLab(
        tmp,
        clusters,
        repos,
        namespaces,
        side,
        prod_writes_before=len(writes_by_reconciler(clusters["prod"])),
    )
    lab.write_config()
    return lab


class Daemon:
    """`reconciler run` as a subprocess, its JSON log, status and metrics."""

    def __init__(self, lab: FaultLab, log: Path, env: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.log_path = log
        self._log = log.open("a")
        self._offset = log.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "run", "--config", str(lab.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in found if event is None or e.get("event") == event]

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
            )
        return True

    def wait_event(self, event: str, timeout: float, **fields: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            self.alive()
            for e in self.events(event):
                if all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        wait_for(lambda: match() is not None, timeout, f"log event {event} {fields}")
        found = match()
        assert found is not None
        return found

    def reconciles(self, cluster: str) -> int:
        return sum(1 for e in self.events("reconcile.done") if e.get("cluster") == cluster)

    def status(self) -> dict[str, Any]:
        argv = [sys.executable, "-m", "reconciler.cli", "status", "-o", "json"]
        done = subprocess.run(
            [*argv, "--config", str(self.lab.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode in (0, 1), done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def app(self, cluster: str, app: str) -> dict[str, Any] | None:
        for c in self.status()["clusters"]:
            if c["name"] == cluster:
                return next((a for a in c["apps"] if a["name"] == app), None)
        return None

    def metric(self, name: str, **labels: str) -> float:
        serving = self.events("metrics.serving")[-1]
        with urllib.request.urlopen(f"http://{serving['address']}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._log.close()
        return code


def wait_ready(cluster: Cluster, timeout: float = 90) -> None:
    cluster.wait_ready(time.monotonic() + timeout)

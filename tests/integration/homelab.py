"""The three real homelab repositories against the real test clusters.

Helpers for the acceptance tests: real git repositories built from the fixture
trees (plus files the tests commit), a config that points each homelab cluster
at a test cluster, the desired state rendered by the library, and installing
that desired state with the real kubectl as the admin, the way Argo CD or an
operator would have put it there before the reconciler looks at it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.config import load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.model import GroupKind, Manifest
from testenv.clusters import RECONCILER_USER, Cluster
from testenv.config import Repo, Target, write_config
from testenv.gitrepos import (
    FIXTURE_URLS,
    FileContent,
    commit_files,
    fixture_files,
    make_upstream_and_clone,
    pull,
)
from tests.builders import namespace
from tests.helpers_lab import reconciler_cli

KUBECTL = Path(sys.executable).parent / "kubectl"
# The destination servers the fixture Applications use for each cluster (config.toml).
SERVERS = {
    "prod": "https://kubernetes.default.svc",
    "agentic": "https://10.20.0.40:6443",
    "monit": "https://10.10.0.30:6443",
}
REPO_OF = {"prod": "prod_homelab", "agentic": "agentic_lab", "monit": "monit_homelab"}
CRD = GroupKind("apiextensions.k8s.io", "CustomResourceDefinition")
NAMESPACE = GroupKind("", "Namespace")
# Objects that are left out when the fixtures are installed on the shared test
# clusters, because they would break those clusters for every other test:
# - an APIService points at a Service (metrics-server) that never runs here, so
#   the aggregated API stays unavailable and discovery of every client reports
#   an error for its group;
# - a webhook configuration sends every matching request of every test to a
#   Service that does not run, so those requests fail (failurePolicy Fail) or
#   wait for the timeout (Ignore).
# (The fixtures hold no webhook configuration today; the rule stands for when they do.)
HARMFUL = frozenset(
    {
        GroupKind("apiregistration.k8s.io", "APIService"),
        GroupKind("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        GroupKind("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    }
)
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class HomelabLab:
    """The three homelab repos (bare upstream + operator clone) and a config for them."""

    base: Path
    upstreams: dict[str, pygit2.Repository]
    clones: dict[str, Path]
    config: Path
    state_dir: Path

    def commit(self, repo: str, files: Mapping[str, FileContent], message: str) -> None:
        """Commit to the upstream and pull into the operator's clone."""
        commit_files(self.upstreams[repo], "refs/heads/main", files, message)
        pull(self.clones[repo])

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return reconciler_cli(self.config, *args)

    def render(self) -> Desired:
        """Desired state from the library: Secret values intact, so kubectl can apply them."""
        config = load_config(self.config)
        return build_desired(config, open_sources(config), tools_for(config))


def make_lab(
    base: Path,
    kubeconfigs: Mapping[str, Path],
    extra: Mapping[str, Mapping[str, FileContent]] | None = None,
) -> HomelabLab:
    """The fixture repos committed (with `extra` files per repo) and a config pointing
    prod (report-only, Argo CD), agentic and monit at `kubeconfigs`."""
    upstreams: dict[str, pygit2.Repository] = {}
    clones: dict[str, Path] = {}
    for name in FIXTURE_URLS:
        files: dict[str, FileContent] = dict(fixture_files(name))
        files.update((extra or {}).get(name, {}))
        upstream, clones[name] = make_upstream_and_clone(base, name, files)
        upstreams[name] = pygit2.Repository(str(upstream))
    state_dir = base / "state"
    config = write_config(
        base / "config.toml",
        [Repo(n, clones[n], url, "kubernetes/argocd-apps") for n, url in FIXTURE_URLS.items()],
        [Target(c, c == "prod", kubeconfigs[c], server) for c, server in SERVERS.items()],
        {
            # No kubelet here: the fixtures' hook Jobs (incident-db, velero, backrest) never
            # complete, so their syncs end at these bounds (with a finding), not at 300s.
            "daemon": {
                "state_dir": state_dir,
                "metrics_address": "",
                "wave_timeout_s": 3,
                "hook_timeout_s": 3,
            },
            "render": {"timeout_seconds": 60, "max_file_bytes": 8388608},
        },
    )
    return HomelabLab(base, upstreams, clones, config, state_dir)


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done


def served_kinds(cluster: Cluster) -> set[GroupKind]:
    """Every kind the API server serves now, from its (non-aggregated) discovery."""
    kinds: set[GroupKind] = set()
    paths = ["/api/v1"]
    groups = cluster.request("GET", "/apis")["groups"]
    paths += [f"/apis/{v['groupVersion']}" for g in groups for v in g["versions"]]
    for path in paths:
        group = path.split("/")[2] if path.startswith("/apis/") else ""
        for resource in cluster.request("GET", path)["resources"]:
            if "/" not in resource["name"]:
                kinds.add(GroupKind(group, resource["kind"]))
    return kinds


def _apply(kubeconfig: Path, objects: Sequence[Mapping[str, Any]]) -> None:
    """One `kubectl apply --server-side` of `objects` as the admin; every one must apply."""
    if not objects:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": list(objects)}, f)
        f.flush()
        kubectl(kubeconfig, "apply", "--server-side", "-f", f.name)


def install(cluster: Cluster, manifests: Iterable[Manifest]) -> list[Manifest]:
    """Apply what the cluster can hold of `manifests` with kubectl as the admin: the
    CRDs first (waited for until Established), then every namespace the objects
    need, then the rest whose kind is served. Returns what was applied."""
    wanted = [m for m in manifests if GroupKind(m.ref.group, m.ref.kind) not in HARMFUL]
    crds = [m for m in wanted if m.ref.group == CRD.group and m.ref.kind == CRD.kind]
    _apply(cluster.admin_kubeconfig, [m.obj for m in crds])
    if crds:
        names = [f"crd/{m.ref.name}" for m in crds]
        kubectl(
            cluster.admin_kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names
        )
    served = served_kinds(cluster)
    applied = [m for m in wanted if GroupKind(m.ref.group, m.ref.kind) in served]
    namespaces = [m for m in applied if m.ref.group == "" and m.ref.kind == "Namespace"]
    listed = {m.ref.name for m in namespaces}
    needed = sorted({m.ref.namespace for m in applied if m.ref.namespace} - listed)
    plain_ns: list[Mapping[str, Any]] = [namespace(n) for n in needed]
    _apply(cluster.admin_kubeconfig, [m.obj for m in namespaces] + plain_ns)
    rest = [m for m in applied if m not in crds and m not in namespaces]
    _apply(cluster.admin_kubeconfig, [m.obj for m in rest])
    return applied


def reconciler_writes(cluster: Cluster) -> list[str]:
    """The reconciler identity's write requests (dry-runs included), as audited."""
    return [
        f"{e.verb} {e.uri} -> {e.code}"
        for e in cluster.requests_by(RECONCILER_USER)
        if e.verb in WRITE_VERBS
    ]

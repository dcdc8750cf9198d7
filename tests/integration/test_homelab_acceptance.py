"""Acceptance of issues 4 and 5 with the three real homelab repositories.

The fixture trees are committed into real git repositories (with a few files of
the tests' own: a Secret holding a canary, later an MCP-named Deployment), the
reconciler CLI runs as a subprocess against real API servers, and the servers'
audit logs show what it sent.

- Drift (issue 4): every plain-path and kustomize object whose kind can exist is
  applied with `kubectl apply --server-side` as the admin (the repos' CRDs
  first), on the session's shared clusters; `reconciler diff` then finds no
  drift on any of them, and a second diff sends no dry-run.
- Sync (issue 5): on EMPTY clusters (a fresh agentic and monit started for this
  module, since the shared ones hold other tests' objects and, after the drift
  test, the fixtures), `reconciler sync` creates every object that can exist,
  a second sync writes nothing, removing files prunes exactly their objects
  (protected kinds and objects made by hand stay), and an MCP server committed
  to monit is reported with the policy's name.

Helm apps fail to render here (no network, no helm configured): that is the
expected render error of those apps, and the only error allowed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.desired import Desired
from reconciler.model import GroupKind, Manifest, ObjectRef
from testenv.clusters import Cluster, ClusterSet, running_clusters
from tests.integration.homelab import (
    HARMFUL,
    REPO_OF,
    HomelabLab,
    install,
    kubectl,
    make_lab,
    reconciler_writes,
    served_kinds,
)

CANARY = "canary-5d2e7a-homelab-never-print"
# A plain-path app of each cluster that takes the canary Secret (all use CreateNamespace
# or create the namespace themselves).
CANARY_AT = {
    "prod": ("kubernetes/applications/apps/homepage", "apps"),
    "agentic": ("kubernetes/platform/homepage-rbac", "homepage"),
    "monit": ("kubernetes/platform/beszel", "monitoring"),
}
# monit's `beszel` app (plain path, automated prune, only built-in kinds): the prune
# test removes its deployment.yaml and a Namespace of the test's own.
BESZEL = "kubernetes/platform/beszel"
EXTRA_NAMESPACE = "beszel-acceptance"
MCP_POLICY = "mcp-servers-only-on-agentic"


def canary_secret(namespace: str) -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "acceptance-canary", "namespace": namespace},
            "type": "Opaque",
            "data": {"token": base64.b64encode(CANARY.encode()).decode()},
            "stringData": {"password": f"{CANARY}-string"},
        }
    ).encode()


def extra_files() -> dict[str, dict[str, bytes | None]]:
    files: dict[str, dict[str, bytes | None]] = {}
    for cluster, (path, where) in CANARY_AT.items():
        files[REPO_OF[cluster]] = {f"{path}/acceptance-canary.yaml": canary_secret(where)}
    monit = files["monit_homelab"]
    namespace: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": EXTRA_NAMESPACE},
    }
    monit[f"{BESZEL}/acceptance-namespace.yaml"] = yaml.safe_dump(namespace).encode()
    # Enough objects that losing four (of eight) stays within the mass-deletion guard.
    settings = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"acceptance-{n}"}}
        for n in ("a", "b", "c")
    ]
    monit[f"{BESZEL}/acceptance-settings.yaml"] = yaml.safe_dump_all(settings).encode()
    return files


def no_canary(*texts: str | bytes) -> None:
    encoded = base64.b64encode(CANARY.encode()).decode()
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        assert CANARY.encode() not in raw, "the canary Secret value leaked"
        assert encoded.encode() not in raw, "the canary Secret value leaked (base64)"


def store_bytes(lab: HomelabLab) -> bytes:
    """The state store's bytes, its write-ahead log included."""
    return b"".join(p.read_bytes() for p in sorted(lab.state_dir.glob("state.db*")))


def render_errors(desired: Desired) -> set[str]:
    return {e.app for e in desired.errors}


# A hook or wave finding: the test clusters have no kubelet, so no hook Job completes.
NO_KUBELET = re.compile(r"^(agentic|monit)/app \S+ \S+ \S+: (hook|wave): ")


def check_stderr(stderr: str, failed_apps: set[str]) -> None:
    """Every stderr line is a policy violation, a hook or wave that cannot finish
    without a kubelet, or the render error of an expected app."""
    for line in stderr.splitlines():
        if line.startswith("policy violation: ") or NO_KUBELET.match(line):
            continue
        assert any(line.startswith(f"app {app} ") for app in failed_apps), line


def exists(cluster: Cluster, ref: ObjectRef, api_version: str) -> bool:
    done = kubectl(
        cluster.admin_kubeconfig,
        "get",
        f"{ref.kind}.{api_version.split('/')[0]}" if ref.group else ref.kind,
        ref.name,
        *(("-n", ref.namespace) if ref.namespace else ()),
        "-o",
        "name",
        check=False,
    )
    return done.returncode == 0


# -- issue 5: sync onto empty clusters ------------------------------------------------


@pytest.fixture(scope="module")
def empty_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """A fresh agentic and monit: the shared ones are not empty."""
    fresh = {"agentic": False, "monit": False}
    with running_clusters(tmp_path_factory.mktemp("fresh"), fresh) as clusters:
        yield clusters


def sync(lab: HomelabLab, failed_apps: set[str]) -> str:
    done = lab.run("sync")
    # 2: the Helm apps could not render; nothing else may go wrong.
    assert done.returncode == 2, done.stdout + done.stderr
    check_stderr(done.stderr, failed_apps)
    no_canary(done.stdout, done.stderr)
    return done.stdout


def failed_objects(stdout: str, cluster: str) -> set[str]:
    """The objects a sync reported as failed on `cluster` ("cluster/app REF: failed (...)")."""
    return {
        line.split(" ", 1)[1].split(": failed (", 1)[0]
        for line in stdout.splitlines()
        if line.startswith(f"{cluster}/") and ": failed (" in line
    }


def stopped_by(stdout: str, cluster: str) -> dict[str, str]:
    """The objects a sync left unapplied on `cluster` because an earlier write of their
    app was refused (Argo CD stops an app's sync there), each with what stopped it."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith(f"{cluster}/") and ": skipped (waiting: " in line:
            ref, why = line.split(" ", 1)[1].split(": skipped (waiting: ", 1)
            found[ref] = why.split(" not applied: ", 1)[1]
    return found


def can_exist(cluster: Cluster, manifests: Iterable[Manifest]) -> tuple[list[Manifest], set[str]]:
    """The manifests that can exist on `cluster` now (kind served, namespace present),
    and the others' refs: custom resources whose CRD no repo provides (InfisicalSecret
    ...) and objects in namespaces that git does not create (coroot's, made by Terraform)."""
    served = served_kinds(cluster) - HARMFUL
    namespaces = {
        n["metadata"]["name"] for n in cluster.request("GET", "/api/v1/namespaces")["items"]
    }
    able: list[Manifest] = []
    unable: set[str] = set()
    for m in manifests:
        ok = GroupKind(m.ref.group, m.ref.kind) in served
        ok = ok and (not m.ref.namespace or m.ref.namespace in namespaces)
        if ok:
            able.append(m)
        else:
            unable.add(str(m.ref))
    return able, unable


def test_sync_onto_empty_clusters_converges_prunes_and_reports_policies(
    empty_clusters: ClusterSet, clusters: ClusterSet, tmp_path: Path
) -> None:
    kubeconfigs = {c.name: c.reconciler_kubeconfig for c in empty_clusters}
    kubeconfigs["prod"] = clusters["prod"].reconciler_kubeconfig  # never opened by sync
    lab = make_lab(tmp_path, kubeconfigs, extra_files())
    desired = lab.render()
    failed_apps = render_errors(desired)

    first = sync(lab, failed_apps)
    for c in empty_clusters:
        expected, unable = can_exist(c, desired.clusters[c.name].manifests)
        assert failed_objects(first, c.name) <= unable, first
        assert len(expected) > 2 * len(unable), "most objects of the repos can exist"
        assert any(m.ref.kind == "CustomResourceDefinition" for m in expected) == (
            c.name == "agentic"
        ), "agentic's repo brings CRDs (ARC); their custom resources are expected too"
        # An app stops at a write the cluster refused (an object of `unable`): what
        # comes after it in the app's waves is left for the next sync, not created.
        stopped = stopped_by(first, c.name)
        failed = failed_objects(first, c.name)
        assert all(any(why.startswith(f) for f in failed) for why in stopped.values()), stopped
        absent = [
            str(m.ref)
            for m in expected
            if str(m.ref) not in stopped and not exists(c, m.ref, m.obj["apiVersion"])
        ]
        assert absent == [], f"{c.name}: not created by sync:\n" + "\n".join(absent)
        assert f"{c.name}: " in first

    before = {c.name: len(reconciler_writes(c)) for c in empty_clusters}
    second = sync(lab, failed_apps)
    for c in empty_clusters:
        new = reconciler_writes(c)[before[c.name] :]
        # Only the retry of what cannot exist yet: objects in a namespace git does not
        # create (refused, 404) are attempted again, as the namespace may appear.
        _, unable = can_exist(c, desired.clusters[c.name].manifests)
        retried = [w for w in new if w.endswith("-> 404")]
        assert len(retried) == len(failed_objects(first, c.name) - _unserved(c, unable)), new
        assert [w for w in new if w not in retried] == [], (
            f"{c.name}: a second sync wrote:\n" + "\n".join(new)
        )
    assert "created" not in second and "configured" not in second, second

    # Prune: beszel's Deployment, Service and PVC go from git, and the test's Namespace.
    monit = empty_clusters["monit"]
    kubectl(
        monit.admin_kubeconfig,
        "-n",
        "monitoring",
        "create",
        "configmap",
        "made-by-hand",
        "--from-literal=a=b",
    )
    lab.commit(
        "monit_homelab",
        {f"{BESZEL}/deployment.yaml": None, f"{BESZEL}/acceptance-namespace.yaml": None},
        "beszel: drop the server and the test namespace",
    )
    pruned = sync(lab, failed_apps)
    lines = [line for line in pruned.splitlines() if line.startswith("monit/beszel ")]
    assert sorted(lines) == sorted(
        [
            "monit/beszel Deployment.apps monitoring/beszel: pruned",
            "monit/beszel Service monitoring/beszel: pruned",
            "monit/beszel PersistentVolumeClaim monitoring/beszel-data: skipped (protected: "
            + lines_reason(lines, "PersistentVolumeClaim"),
            f"monit/beszel Namespace {EXTRA_NAMESPACE}: skipped (protected: "
            + lines_reason(lines, "Namespace"),
        ]
    ), pruned
    assert not exists(monit, ObjectRef("apps", "Deployment", "monitoring", "beszel"), "apps/v1")
    assert not exists(monit, ObjectRef("", "Service", "monitoring", "beszel"), "v1")
    for kept in (
        ObjectRef("", "ConfigMap", "monitoring", "made-by-hand"),
        ObjectRef("", "ConfigMap", "monitoring", "acceptance-a"),
        ObjectRef("", "PersistentVolumeClaim", "monitoring", "beszel-data"),
        ObjectRef("", "Namespace", "", EXTRA_NAMESPACE),
        ObjectRef("apps", "DaemonSet", "monitoring", "pulse-agent"),
    ):
        assert exists(monit, kept, "apps/v1" if kept.group else "v1"), f"{kept} was pruned"
    deletes = [w for w in reconciler_writes(monit) if w.startswith("delete ")]
    assert len(deletes) == 2, deletes

    # An MCP server committed to monit is reported with the policy's name.
    mcp = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "grafana-mcp", "namespace": "monitoring"},
        "spec": {
            "selector": {"matchLabels": {"app": "grafana-mcp"}},
            "template": {
                "metadata": {"labels": {"app": "grafana-mcp"}},
                "spec": {"containers": [{"name": "server", "image": "mcp/grafana:1.0"}]},
            },
        },
    }
    lab.commit(
        "monit_homelab",
        {"kubernetes/applications/grafana-image-renderer/mcp.yaml": yaml.safe_dump(mcp).encode()},
        "an MCP server on monit",
    )
    reported = lab.run("diff", "--cluster", "monit")
    assert reported.returncode == 2, reported.stderr  # Helm apps' render errors
    violations = [line for line in reported.stderr.splitlines() if "grafana-mcp" in line]
    assert violations and all(MCP_POLICY in line for line in violations), reported.stderr
    assert "migrate to agentic" in violations[0]
    no_canary(reported.stdout, reported.stderr, store_bytes(lab))


def _unserved(cluster: Cluster, refs: set[str]) -> set[str]:
    """Those of `refs` (as printed) whose kind the cluster does not serve."""
    served = {f"{gk.kind}.{gk.group}" if gk.group else gk.kind for gk in served_kinds(cluster)}
    return {r for r in refs if r.split(" ", 1)[0] not in served}


def lines_reason(lines: list[str], kind: str) -> str:
    """The protection reason printed for `kind` (its wording is the policy's)."""
    found = [line for line in lines if f" {kind} " in line and "(protected: " in line]
    assert len(found) == 1, lines
    return found[0].split("(protected: ", 1)[1]


# -- issue 4: no false drift on the applied fixtures ------------------------------------


@pytest.fixture
def homelab_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """Three clusters of this test's own: the fixtures' CRDs (some with conversion
    webhooks nobody serves here) would otherwise stay behind in the shared ones and
    stall every later namespace deletion there."""
    with running_clusters(tmp_path_factory.mktemp("homelab")) as clusters:
        yield clusters


def test_applied_fixtures_show_no_drift_and_a_second_diff_sends_no_dry_run(
    homelab_clusters: ClusterSet, tmp_path: Path
) -> None:
    clusters = homelab_clusters
    lab = make_lab(tmp_path, {c.name: c.reconciler_kubeconfig for c in clusters}, extra_files())
    desired = lab.render()
    failed_apps = render_errors(desired)
    applied: dict[str, set[ObjectRef]] = {}
    for c in clusters:
        applied[c.name] = {m.ref for m in install(c, desired.clusters[c.name].manifests)}
        assert applied[c.name], c.name
    assert any(r.kind == "CustomResourceDefinition" for r in applied["agentic"])
    assert any(r.group == "actions.github.com" for r in applied["agentic"]), "ARC CRs applied"

    before = {c.name: len(reconciler_writes(c)) for c in clusters}
    first = lab.run("diff", "-o", "json")
    assert first.returncode == 2, first.stderr  # the Helm apps' render errors, nothing else
    check_stderr(first.stderr, failed_apps)
    rows: list[dict[str, Any]] = json.loads(first.stdout)
    drifted = {
        (row["cluster"], ObjectRef(_group(row), row["ref"]["kind"], *_where(row))): row
        for row in rows
    }
    false_drift = [
        json.dumps(row) for (cluster, ref), row in drifted.items() if ref in applied[cluster]
    ]
    assert false_drift == [], "\n".join(false_drift)
    # What is left is real: objects whose kind is not served, or left out on purpose.
    for row in drifted.values():
        assert row["type"] == "missing", row
    unapplied = {
        (name, m.ref)
        for name, cd in desired.clusters.items()
        for m in cd.manifests
        if m.ref not in applied[name]
    }
    assert set(drifted) == unapplied
    for c in clusters:
        dry_runs = [w for w in reconciler_writes(c)[before[c.name] :] if "dryRun=All" in w]
        if c.report_only:
            assert reconciler_writes(c)[before[c.name] :] == []
        else:
            assert dry_runs, f"{c.name}: the first diff compared through server-side dry-runs"

    before = {c.name: len(reconciler_writes(c)) for c in clusters}
    second = lab.run("diff", "-o", "json")
    assert second.returncode == 2, second.stderr
    assert json.loads(second.stdout) == rows
    for c in clusters:
        new = reconciler_writes(c)[before[c.name] :]
        assert new == [], f"{c.name}: the second diff sent:\n" + "\n".join(new)
    no_canary(first.stdout, first.stderr, second.stdout, second.stderr, store_bytes(lab))
    # The canary Secret is really there, so its absence from the outputs means something.
    secret = clusters["monit"].request(
        "GET", "/api/v1/namespaces/monitoring/secrets/acceptance-canary"
    )
    assert base64.b64decode(secret["data"]["token"]).decode() == CANARY


def _group(row: dict[str, Any]) -> str:
    api_version = str(row["ref"]["apiVersion"])
    return api_version.split("/")[0] if "/" in api_version else ""


def _where(row: dict[str, Any]) -> tuple[str, str]:
    return str(row["ref"].get("namespace") or ""), str(row["ref"]["name"])

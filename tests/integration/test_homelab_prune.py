"""Acceptance of issue 13's prune guard with the owner's real monit repository.

The fixture tree is committed into a real git repository, `reconciler sync` runs as a
subprocess against a fresh monit API server, and its audit log shows every delete:
- removing beszel's Deployment and Service from git (its PVC kept) prunes exactly
  those two objects, as Argo CD would;
- an Application removed from git deletes its objects when it had Argo CD's resources
  finalizer, and orphans them (listed in `status`) when it had not; a YAML error in
  an Application file deletes nothing;
- a commit that takes most of the cluster's objects out of git is held, each app with
  a `prune-blocked` finding, and carried out app by app after
  `reconciler sync --app A --prune`.

The test cluster has no kubelet and no storage provisioner: a Deployment never becomes
healthy, and the tests bind beszel's PVC to a volume of their own, as a provisioner
would, so the waits for health (issue 13's waves) do not stand in for the guard.
Hooks never complete here: the lab bounds their waits short, and the apps with
hooks are left out of the mass deletion.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.health import object_health
from reconciler.model import Manifest
from testenv.clusters import RECONCILER_USER, Cluster, ClusterSet, running_clusters
from testenv.gitrepos import fixture_files
from tests.helpers_cluster import wait_for
from tests.integration.homelab import HomelabLab, kubectl, make_lab

MONIT = "monit_homelab"
APPS = "kubernetes/argocd-apps/platform"
BESZEL = "kubernetes/platform/beszel/deployment.yaml"
FINALIZER = "resources-finalizer.argocd.argoproj.io"
HOOKS = ("argocd.argoproj.io/hook", "helm.sh/hook")


@pytest.fixture
def fresh_monit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An empty monit: the shared one holds other tests' objects."""
    with running_clusters(tmp_path_factory.mktemp("fresh"), {"monit": False}) as clusters:
        yield clusters["monit"]


def sync(lab: HomelabLab, *args: str) -> str:
    done = lab.run("sync", *(args or ("--cluster", "monit")))
    # 2: the Helm apps cannot render here (no network): the only errors expected.
    assert done.returncode in (0, 2), done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def findings(lab: HomelabLab, kind: str) -> list[dict[str, Any]]:
    done = lab.run("status", "-o", "json")
    (monit,) = [c for c in json.loads(done.stdout)["clusters"] if c["name"] == "monit"]
    return [f for f in monit["findings"] if f["kind"] == kind]


def deletes(cluster: Cluster, hooks: set[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The reconciler's deletes (resource, namespace, name), hook objects' excepted: a
    hook is deleted before it runs again (BeforeHookCreation), which is no prune."""
    found = [
        (e.resource or "", e.namespace or "", e.name or "")
        for e in cluster.requests_by(RECONCILER_USER)
        if e.verb == "delete"
    ]
    return [d for d in found if d not in hooks]


def key(m: Manifest) -> tuple[str, str, str]:
    return (m.ref.kind.lower() + "s", m.ref.namespace, m.ref.name)


def bind(cluster: Cluster, namespace: str, claim: str) -> None:
    """Bind a claim to a volume made for it, as a provisioner would."""
    live = cluster.request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": live["spec"]["resources"]["requests"]["storage"]},
            "accessModes": live["spec"]["accessModes"],
            "storageClassName": live["spec"].get("storageClassName") or "",
            "hostPath": {"path": f"/srv/{claim}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    cluster.request("POST", "/api/v1/persistentvolumes", volume)

    def bound() -> bool:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
        return bool(cluster.request("GET", path).get("status", {}).get("phase") == "Bound")

    wait_for(bound, 60, f"claim {namespace}/{claim} bound")


def edited_application(name: str, change: Mapping[str, Any]) -> bytes:
    path = f"{APPS}/{name}-app.yaml"
    (doc,) = [d for d in yaml.safe_load_all(fixture_files(MONIT)[path]) if d]
    doc["metadata"].update(change)
    return yaml.safe_dump(doc).encode()


def test_owner_repo_prunes_as_argo_cd_would_and_holds_a_mass_deletion(
    fresh_monit: Cluster, clusters: ClusterSet, tmp_path: Path
) -> None:
    monit = fresh_monit
    kubeconfigs = {c.name: c.reconciler_kubeconfig for c in clusters}
    kubeconfigs["monit"] = monit.reconciler_kubeconfig
    lab = make_lab(tmp_path, kubeconfigs)
    desired = lab.render().clusters["monit"]
    hooks = {key(m) for m in desired.manifests if set(HOOKS) & set(_annotations(m.obj))}

    sync(lab)
    bind(monit, "monitoring", "beszel-data")
    assert deletes(monit, hooks) == []

    # -- beszel: the Deployment and the Service leave git, the PVC stays ---------------
    pvc = next(d for d in yaml.safe_load_all(fixture_files(MONIT)[BESZEL]) if d)
    assert pvc["kind"] == "PersistentVolumeClaim"
    lab.commit(MONIT, {BESZEL: yaml.safe_dump(pvc).encode()}, "beszel: server removed")
    out = sync(lab)
    assert "monit/beszel Deployment.apps monitoring/beszel: pruned" in out, out
    assert "monit/beszel Service monitoring/beszel: pruned" in out, out
    assert sorted(deletes(monit, hooks)) == [
        ("deployments", "monitoring", "beszel"),
        ("services", "monitoring", "beszel"),
    ]
    assert findings(lab, "prune-blocked") == []

    # -- a YAML error in an Application file deletes nothing ------------------------------
    before = len(deletes(monit, hooks))
    pulse_app = f"{APPS}/pulse-app.yaml"
    lab.commit(MONIT, {pulse_app: b"metadata: [unclosed\n"}, "a YAML error")
    sync(lab)
    assert len(deletes(monit, hooks)) == before, "a YAML error in an Application pruned"
    assert findings(lab, "orphaned") == []
    lab.commit(MONIT, {pulse_app: fixture_files(MONIT)[pulse_app]}, "fixed")
    sync(lab)

    # -- most of the cluster leaves git at once: held, then confirmed app by app ------------
    trimmed, removed = trim_to_one_object(monit, desired.manifests, skip={"beszel"})
    lab.commit(MONIT, trimmed, "most objects removed")
    held = sync(lab)
    assert len(deletes(monit, hooks)) == before, "the mass deletion was held"
    waiting = {
        line.split(" ", 1)[1].split(": skipped", 1)[0]
        for line in held.splitlines()
        if ": skipped (prune blocked: mass-deletion guard" in line
    }
    assert waiting <= {str(m.ref) for m in removed}
    assert sum("of the cluster's" in line for line in held.splitlines()) > 10, held
    blocked = findings(lab, "prune-blocked")
    assert {f["app"] for f in blocked} == {m.origin.app for m in removed if str(m.ref) in waiting}
    for finding in blocked:
        assert finding["message"].endswith(
            f"confirm with `reconciler sync --app {finding['app']} --prune`"
        )
        sync(lab, "--app", finding["app"], "--prune")
    sync(lab)
    gone = Counter((ns, name) for _, ns, name in deletes(monit, hooks)[before:])
    assert gone == Counter(_where(ref) for ref in waiting)
    assert findings(lab, "prune-blocked") == []

    # -- Applications removed from git ----------------------------------------------------
    tugtainer = f"{APPS}/tugtainer-app.yaml"
    with_finalizer = edited_application("tugtainer", {"finalizers": [FINALIZER]})
    lab.commit(MONIT, {tugtainer: with_finalizer}, "tugtainer: the resources finalizer")
    sync(lab)
    before = len(deletes(monit, hooks))
    removal = {tugtainer: None, f"{APPS}/gatus-app.yaml": None}
    lab.commit(MONIT, removal, "tugtainer (finalizer) and gatus (none) removed")
    sync(lab)
    # What the trim left of tugtainer: its Service, and its PVC that protection keeps.
    assert deletes(monit, hooks)[before:] == [("services", "monitoring", "tugtainer")]
    orphaned = {(f["app"], f["object"]) for f in findings(lab, "orphaned")}
    assert orphaned == {
        ("gatus", "ConfigMap monitoring/gatus-config"),
        ("gatus", "PersistentVolumeClaim monitoring/gatus-data"),
        ("tugtainer", "PersistentVolumeClaim monitoring/tugtainer-data"),
    }
    messages = {f["app"]: f["message"] for f in findings(lab, "orphaned")}
    assert "without the resources finalizer" in messages["gatus"]
    assert "protected" in messages["tugtainer"]


def trim_to_one_object(
    cluster: Cluster, manifests: tuple[Manifest, ...], skip: set[str]
) -> tuple[dict[str, bytes | None], list[Manifest]]:
    """A commit leaving each app of monit that has no hooks one object, and what it
    removes. The one kept is healthy live (else an Ingress, given the address its
    controller would report), so that no wait for health stands in for the guard."""
    files = fixture_files(MONIT)
    by_app: dict[str, list[Manifest]] = {}
    for m in manifests:
        if m.origin.app not in skip:
            by_app.setdefault(m.origin.app, []).append(m)
    commit: dict[str, bytes | None] = {}
    removed: list[Manifest] = []
    for members in by_app.values():
        if any(set(HOOKS) & set(_annotations(m.obj)) for m in members) or len(members) < 2:
            continue
        live = {m.ref: obj for m in members if (obj := _live(cluster, m)) is not None}
        healthy = [m for m in members if m.ref in live and object_health(live[m.ref]) == "Healthy"]
        ingress = [m for m in members if m.ref.kind == "Ingress" and m.ref in live]
        if not healthy and not ingress:
            continue
        keep = (healthy or ingress)[0]
        if not healthy:
            _load_balanced(cluster, keep)
        commit.update(_without_all_but(files, members, keep))
        removed += [m for m in members if m is not keep]
    return commit, removed


def _without_all_but(
    files: Mapping[str, bytes], members: list[Manifest], keep: Manifest
) -> dict[str, bytes | None]:
    """The app's files with only `keep` left; a kustomization lists what still holds it."""
    base = members[0].origin.path
    kustomization = f"{base}/kustomization.yaml"
    paths = (
        [p for p in files if p.startswith(f"{base}/") and p != kustomization]
        if kustomization in files
        else sorted({m.origin.path for m in members})
    )
    out: dict[str, bytes | None] = {}
    for path in paths:
        docs = [d for d in yaml.safe_load_all(files[path]) if d]
        kept = [d for d in docs if d.get("kind") == keep.ref.kind and _name(d) == keep.ref.name]
        out[path] = yaml.safe_dump_all(kept).encode() if kept else None
    if kustomization in files:
        doc = yaml.safe_load(files[kustomization])
        doc["resources"] = [r for r in doc["resources"] if out.get(f"{base}/{r}") is not None]
        out[kustomization] = yaml.safe_dump(doc).encode()
    return out


def _live(cluster: Cluster, m: Manifest) -> dict[str, Any] | None:
    kind = f"{m.ref.kind}.{m.ref.group}" if m.ref.group else m.ref.kind
    where = ("-n", m.ref.namespace) if m.ref.namespace else ()
    done = kubectl(
        cluster.admin_kubeconfig, "get", kind, m.ref.name, *where, "-o", "json", check=False
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def _load_balanced(cluster: Cluster, m: Manifest) -> None:
    """The address an ingress controller reports, written through the status subresource."""
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "10.10.0.30"}]}}}
    kubectl(
        cluster.admin_kubeconfig,
        "patch",
        "ingress.networking.k8s.io",
        m.ref.name,
        "-n",
        m.ref.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def _name(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata", {}).get("annotations") or {}


def _where(ref: str) -> tuple[str, str]:
    """(namespace, name) of a printed ref ("Deployment.apps ns/name" or "Kind name")."""
    _, _, where = ref.partition(" ")
    namespace, _, name = where.rpartition("/")
    return namespace, name

"""In-sync verdicts (what spares an object a dry-run on the next start) are kept only
for objects the cluster still desires: one removed from git leaves no row behind, so
the state does not grow with every object that ever passed through it."""

from __future__ import annotations

from pathlib import Path

from reconciler.store import Store
from tests.helpers_lab import Lab


def remembered(lab: Lab, cluster: str) -> set[str]:
    """`Kind/name` of the lab namespace's objects with an in-sync verdict on `cluster`."""
    store = Store(lab.config.parent / "state" / "state.db", readonly=True)
    try:
        namespace = lab.namespaces[cluster]
        return {f"{r.kind}/{r.name}" for r in store.in_sync(cluster) if r.namespace == namespace}
    finally:
        store.close()


def test_an_object_removed_from_git_loses_its_in_sync_verdict(lab: Lab, tmp_path: Path) -> None:
    done = lab.run("sync", "--cluster", "agentic")
    assert done.returncode == 0, done.stderr
    before = remembered(lab, "agentic")
    assert {"ConfigMap/settings", "Deployment/web", "Secret/token"} <= before

    lab.commit({"deploy/agentic/configmap.yaml": None}, "settings leave git")
    done = lab.run("sync", "--cluster", "agentic")
    assert done.returncode == 0, done.stderr
    assert remembered(lab, "agentic") == before - {"ConfigMap/settings"}
